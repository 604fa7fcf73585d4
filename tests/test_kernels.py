"""The fused Pallas kernels (jaxebm.kernels), run with interpret=True on CPU, against
float64 brute force and against the XLA engine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import enumeration, kernels, rbm
from tests import reference
from tests.conftest import random_couplings
from tests.test_rbm import brute as rbm_brute


@pytest.mark.parametrize("n, kwargs", [(10, {}), (11, dict(inner_bits=6, chunk_size=2)),
                                       pytest.param(9, dict(inner_bits=8, chunk_size=1), marks=pytest.mark.slow),
                                       pytest.param(12, dict(inner_bits=9), marks=pytest.mark.slow)])
def test_pairwise_kernel_log_z_and_moments_float32(rng, n, kwargs):
    h, J = random_couplings(rng, n, scale=0.6)
    want_z = reference.ising_log_z(h, J)
    want_mean, want_corr = reference.ising_moments(h, J)
    h32, J32 = jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32)
    log_z = enumeration.pairwise_log_partition(h32, J32, engine="pallas", **kwargs)
    assert abs(float(log_z) - want_z) <= 2e-6 * abs(want_z)
    log_z2, mean, corr = enumeration.pairwise_moments(h32, J32, engine="pallas", **kwargs)
    assert abs(float(log_z2) - want_z) <= 2e-6 * abs(want_z)
    np.testing.assert_allclose(mean, want_mean, atol=2e-6)
    np.testing.assert_allclose(corr, want_corr, atol=2e-6)
    g = jax.jit(jax.grad(lambda h: enumeration.pairwise_log_partition(h, J32, engine="pallas", **kwargs)))(h32)
    np.testing.assert_allclose(g, want_mean, atol=2e-6)


def test_pairwise_kernel_float64(x64, rng):
    h, J = random_couplings(rng, 11, scale=0.8)
    log_z, mean, corr = enumeration.pairwise_moments(h, J, engine="pallas", inner_bits=5, chunk_size=4)
    assert log_z.dtype == jnp.float64
    np.testing.assert_allclose(float(log_z), reference.ising_log_z(h, J), rtol=1e-13)
    want_mean, want_corr = reference.ising_moments(h, J)
    np.testing.assert_allclose(mean, want_mean, atol=1e-12)
    np.testing.assert_allclose(corr, want_corr, atol=1e-12)


def test_pairwise_kernel_large_weights_do_not_overflow(rng):
    # log weights ~ 1e3: every exp must be max-shifted inside the kernel.
    n = 10
    h, J = random_couplings(rng, n, scale=30.0, field=50.0)
    got = enumeration.pairwise_moments(h, J, engine="pallas", inner_bits=7)
    want_z = reference.ising_log_z(h, J)
    assert np.isfinite(float(got[0]))
    assert abs(float(got[0]) - want_z) <= 2e-6 * abs(want_z)
    np.testing.assert_allclose(got[1], reference.ising_moments(h, J)[0], atol=2e-5)


def test_pairwise_rows_directly(rng):
    C, K, NB = 128, 16, 512
    u = rng.normal(size=(C, K)).astype(np.float32)
    fo = rng.normal(size=C).astype(np.float32)
    s = rng.choice([-1.0, 1.0], size=(K, NB)).astype(np.float32)
    fi = rng.normal(size=NB).astype(np.float32)
    L = u.astype(np.float64) @ s + fo[:, None] + fi[None, :]
    log_rows, inner_mean, cols, shifts = kernels.pairwise_rows(u, fo, s, fi, with_moments=True, tile_rows=32,
                                                               tile_inner=128)
    P = np.exp(L - L.max(axis=1, keepdims=True))
    np.testing.assert_allclose(log_rows, L.max(axis=1) + np.log(P.sum(1)), rtol=1e-6)
    np.testing.assert_allclose(inner_mean, (P @ s.T) / P.sum(1, keepdims=True), atol=2e-6)
    # columns: program g covers rows 32g..32g+31, tile t covers inner states 128t..128t+127
    assert cols.shape == (4, NB) and shifts.shape == (4, 4)
    col_total = np.sum(np.asarray(cols, np.float64) * np.repeat(np.exp(np.asarray(shifts, np.float64)), 128, 1), 0)
    # each float32 log weight carries an absolute rounding error of ~eps * |L|, which exp turns
    # into a relative error of the same size in a column sum dominated by a few terms
    rtol = 4 * np.finfo(np.float32).eps * np.abs(L).max()
    np.testing.assert_allclose(col_total, np.exp(L).sum(0), rtol=rtol)
    with pytest.raises(ValueError, match="tile sizes"):
        kernels.pairwise_rows(u[:96], fo[:96], s, fi, tile_rows=64)


@pytest.mark.parametrize("nv, nh", [(6, 4), (3, 9), (150, 5)])
def test_rbm_kernel_log_z(rng, nv, nh):
    W = rng.normal(scale=0.5, size=(nv, nh))
    b, c = rng.normal(scale=0.3, size=nv), rng.normal(scale=0.3, size=nh)
    want = rbm_brute(W, b, c)[0] if nv * nh <= 40 else None
    params = rbm.RBMParams(*(jnp.asarray(a, jnp.float32) for a in (W, b, c)))
    got = rbm.log_partition(params, engine="pallas")
    xla = rbm.log_partition(params, engine="xla")
    if want is not None:
        assert abs(float(got) - want) <= 2e-6 * abs(want)
    else:  # 150 visible units: padded to 256 inside the kernel; brute force over the 5 hidden units
        hidden = np.array([[1 if (k >> j) & 1 else -1 for j in range(nh)] for k in range(2**nh)], float)
        A = hidden @ W.T + b
        lw = hidden @ c + np.sum(np.logaddexp(A, -A), axis=1)
        want = reference.logsumexp(lw)
        assert abs(float(got) - want) <= 2e-6 * abs(want)
    assert abs(float(got) - float(xla)) <= 2e-6 * abs(float(xla))
    g = jax.grad(lambda p: rbm.log_partition(p, engine="pallas"))(params)
    g_xla = jax.grad(lambda p: rbm.log_partition(p, engine="xla"))(params)
    np.testing.assert_allclose(g.W, g_xla.W, atol=1e-6)


@pytest.mark.slow
def test_pallas_kernel_float32_matches_float64_at_n24(rng):
    # Issue #8: float32 within 2e-6 relative of float64 at N <= 24 (interpret mode on CPU).
    from tests.conftest import _x64

    n = 24
    h, J = random_couplings(rng, n, scale=0.4)
    log_z, mean, corr = enumeration.pairwise_moments(jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32),
                                                     engine="pallas")
    with _x64():
        want = enumeration.pairwise_moments(np.asarray(h), np.asarray(J), engine="xla")
        want = [np.asarray(a) for a in want]
    assert abs(float(log_z) - want[0]) <= 2e-6 * abs(want[0])
    np.testing.assert_allclose(mean, want[1], atol=3e-6)
    np.testing.assert_allclose(corr, want[2], atol=3e-6)


def test_engine_selection():
    assert kernels.resolve("xla") == "xla"
    assert kernels.resolve("pallas") == "pallas"
    if jax.default_backend() != "gpu":
        assert kernels.resolve(None) == "xla"
        assert kernels.resolve("auto") == "xla"
    with pytest.raises(ValueError, match="engine"):
        kernels.resolve("triton")
    with pytest.raises(ValueError, match="engine"):
        enumeration.pairwise_log_partition(np.zeros(3), np.zeros((3, 3)), engine="cuda")
    assert kernels.padded(3) == 16 and kernels.padded(16) == 16 and kernels.padded(17) == 32


def _lower_for_gpu(fn, *args):
    """Lowers ``fn`` for CUDA without a GPU: runs the Pallas -> Triton lowering of every kernel
    (compiling the Triton IR to PTX still needs a GPU)."""
    from jax import export

    exported = export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[
        export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(*args)
    return exported.mlir_module()


@pytest.mark.parametrize("what", ["log_z", "moments", "grad", "rbm"])
def test_kernels_lower_to_triton_for_gpu(what):
    n = 18
    h, J = jnp.zeros(n), jnp.zeros((n, n))
    if what == "log_z":
        module = _lower_for_gpu(lambda h, J: enumeration.pairwise_log_partition(h, J, engine="pallas"), h, J)
    elif what == "moments":
        module = _lower_for_gpu(lambda h, J: enumeration.pairwise_moments(h, J, engine="pallas"), h, J)
    elif what == "grad":
        module = _lower_for_gpu(jax.grad(lambda h, J: enumeration.pairwise_log_partition(h, J, engine="pallas")), h, J)
    else:
        params = rbm.init(jax.random.key(0), 784, 14)
        module = _lower_for_gpu(lambda p: rbm.log_partition(p, engine="pallas"), params)
    assert "xla.gpu.triton" in module
