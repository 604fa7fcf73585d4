"""One of the two processes of the multi-process test (tests/test_distributed.py).

Run as ``python tests/_distributed_worker.py PROCESS_ID PORT OUT_DIR`` with ``JAX_PLATFORMS=cpu``,
once with ``PROCESS_ID`` 0 and once with 1. Each process joins a two-process JAX cluster
(coordinator on ``127.0.0.1:PORT``, CPU collectives over gloo), with ``LOCAL_DEVICES`` CPU devices
each, runs the sharded computations over all the cluster's devices and writes what it got to
``OUT_DIR/process_<id>.npz``.

:func:`problem` is shared with the test, which computes the single-process results from it.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

#: CPU devices per process (so the cluster has 2 * LOCAL_DEVICES devices).
LOCAL_DEVICES = 2
#: Spins of the enumerated model: 2^20 states, several chunks per device.
N_ENUM = 20
#: Chains, steps, thinning and compiled chunks of the MCMC run.
N_SPINS, NUM_CHAINS, NUM_STEPS, THIN, NUM_CHUNKS = 12, 8, 12, 2, 2

#: Exit status of a worker that found no gloo CPU collectives in this jaxlib.
NO_GLOO = 3


def problem():
    """The model and chains both the workers and the single-process reference use."""
    from jaxebm import ising, mcmc

    enum_params = ising.sherrington_kirkpatrick(jax.random.key(0), N_ENUM, beta=1.2, field_std=0.3)
    chain_params = ising.sherrington_kirkpatrick(jax.random.key(1), N_SPINS, beta=1.5, field_std=0.2)
    algorithm = mcmc.metropolis(chain_params)
    x0 = np.where(np.random.default_rng(2).random((NUM_CHAINS, N_SPINS)) < 0.5, -1.0, 1.0).astype(np.float32)
    return enum_params, algorithm, x0, jax.random.key(3)


def trace_fn(state, info):
    """Records the spins (module-level, so run_chains' compile cache sees one object)."""
    return state.x


def main(process_id: int, port: int, out_dir: str) -> None:
    try:
        from jax._src.lib import _jax

        if not hasattr(_jax, "make_gloo_tcp_collectives"):
            raise RuntimeError("this jaxlib has no make_gloo_tcp_collectives")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception as e:  # noqa: BLE001 - any failure here means no gloo
        print(f"GLOO-UNAVAILABLE: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(NO_GLOO)
    jax.config.update("jax_num_cpu_devices", LOCAL_DEVICES)
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=process_id, initialization_timeout=60)
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from jaxebm import ising, mcmc

    devices = jax.devices()  # both processes' devices, in the same order on each
    assert jax.process_count() == 2 and len(devices) == 2 * LOCAL_DEVICES, devices
    assert len(jax.local_devices()) == LOCAL_DEVICES
    enum_params, algorithm, x0, key = problem()
    out = {}

    # Enumeration: every process passes the same (host-identical) params; the chunk range is
    # sharded over all four devices and the partial folds meet in a psum over gloo.
    log_z = ising.log_partition(enum_params, devices=devices)
    assert log_z.sharding.device_set == set(devices), log_z.sharding  # it did span both processes
    out["log_z"] = np.asarray(log_z)  # replicated, so readable on every process
    grad = jax.jit(jax.grad(lambda p: ising.log_partition(p, devices=devices)))(enum_params)
    out["grad_h"], out["grad_J"] = np.asarray(grad.h), np.asarray(grad.J)

    # Chains, (a) from the same full initial states on every process.
    states = jax.vmap(algorithm.init)(jnp.asarray(x0))
    final, trace = mcmc.run_chains(key, algorithm, states, NUM_STEPS, thin=THIN, num_chunks=NUM_CHUNKS,
                                   trace_fn=trace_fn, devices=devices)
    assert not trace.is_fully_addressable and trace.sharding.device_set == set(devices)
    out["trace"] = multihost_utils.process_allgather(trace, tiled=True)
    out["final_x"] = multihost_utils.process_allgather(final.x, tiled=True)

    # (b) from a global array: each process holds (and initialises) only its own chains.
    per_process = NUM_CHAINS // 2
    mine = slice(process_id * per_process, (process_id + 1) * per_process)
    local_states = jax.vmap(algorithm.init)(jnp.asarray(x0[mine]))
    sharding = NamedSharding(Mesh(np.asarray(devices), ("chains",)), PartitionSpec("chains"))
    global_states = jax.tree_util.tree_map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local_states)
    final_g, trace_g = mcmc.run_chains(key, algorithm, global_states, NUM_STEPS, thin=THIN,
                                       num_chunks=NUM_CHUNKS, trace_fn=trace_fn, devices=devices)
    out["trace_global"] = multihost_utils.process_allgather(trace_g, tiled=True)
    out["final_x_global"] = multihost_utils.process_allgather(final_g.x, tiled=True)
    # This process's own chains are already here, without any communication.
    local_rows = np.concatenate([np.asarray(s.data) for s in sorted(
        trace_g.addressable_shards, key=lambda s: s.index[0].start)])
    out["trace_local_rows"] = local_rows
    out["local_rows_start"] = np.asarray(mine.start)

    np.savez(f"{out_dir}/process_{process_id}.npz", **out)
    multihost_utils.sync_global_devices("jaxebm-distributed-test-done")
    jax.distributed.shutdown()
    print(f"WORKER-{process_id}-OK", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
