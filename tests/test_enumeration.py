"""The enumeration engine against float64 brute force and closed forms."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import enumeration
from tests import reference
from tests._compile import count_compiles as _count_compiles
from tests.conftest import random_couplings

# DESIGN.md: exact float32 quantities agree with float64 to about 1e-6 relative (2e-6 allows
# the final log's rounding); float64 ones to ~1e-12, with chunked sums over up to 2^30 states.
F32_RTOL = 2e-6
F64_RTOL = 1e-11


# ----- codes -> spins ------------------------------------------------------------------------


def _python_bits(code, n):
    return [1.0 if (code >> k) & 1 else -1.0 for k in range(n)]


@pytest.mark.parametrize("n", [31, 32, 33])
def test_spins_decoding_across_word_boundaries(n):
    codes = [0, 1, 2**30 + 7, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 2**31 + 5, 2**33 - 1]
    codes = [c for c in codes if c < 2**n]
    expected = np.array([_python_bits(c, n) for c in codes])
    got = enumeration.spins(np.array(codes, dtype=np.uint64), n)
    np.testing.assert_array_equal(np.asarray(got), expected)
    hi = np.array([c >> 32 for c in codes], np.uint32)
    lo = np.array([c & 0xFFFFFFFF for c in codes], np.uint32)
    np.testing.assert_array_equal(np.asarray(enumeration.spins((hi, lo), n)), expected)
    if n <= 32:
        got32 = enumeration.spins(jnp.asarray(np.array(codes, np.uint32)), n)
        np.testing.assert_array_equal(np.asarray(got32), expected)


def test_spins_uint64_under_x64(x64):
    codes = np.array([2**32 + 3, 2**33 - 1], np.uint64)
    got = enumeration.spins(jnp.asarray(codes, dtype=jnp.uint64), 33, dtype=jnp.float64)
    np.testing.assert_array_equal(np.asarray(got), np.array([_python_bits(int(c), 33) for c in codes]))


def test_spins_rejects_too_few_bits():
    with pytest.raises(ValueError, match="hold only 32 bits"):
        enumeration.spins(jnp.arange(4, dtype=jnp.uint32), 33)
    with pytest.raises(ValueError, match="n must be"):
        enumeration.spins(np.arange(4), 65)


def test_all_spins_order_and_refusal():
    X = np.asarray(enumeration.all_spins(4))
    np.testing.assert_array_equal(X, reference.all_states(4))
    with pytest.raises(ValueError, match="2\\^30 = 1,073,741,824 states"):
        enumeration.all_spins(30)


# ----- generic engine ------------------------------------------------------------------------


def _dense_fn(h, J, dtype=jnp.float32):
    h, J = jnp.asarray(h, dtype), jnp.asarray(J, dtype)
    return lambda x: 0.5 * jnp.einsum("bi,ij,bj->b", x, J, x, precision="highest") + x @ h


@pytest.mark.parametrize("n,chunk", [(1, None), (3, 2), (7, 8), (11, None), (12, 64)])
def test_log_sum_exp_states_matches_brute_force(rng, n, chunk):
    h, J = random_couplings(rng, n)
    got = enumeration.log_sum_exp_states(_dense_fn(h, J), n, chunk_size=chunk)
    want = reference.ising_log_z(h, J)
    assert abs(float(got) - want) <= F32_RTOL * abs(want) + 1e-6


def test_expectation_states_pytree_statistics(rng):
    n = 9
    h, J = random_couplings(rng, n)
    log_z, stats = enumeration.expectation_states(
        _dense_fn(h, J), lambda x: {"mean": x, "corr": x[:, :, None] * x[:, None, :],
                                    "mag2": jnp.sum(x, 1) ** 2}, n, chunk_size=16)
    mean, corr = reference.ising_moments(h, J)
    X = reference.all_states(n)
    p = reference.ising_probs(h, J)
    np.testing.assert_allclose(float(log_z), reference.ising_log_z(h, J), rtol=F32_RTOL)
    np.testing.assert_allclose(stats["mean"], mean, atol=2e-6)
    np.testing.assert_allclose(stats["corr"], corr, atol=2e-6)
    np.testing.assert_allclose(float(stats["mag2"]), p @ X.sum(1) ** 2, rtol=2e-6)


def test_generic_engine_float64(x64, rng):
    n = 10
    h, J = random_couplings(rng, n)
    got = enumeration.log_sum_exp_states(_dense_fn(h, J, jnp.float64), n, chunk_size=32)
    assert got.dtype == jnp.float64
    assert abs(float(got) - reference.ising_log_z(h, J)) <= F64_RTOL * abs(reference.ising_log_z(h, J))


def test_generic_engine_is_differentiable_in_closed_over_params(rng):
    n = 6
    h, J = random_couplings(rng, n)
    grad = jax.grad(lambda h: enumeration.log_sum_exp_states(_dense_fn(h, J), n, chunk_size=4))(
        jnp.asarray(h, jnp.float32))
    np.testing.assert_allclose(grad, reference.ising_moments(h, J)[0], atol=2e-6)


def test_generic_engine_handles_hard_constraints():
    # -inf log weights (forbidden states) in whole chunks must not produce NaN.
    def fn(x):
        return jnp.where(x[:, -1] > 0, 0.0, -jnp.inf)

    got = enumeration.log_sum_exp_states(fn, 6, chunk_size=2)
    np.testing.assert_allclose(float(got), np.log(32.0), rtol=1e-7)


def test_generic_engine_rejects_bad_log_weight_fn():
    with pytest.raises(ValueError, match="log_weight_fn must map"):
        enumeration.log_sum_exp_states(lambda x: x, 4)
    with pytest.raises(ValueError, match="chunk_size must be a positive power of two"):
        enumeration.log_sum_exp_states(lambda x: x.sum(1), 4, chunk_size=3)


# ----- split engine --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 9, 13, 16])
def test_pairwise_log_z_and_moments_float32(rng, n):
    h, J = random_couplings(rng, n, scale=0.6)
    want_z = reference.ising_log_z(h, J)
    want_mean, want_corr = reference.ising_moments(h, J)
    got_z = enumeration.pairwise_log_partition(h, J)
    assert abs(float(got_z) - want_z) <= F32_RTOL * abs(want_z)
    log_z, mean, corr = enumeration.pairwise_moments(h, J)
    assert abs(float(log_z) - want_z) <= F32_RTOL * abs(want_z)
    np.testing.assert_allclose(mean, want_mean, atol=3e-6)
    np.testing.assert_allclose(corr, want_corr, atol=3e-6)


@pytest.mark.parametrize("inner_bits,chunk_size", [(0, 1), (1, 2), (3, 1), (4, 4), (8, 2)])
def test_pairwise_any_split_gives_the_same_answer(rng, inner_bits, chunk_size):
    n = 8
    h, J = random_couplings(rng, n)
    got = enumeration.pairwise_moments(h, J, inner_bits=inner_bits, chunk_size=chunk_size)
    want_mean, want_corr = reference.ising_moments(h, J)
    np.testing.assert_allclose(float(got[0]), reference.ising_log_z(h, J), rtol=F32_RTOL)
    np.testing.assert_allclose(got[1], want_mean, atol=2e-6)
    np.testing.assert_allclose(got[2], want_corr, atol=2e-6)


@pytest.mark.parametrize("n", [3, 12, 16])
def test_pairwise_float64(x64, rng, n):
    h, J = random_couplings(rng, n, scale=0.6)
    log_z, mean, corr = enumeration.pairwise_moments(jnp.asarray(h), jnp.asarray(J), chunk_size=4)
    assert log_z.dtype == jnp.float64
    want_z = reference.ising_log_z(h, J)
    want_mean, want_corr = reference.ising_moments(h, J)
    assert abs(float(log_z) - want_z) <= F64_RTOL * abs(want_z)
    np.testing.assert_allclose(mean, want_mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(corr, want_corr, rtol=0, atol=1e-12)
    z2 = enumeration.pairwise_log_partition(jnp.asarray(h), jnp.asarray(J), inner_bits=2)
    assert abs(float(z2) - want_z) <= F64_RTOL * abs(want_z)


def test_pairwise_uses_symmetric_part_and_diagonal_like_brute_force(rng, x64):
    n = 5
    A = rng.normal(size=(n, n))
    h = rng.normal(size=n)
    X = reference.all_states(n)
    want = reference.logsumexp(0.5 * np.einsum("si,ij,sj->s", X, A, X) + X @ h)
    got = enumeration.pairwise_log_partition(jnp.asarray(h), jnp.asarray(A))
    np.testing.assert_allclose(float(got), want, rtol=1e-12)


def test_gradient_equals_autodiff_of_brute_force(x64, rng):
    n = 7
    h, J = (jnp.asarray(a) for a in random_couplings(rng, n))
    X = jnp.asarray(reference.all_states(n))

    def brute(h, J):
        return jax.nn.logsumexp(0.5 * jnp.einsum("si,ij,sj->s", X, J, X) + X @ h)

    g_brute = jax.grad(brute, argnums=(0, 1))(h, J)
    g_engine = jax.grad(enumeration.pairwise_log_partition, argnums=(0, 1))(h, J)
    for a, b in zip(g_engine, g_brute):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    # Forward mode too.
    t = (jnp.ones(n), jnp.eye(n)[::-1])
    _, jvp_engine = jax.jvp(enumeration.pairwise_log_partition, (h, J), t)
    _, jvp_brute = jax.jvp(brute, (h, J), t)
    np.testing.assert_allclose(jvp_engine, jvp_brute, rtol=1e-11)


def test_vmap_over_parameters(rng):
    hs, Js = zip(*[random_couplings(rng, 6) for _ in range(4)])
    hs, Js = jnp.asarray(np.stack(hs), jnp.float32), jnp.asarray(np.stack(Js), jnp.float32)
    got = jax.jit(jax.vmap(enumeration.pairwise_log_partition))(hs, Js)
    want = [reference.ising_log_z(h, J) for h, J in zip(np.asarray(hs), np.asarray(Js))]
    np.testing.assert_allclose(got, want, rtol=F32_RTOL)


def test_compiles_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(h, J):
        return jax.grad(enumeration.pairwise_log_partition)(h, J)

    for seed in range(3):
        h, J = random_couplings(np.random.default_rng(seed), 10)
        step(jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32))


# ----- closed forms at larger n ---------------------------------------------------------------


def test_independent_spins_n24_and_kahan_at_n26(rng):
    for n in (24, 26):
        h = rng.normal(size=n)
        got = enumeration.pairwise_log_partition(h, np.zeros((n, n)))
        want = reference.independent_log_z(h)
        assert abs(float(got) - want) <= F32_RTOL * want
    log_z, mean, corr = enumeration.pairwise_moments(h[:24], np.zeros((24, 24)))
    np.testing.assert_allclose(mean, np.tanh(h[:24]), atol=3e-6)
    t = np.tanh(h[:24])
    off = ~np.eye(24, dtype=bool)
    np.testing.assert_allclose(np.asarray(corr)[off], np.outer(t, t)[off], atol=3e-6)


def test_open_chain_transfer_matrix_n24(rng):
    n = 24
    h = rng.normal(scale=0.4, size=n)
    c = rng.normal(scale=0.8, size=n - 1)
    J = np.diag(c, 1) + np.diag(c, -1)
    want_z, want_mean, want_nn = reference.chain_log_z_and_moments(h, c)
    log_z, mean, corr = enumeration.pairwise_moments(h, J)
    assert abs(float(log_z) - want_z) <= F32_RTOL * abs(want_z)
    np.testing.assert_allclose(mean, want_mean, atol=2e-6)
    np.testing.assert_allclose(np.diag(np.asarray(corr), 1), want_nn, atol=2e-6)


@pytest.mark.parametrize("coupling,field", [(0.5, 0.1), (1.5, 0.0), (2.0, -0.05)])
def test_curie_weiss_n24(coupling, field):
    n = 24
    J = np.full((n, n), coupling / n) - np.eye(n) * coupling / n
    want_z, want_mean, want_corr = reference.curie_weiss(n, coupling, field)
    log_z, mean, corr = enumeration.pairwise_moments(np.full(n, field), J)
    assert abs(float(log_z) - want_z) <= F32_RTOL * abs(want_z)
    np.testing.assert_allclose(mean, want_mean, atol=2e-6)
    off = ~np.eye(n, dtype=bool)
    np.testing.assert_allclose(np.asarray(corr)[off], want_corr, atol=2e-6)


# Slow checks at larger n (`pytest -m slow`; CI runs them). Moments at n = 28, 30 sum 4-16 times
# as many chunks in float32 as at n = 24: 3e-6 instead of 2e-6.


@pytest.mark.slow
@pytest.mark.parametrize("n", [28, 30])
def test_curie_weiss_large_n(n):
    coupling, field = 1.2, 0.05
    J = np.full((n, n), coupling / n) - np.eye(n) * coupling / n
    want_z, want_mean, want_corr = reference.curie_weiss(n, coupling, field)
    log_z, mean, corr = enumeration.pairwise_moments(np.full(n, field), J)
    assert abs(float(log_z) - want_z) <= F32_RTOL * abs(want_z)
    np.testing.assert_allclose(mean, want_mean, atol=3e-6)
    off = ~np.eye(n, dtype=bool)
    np.testing.assert_allclose(np.asarray(corr)[off], want_corr, atol=3e-6)


@pytest.mark.slow
def test_open_chain_n30(rng):
    n = 30
    h = rng.normal(scale=0.4, size=n)
    c = rng.normal(scale=0.8, size=n - 1)
    want_z, want_mean, _ = reference.chain_log_z_and_moments(h, c)
    log_z, mean, _ = enumeration.pairwise_moments(h, np.diag(c, 1) + np.diag(c, -1))
    assert abs(float(log_z) - want_z) <= F32_RTOL * abs(want_z)
    np.testing.assert_allclose(mean, want_mean, atol=3e-6)


@pytest.mark.slow
def test_generic_engine_past_two_to_the_32_codes():
    # 33 spins with chunks of 2^22: the chunk index supplies bits 22..32.
    n = 33
    h = np.linspace(-1, 1, n)
    got = enumeration.log_sum_exp_states(lambda x: x @ jnp.asarray(h, jnp.float32), n, chunk_size=2**22,
                                         max_seconds=3600)
    assert abs(float(got) - reference.independent_log_z(h)) <= F32_RTOL * reference.independent_log_z(h)


@pytest.mark.slow
def test_float64_dense_n20(x64, rng):
    n = 20
    J = np.triu(rng.normal(size=(n, n)) / np.sqrt(n), 1)
    J = J + J.T
    h = rng.normal(size=n) * 0.2
    X = reference.all_states(n)
    lw = 0.5 * np.einsum("si,ij,sj->s", X, J, X) + X @ h
    want = reference.logsumexp(lw)
    p = np.exp(lw - want)
    log_z, mean, corr = enumeration.pairwise_moments(jnp.asarray(h), jnp.asarray(J))
    assert abs(float(log_z) - want) <= F64_RTOL * abs(want)
    np.testing.assert_allclose(mean, p @ X, atol=1e-12)


# ----- refusal and validation ------------------------------------------------------------------


def test_refuses_huge_enumerations_quickly():
    n = 60
    with pytest.raises(ValueError, match=r"2\^60 = 1,152,921,504,606,846,976 states, estimated at"):
        enumeration.pairwise_log_partition(np.zeros(n), np.zeros((n, n)))
    with pytest.raises(ValueError, match="max_seconds"):
        enumeration.log_sum_exp_states(lambda x: x.sum(1), 48)
    # an explicit budget moves the limit
    with pytest.raises(ValueError, match="max_seconds=0.001"):
        enumeration.pairwise_log_partition(np.zeros(30), np.zeros((30, 30)), max_seconds=1e-3)


def test_pairwise_rejects_bad_shapes_and_values():
    with pytest.raises(ValueError, match="J must have shape"):
        enumeration.pairwise_log_partition(np.zeros(3), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="h must be"):
        enumeration.pairwise_log_partition(np.zeros((3, 1)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="J contains 1 NaN"):
        J = np.zeros((3, 3))
        J[0, 1] = np.nan
        enumeration.pairwise_log_partition(np.zeros(3), J)


# ----- sharding across devices ----------------------------------------------------------------


SHARDING_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from jaxebm import enumeration
    from tests import reference
    from tests.conftest import random_couplings
    rng = np.random.default_rng(3)
    for n, kwargs in [(12, {}), (14, dict(inner_bits=4, chunk_size=2)), (9, dict(inner_bits=3))]:
        h, J = random_couplings(rng, n)
        one = enumeration.pairwise_moments(h, J, devices=jax.devices()[:1], **kwargs)
        many = enumeration.pairwise_moments(h, J, **kwargs)  # all 8 devices by default
        assert abs(float(many[0]) - reference.ising_log_z(h, J)) < 2e-6 * reference.ising_log_z(h, J)
        for a, b in zip(one, many):
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)
        g = jax.jit(jax.grad(enumeration.pairwise_log_partition))(jnp.asarray(h, jnp.float32),
                                                                   jnp.asarray(J, jnp.float32))
        np.testing.assert_allclose(g, reference.ising_moments(h, J)[0], atol=3e-6)
    # the fused kernel (interpret mode) sharded the same way
    h, J = random_couplings(rng, 12)
    got = enumeration.pairwise_moments(h, J, engine="pallas", inner_bits=6, chunk_size=4)
    assert abs(float(got[0]) - reference.ising_log_z(h, J)) < 2e-6 * reference.ising_log_z(h, J)
    np.testing.assert_allclose(got[1], reference.ising_moments(h, J)[0], atol=2e-6)
    np.testing.assert_allclose(got[2], reference.ising_moments(h, J)[1], atol=2e-6)
    # generic engine, with 5 chunks per device and a remainder
    h, J = random_couplings(rng, 8)
    fn = lambda x: 0.5 * jnp.einsum("bi,ij,bj->b", x, jnp.asarray(J, jnp.float32), x) + x @ jnp.asarray(h, jnp.float32)
    lz, m = enumeration.expectation_states(fn, lambda x: x, 8, chunk_size=8)
    np.testing.assert_allclose(float(lz), reference.ising_log_z(h, J), rtol=2e-6)
    np.testing.assert_allclose(m, reference.ising_moments(h, J)[0], atol=2e-6)
    # the RBM's exact log Z and moments (the split engine enumerating one layer) and the
    # Fisher information (the generic engine), sharded the same way
    from jaxebm import ising, mcmc, rbm
    prm = rbm.init(jax.random.key(2), 7, 11, scale=0.5)
    for kw in ({}, dict(inner_bits=3, chunk_size=2)):
        first = jax.devices()[:1]
        one = (rbm.log_partition(prm, devices=first, **kw), *rbm.moments(prm, devices=first, **kw))
        many = (rbm.log_partition(prm, **kw), *rbm.moments(prm, **kw))  # all 8 devices by default
        for a, b in zip(one, many):
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)
    sk = ising.sherrington_kirkpatrick(jax.random.key(3), 7)
    np.testing.assert_allclose(ising.fisher(sk, devices=jax.devices()[:1], chunk_size=4),
                               ising.fisher(sk, chunk_size=4), atol=2e-6)
    # chains sharded across the 8 devices give the same chains as on one device
    params = ising.sherrington_kirkpatrick(jax.random.key(0), 10)
    algo = mcmc.metropolis(params)
    states = jax.vmap(algo.init)(jnp.ones((16, 10)))
    run = lambda devices: mcmc.run_chains(jax.random.key(1), algo, states, 5, devices=devices,
                                          trace_fn=lambda s, i: s.x)
    (s1, t1), (s8, t8) = run(jax.devices()[:1]), run(None)
    np.testing.assert_array_equal(t1, t8)
    assert len(s8.x.sharding.device_set) == 8
    print("SHARDING-OK")
    """
)


@pytest.mark.slow
def test_sharding_across_eight_simulated_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], env=env, cwd=root,
                            capture_output=True, text=True, timeout=600)
    assert "SHARDING-OK" in result.stdout, result.stdout + result.stderr


# ----- issue #12: validation at the entry, compile once -----------------------------------------


def test_spins_refuses_codes_wider_than_n_and_negative_codes():
    np.testing.assert_array_equal(enumeration.spins(np.array([7]), 3), [[1.0, 1.0, 1.0]])
    for codes in (np.array([8]), [1, 9], jnp.array([8], jnp.uint32), jnp.array([2**31], jnp.uint32)):
        with pytest.raises(ValueError, match=r"codes must be codes of n = 3 spins, i.e. below 2\^3"):
            enumeration.spins(codes, 3)
    for codes in (np.array([-1]), jnp.array([-2], jnp.int32), [-1]):
        with pytest.raises(ValueError, match="codes must be non-negative"):
            enumeration.spins(codes, 3)
    # the high word of a (hi, lo) pair, and a NumPy uint64 beyond n = 40 bits
    with pytest.raises(ValueError, match="high word"):
        enumeration.spins((np.array([2], np.uint32), np.array([0], np.uint32)), 33)
    with pytest.raises(ValueError, match=r"below 2\^40"):
        enumeration.spins(np.array([2**40], np.uint64), 40)
    np.testing.assert_array_equal(enumeration.spins(np.array([2**40], np.uint64), 41)[0, 40], 1.0)
    with pytest.raises(ValueError, match="codes must be integers"):
        enumeration.spins(np.array([1.0]), 3)
    for n in (2.5, True, -1, 65, "3"):
        with pytest.raises(ValueError, match="n must be an integer in"):
            enumeration.spins(np.array([1]), n)
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        enumeration.spins(np.array([1]), 3, dtype=jnp.int32)
    # under jit the values are tracers: no check, the high bits are ignored (documented)
    np.testing.assert_array_equal(jax.jit(lambda c: enumeration.spins(c, 3))(jnp.array([15], jnp.uint32)),
                                  [[1.0, 1.0, 1.0]])


def test_all_spins_refuses_bad_n():
    for n in (0, 2.5, True, -3, None):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            enumeration.all_spins(n)


def test_generic_engine_validates_its_arguments():
    fn = lambda x: x.sum(1)  # noqa: E731
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        enumeration.log_sum_exp_states(fn, 2.5)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        enumeration.log_sum_exp_states(fn, 4, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive power of two"):
        enumeration.log_sum_exp_states(fn, 4, chunk_size=3)
    with pytest.raises(ValueError, match="devices must name at least one device"):
        enumeration.log_sum_exp_states(fn, 4, devices=[])
    with pytest.raises(ValueError, match="devices must hold jax devices"):
        enumeration.log_sum_exp_states(fn, 4, devices=["cpu"])
    with pytest.raises(ValueError, match="log_weight_fn must be a callable"):
        enumeration.log_sum_exp_states(np.ones(4), 4)
    with pytest.raises(ValueError, match="stat_fn must be a callable"):
        enumeration.expectation_states(fn, "x", 4)
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        enumeration.log_sum_exp_states(fn, 4, dtype=jnp.int32)
    for bad in (-1.0, 0.0, np.nan):
        with pytest.raises(ValueError, match="max_seconds must be"):
            enumeration.log_sum_exp_states(fn, 4, max_seconds=bad)
    # a function that is NaN at some state gives a NaN log Z: refused, never returned
    with pytest.raises(ValueError, match="log_weight_fn returned NaN for some state"):
        enumeration.log_sum_exp_states(lambda x: jnp.where(x[:, 0] > 0, jnp.nan, 0.0), 4)
    with pytest.raises(ValueError, match="stat_fn returned NaN"):
        enumeration.expectation_states(fn, lambda x: jnp.log(x), 4)


def test_pairwise_accepts_lists_and_validates_options(rng):
    h, J = random_couplings(rng, 5)
    want = reference.ising_log_z(h, J)
    np.testing.assert_allclose(enumeration.pairwise_log_partition(h.tolist(), J.tolist()), want, rtol=F32_RTOL)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="inner_bits must be"):
            enumeration.pairwise_log_partition(h, J, inner_bits=bad)
    with pytest.raises(ValueError, match="engine must be one of"):
        enumeration.pairwise_moments(h, J, engine="cuda")
    with pytest.raises(ValueError, match="chunk_size must be a positive power of two"):
        enumeration.pairwise_moments(h, J, chunk_size=6)
    with pytest.raises(ValueError, match="h must not be empty|h must hold at least one spin"):
        enumeration.pairwise_log_partition(np.zeros(0), np.zeros((0, 0)))
    with pytest.raises(ValueError, match="h must be a numeric array"):
        enumeration.pairwise_log_partition(["a"] * 5, J)
    with pytest.raises(ValueError, match="plan must be made for n = 5"):
        enumeration.pairwise_row_log_weights(h, J, enumeration.split_plan(6))
    with pytest.raises(ValueError, match="plan must be a SplitPlan"):
        enumeration.pairwise_row_log_weights(h, J, (5, 2, 1))


def test_time_estimate_counts_matmul_work_per_state():
    base = enumeration.estimate_seconds(24, pairwise=False)
    assert enumeration.estimate_seconds(24, pairwise=False, flops_per_state=2 * 300**2) > 100 * base
    with pytest.raises(ValueError, match=r"2\^24 = 16,777,216 states with a 300 x 300 second moment each, "
                                         r"estimated at"):
        enumeration.covariance_states(lambda x: x.sum(1), lambda x: jnp.tile(x, (1, 13))[:, :300], 24,
                                      max_seconds=1.0)
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="n must be an integer >= 0"):
            enumeration.estimate_seconds(bad)


def test_eager_calls_compile_once(rng):
    """A second eager call with new values of the same shapes compiles nothing (issue #12),
    also for the generic engine called with a new closure each time."""

    def calls(seed):
        h, J = (jnp.asarray(a, jnp.float32) for a in random_couplings(np.random.default_rng(seed), 6))
        lw = lambda x: 0.5 * jnp.einsum("bi,ij,bj->b", x, J, x) + x @ h  # noqa: E731
        return [
            lambda: enumeration.pairwise_log_partition(h, J),
            lambda: enumeration.pairwise_moments(h, J),
            lambda: jax.grad(enumeration.pairwise_log_partition)(h, J),
            lambda: enumeration.log_sum_exp_states(lw, 6),
            lambda: enumeration.expectation_states(lw, lambda x: x * h, 6),
            lambda: enumeration.covariance_states(lw, lambda x: x, 6),
            lambda: jax.grad(lambda h: enumeration.log_sum_exp_states(lambda x: x @ h, 6))(h),
            lambda: enumeration.pairwise_row_log_weights(h, J, enumeration.split_plan(6, inner_bits=3)),
            lambda: enumeration.spins(jnp.arange(seed, seed + 8, dtype=jnp.uint32), 6),
            lambda: enumeration.all_spins(6),
        ]

    with _count_compiles() as compiled:  # the counter sees a compilation
        jax.jit(lambda x: x + 1)(1.0)
    assert len(compiled) == 1
    for first, second in zip(calls(1), calls(2)):
        jax.block_until_ready(first())
        with _count_compiles() as compiled:
            out = second()
            jax.block_until_ready(out)
        assert compiled == [], compiled
    # the cached generic fold still sees the new values
    h, J = random_couplings(np.random.default_rng(3), 6)
    h32, J32 = jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32)
    got = enumeration.log_sum_exp_states(lambda x: 0.5 * jnp.einsum("bi,ij,bj->b", x, J32, x) + x @ h32, 6)
    np.testing.assert_allclose(got, reference.ising_log_z(h, J), rtol=F32_RTOL)
