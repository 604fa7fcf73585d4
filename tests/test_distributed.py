"""A real multi-process run: two local JAX processes joined by ``jax.distributed.initialize``.

Each process (tests/_distributed_worker.py) has two CPU devices; CPU collectives go over gloo on
the loopback interface. The enumeration and the chains are sharded over all four devices of
both processes, and what they give must equal the single-process results computed here.
"""

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import ising, mcmc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER_PATH = os.path.join(HERE, "_distributed_worker.py")
TIMEOUT_S = 120


def _load_worker():
    spec = importlib.util.spec_from_file_location("_distributed_worker", WORKER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(out_dir: str):
    """Starts both workers, waits at most TIMEOUT_S, always kills them; returns (codes, logs)."""
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # the worker sets its own device count
    procs, logs = [], []
    try:
        for i in range(2):
            log = tempfile.TemporaryFile(mode="w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, WORKER_PATH, str(i), str(port), out_dir], cwd=ROOT,
                                          env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + TIMEOUT_S
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = []
    for i, log in enumerate(logs):
        log.seek(0)
        texts.append(f"--- process {i} (exit {procs[i].returncode}) ---\n{log.read()[-6000:]}")
        log.close()
    return [p.returncode for p in procs], "\n".join(texts)


@pytest.mark.slow
def test_two_processes_match_one():
    with tempfile.TemporaryDirectory() as out_dir:
        codes, logs = _run_two_processes(out_dir)
        if "address already in use" in logs.lower():  # the free port was taken meanwhile: once more
            codes, logs = _run_two_processes(out_dir)
        if worker.NO_GLOO in codes and "GLOO-UNAVAILABLE" in logs:
            pytest.skip("this jaxlib has no gloo CPU collectives:\n" + logs)
        assert codes == [0, 0], "a worker failed or timed out:\n" + logs
        got = [dict(np.load(os.path.join(out_dir, f"process_{i}.npz"))) for i in range(2)]

    # Single-process results, on one device.
    enum_params, algorithm, x0, key = worker.problem()
    one = jax.devices()[:1]
    log_z = np.asarray(ising.log_partition(enum_params, devices=one))
    grad = jax.jit(jax.grad(lambda p: ising.log_partition(p, devices=one)))(enum_params)
    states = jax.vmap(algorithm.init)(jnp.asarray(x0))
    final, trace = mcmc.run_chains(key, algorithm, states, worker.NUM_STEPS, thin=worker.THIN,
                                   num_chunks=worker.NUM_CHUNKS, trace_fn=worker.trace_fn, devices=one)
    trace, final_x = np.asarray(trace), np.asarray(final.x)
    assert trace.shape == (worker.NUM_CHAINS, worker.NUM_STEPS // worker.THIN, worker.N_SPINS)
    assert np.any(trace[:, 0] != trace[:, -1])  # the chains moved

    # Both processes hold the same replicated log Z and gradient, bit for bit.
    for name in ("log_z", "grad_h", "grad_J"):
        np.testing.assert_array_equal(got[0][name], got[1][name], err_msg=name)
    # Against one device: the same 2^20 float32 terms, summed in another grouping (each device
    # folds its chunks with a Kahan-compensated running sum, then a max-shifted psum joins the
    # four partial sums), so they may differ by rounding in the last float32 bits. log Z is about 21
    # (ulp 1.9e-6): rtol = 4 eps allows about 5 ulps (measured: equal); a lost or doubled shard
    # would be off by log(4/3) or more, far beyond it.
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(got[0]["log_z"], log_z, rtol=4 * eps, atol=0)
    # Gradient entries are moments in [-1, 1] (<x_k> for h, <x_k x_l> / 2 for J), each a ratio of
    # two such sums: atol 8 eps (measured: 1.5 eps for h, 2.25 eps for J).
    np.testing.assert_allclose(got[0]["grad_h"], grad.h, rtol=0, atol=8 * eps)
    np.testing.assert_allclose(got[0]["grad_J"], grad.J, rtol=0, atol=8 * eps)

    # Chains: chain c always uses the c-th split key, so they agree bit for bit, whether the initial
    # states were given in full on each process or as a global array built from per-process parts.
    for r in got:
        for suffix in ("", "_global"):
            np.testing.assert_array_equal(r["trace" + suffix], trace, err_msg="trace" + suffix)
            np.testing.assert_array_equal(r["final_x" + suffix], final_x, err_msg="final_x" + suffix)
        start = int(r["local_rows_start"])
        np.testing.assert_array_equal(r["trace_local_rows"], trace[start:start + worker.NUM_CHAINS // 2])
