"""The Hessian-eigenvalue learning-rate rule (ch. 2.6) against exact Hessians."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxebm import curvature, ising, optim
from jaxebm._validation import ConvergenceWarning
from jaxebm.ising import IsingParams
from tests import reference
from tests._compile import assert_compiles_once as _assert_compiles_once
from tests.conftest import random_couplings


def _ising_problem(rng, n=6, num=300, scale=0.5):
    h, J = random_couplings(rng, n, scale=scale)
    params = IsingParams(jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32))
    data = ising.sample_exact(jax.random.key(0), params, num)
    return params, data, h, J


@pytest.mark.parametrize("method", ["power", "lanczos", "dense"])
def test_max_eigenvalue_matches_exact_fisher(rng, method):
    params, data, h, J = _ising_problem(rng)
    n = 6
    theta = ising.to_flat(params)
    # the eigenvector converges more slowly than the eigenvalue: ask power iteration for more
    kw = dict(num_iters=3000, tol=1e-10) if method == "power" else dict(num_iters=40)
    lam, vec = curvature.max_eigenvalue(lambda t, d: ising.nll(ising.from_flat(t, n), d), theta, data,
                                        method=method, **kw)
    evals, evecs = np.linalg.eigh(reference.ising_fisher(h, J))
    assert abs(float(lam) - evals[-1]) <= 1e-4 * evals[-1]
    assert abs(abs(float(np.dot(vec, evecs[:, -1]))) - 1) < 1e-3
    # the library's own Fisher agrees too
    np.testing.assert_allclose(ising.fisher(params), reference.ising_fisher(h, J), atol=2e-6)


@pytest.mark.parametrize("method", [pytest.param("power", marks=pytest.mark.slow), "lanczos"])
def test_max_eigenvalue_in_pytree_coordinates(rng, method):
    params, data, _, _ = _ising_problem(rng, n=5)
    lam, vec = curvature.max_eigenvalue(ising.nll, params, data, method=method, num_iters=300 if method == "power"
                                        else 30)
    flat = jnp.concatenate([params.h, params.J.ravel()])
    H = jax.hessian(lambda t: ising.nll(IsingParams(t[:5], t[5:].reshape(5, 5)), data))(flat)
    want = np.linalg.eigvalsh(np.asarray(H, np.float64)).max()
    assert abs(float(lam) - want) <= 1e-4 * want
    assert isinstance(vec, IsingParams) and vec.J.shape == (5, 5)


def test_smallest_eigenvalue_of_indefinite_hessian(x64):
    rng = np.random.default_rng(5)
    Q = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    evals = np.linspace(-3.0, 2.0, 12)
    A = jnp.asarray(Q @ np.diag(evals) @ Q.T)

    def loss(p):
        return 0.5 * p["a"] @ A @ p["a"] + jnp.sum(jnp.sin(p["b"])) * 0.0

    params = {"a": jnp.ones(12), "b": jnp.zeros(3)}
    for method in ("power", "lanczos", "dense"):
        kw = dict(num_iters=2000, tol=1e-12) if method == "power" else dict(num_iters=15)
        hi, _ = curvature.max_eigenvalue(loss, params, method=method, **kw)
        lo, _ = curvature.max_eigenvalue(loss, params, method=method, which="smallest", **kw)
        # The dominant eigenvalue is -3; "largest" must still find +2 (shifted iteration).
        np.testing.assert_allclose(float(hi), 2.0, rtol=1e-6)
        np.testing.assert_allclose(float(lo), -3.0, rtol=1e-6)


@pytest.mark.slow
def test_warm_started_reestimate_needs_few_hvps(rng):
    params, data, _, _ = _ising_problem(rng, n=8)
    lam, vec = curvature.max_eigenvalue(ising.nll, params, data, num_iters=500, tol=1e-7)
    grads = jax.grad(ising.nll)(params, data)
    moved = jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, params, grads)
    lam2, _, info = curvature.max_eigenvalue(ising.nll, moved, data, init_vector=vec, init_eigenvalue=lam,
                                             tol=1e-3, return_info=True)
    assert int(info.num_hvps) <= 5 and bool(info.converged)
    exact, _ = curvature.max_eigenvalue(ising.nll, moved, data, method="lanczos", num_iters=40)
    assert abs(float(lam2) - float(exact)) <= 1e-2 * float(exact)


@pytest.mark.parametrize("n,scale", [(1, 1.0), (3, 2.0), (6, 0.1), (6, 3.0)])
def test_smoothness_bound_dominates_the_fisher(rng, n, scale):
    L = curvature.ising_smoothness_bound(n)
    assert L == n + n * (n - 1) / 2
    for _ in range(5):
        h, J = random_couplings(rng, n, scale=scale, field=scale)
        assert np.linalg.eigvalsh(reference.ising_fisher(h, J)).max() <= L
    # the near-extreme case: uniform fields and couplings close to 0 give Cov = I... and
    # strongly aligned models concentrate on two states
    assert np.linalg.eigvalsh(reference.ising_fisher(np.zeros(n), np.zeros((n, n)))).max() <= L


def test_global_bound_gives_monotone_descent(rng):
    n = 8
    params, data, _, _ = _ising_problem(rng, n=n, scale=0.8)
    start = ising.init(jax.random.key(2), n, scale=1.0)
    L = curvature.ising_smoothness_bound(n)
    _, info = jax.jit(lambda p: ising.fit(optax.sgd(1.0 / L), p, data, 100))(start)
    losses = np.asarray(info.loss, np.float64)
    assert np.all(np.diff(losses) <= 1e-6 * np.abs(losses[1:])), np.diff(losses).max()
    assert losses[-1] < losses[0]


def test_surrogate_is_an_upper_bound_with_eta_one_over_L(rng):
    n = 5
    params, data, _, _ = _ising_problem(rng, n=n)
    theta0 = ising.to_flat(params)
    loss = jax.jit(lambda t: ising.nll(ising.from_flat(t, n), data))
    eta = 1.0 / curvature.ising_smoothness_bound(n)
    f_eta = jax.jit(curvature.surrogate(loss, theta0, eta))
    np.testing.assert_allclose(float(f_eta(theta0)), float(loss(theta0)), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(f_eta)(theta0), jax.grad(loss)(theta0), atol=1e-6)
    for scale in (0.01, 0.3, 3.0):
        for _ in range(5):
            theta = theta0 + scale * jnp.asarray(rng.normal(size=theta0.shape), jnp.float32)
            assert float(loss(theta)) <= float(f_eta(theta)) + 1e-5  # Eq. (2.41)
    # with a too-large eta the bound fails somewhere along the steepest-descent line
    f_big = jax.jit(curvature.surrogate(loss, theta0, 100.0))
    g = jax.grad(loss)(theta0)
    vals = [float(loss(theta0 - t * g)) - float(f_big(theta0 - t * g)) for t in np.linspace(0.5, 5, 10)]
    assert max(vals) > 0


def test_transform_on_a_quadratic_is_the_exact_rule():
    A = jnp.diag(jnp.array([4.0, 1.0, 0.5]))
    loss = lambda p: 0.5 * p @ A @ p  # noqa: E731
    opt = curvature.hessian_bounded_sgd(safety=1.0, num_iters=200, tol=1e-9)
    params = jnp.array([1.0, 1.0, 1.0])
    state = opt.init(params)
    updates, state = opt.update(jax.grad(loss)(params), state, params, value_fn=loss)
    np.testing.assert_allclose(updates, -jax.grad(loss)(params) / 4.0, rtol=1e-5)
    np.testing.assert_allclose(float(state[0].eigenvalue), 4.0, rtol=1e-5)


def test_transform_compiles_once_and_chains():
    rng = np.random.default_rng(0)
    params, data, _, _ = _ising_problem(rng, n=6)
    opt = optax.chain(optax.clip_by_global_norm(10.0), curvature.scale_by_hessian_bound(safety=0.9),
                      optax.scale(-1.0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        loss = lambda p: ising.nll(p, data)  # noqa: E731
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params, value_fn=loss)
        return optax.apply_updates(params, updates), state, value

    p = ising.init(jax.random.key(0), 6)
    state = opt.init(p)
    losses = []
    for _ in range(10):
        p, state, value = step(p, state)
        losses.append(float(value))
    assert losses[-1] < losses[0]


def test_every_reestimates_only_on_schedule():
    A = jnp.diag(jnp.array([3.0, 1.0]))
    loss = lambda p: 0.5 * p @ A @ p  # noqa: E731
    opt = curvature.scale_by_hessian_bound(every=3, num_iters=50)
    params = jnp.array([1.0, -1.0])
    state = opt.init(params)
    hvps = []
    for _ in range(7):
        _, state = opt.update(jax.grad(loss)(params), state, params, value_fn=loss)
        hvps.append(int(state.num_hvps))
    assert [h > 0 for h in hvps] == [True, False, False, True, False, False, True]


def test_hessian_bounded_sgd_in_the_scan_driver_float64(x64):
    A = jnp.asarray(np.diag([2.0, 0.5]))
    loss = lambda p: 0.5 * p @ A @ p  # noqa: E731
    params, hist = optim.run(curvature.hessian_bounded_sgd(safety=1.0, every=5), loss, jnp.array([1.0, 1.0]), 30)
    assert params.dtype == jnp.float64 and hist.loss.dtype == jnp.float64
    assert float(hist.loss[-1]) < 1e-6 * float(hist.loss[0])


def test_run_returns_run_info_resumes_safeguards_and_vmaps():
    A = jnp.diag(jnp.array([2.0, 0.5]))
    loss = lambda p, s: 0.5 * s * p @ A @ p  # noqa: E731
    p0 = jnp.array([1.0, 1.0])
    _, info = optim.run(optax.sgd(0.1), loss, p0, 10, 1.0)
    assert isinstance(info, optim.RunInfo) and info.loss.shape == info.grad_max_abs.shape == (10,)
    assert info.metrics is None and info.accepted is None
    # resuming from info.opt_state continues the run (Adam's moments carried over)
    whole, info_whole = optim.run(optax.adam(0.1), loss, p0, 20, 1.0)
    half, info_half = optim.run(optax.adam(0.1), loss, p0, 10, 1.0)
    resumed, info_resumed = optim.run(optax.adam(0.1), loss, half, 10, 1.0, opt_state=info_half.opt_state)
    np.testing.assert_allclose(resumed, whole, rtol=1e-6)
    np.testing.assert_allclose(info_resumed.loss, info_whole.loss[10:], rtol=1e-6)
    # eta = 1.2 > 2 / lambda_max = 1: plain descent diverges, the safeguard never lets the loss rise
    _, plain = optim.run(optax.sgd(1.2), loss, p0, 10, 1.0)
    assert np.any(np.diff(np.asarray(plain.loss)) > 0)
    _, safe = optim.run(optax.sgd(1.2), loss, p0, 10, 1.0, safeguard=True)
    assert safe.accepted.shape == (10,) and not bool(np.all(safe.accepted))
    assert np.all(np.diff(np.asarray(safe.loss)) <= 0)
    # a vmap over learning rates (and over the loss's arguments) is one compiled call
    lrs = jnp.asarray([0.05, 0.1, 0.2])
    swept = jax.jit(jax.vmap(lambda lr: optim.run(optax.sgd(lr), loss, p0, 10, 1.0)[1].loss))(lrs)
    for lr, curve in zip(lrs, swept):
        np.testing.assert_allclose(curve, optim.run(optax.sgd(float(lr)), loss, p0, 10, 1.0)[1].loss, rtol=1e-6)
    with pytest.raises(ValueError, match="^safeguard must be True or False"):
        optim.run(optax.sgd(0.1), loss, p0, 2, 1.0, safeguard=1)
    for bad in (optax.sgd(0.1).init(p0), optax.adam(0.1).init(jnp.ones(3))):  # another optimiser, other shapes
        with pytest.raises(ValueError, match="^opt_state must be a state of this optimizer"):
            optim.run(optax.adam(0.1), loss, p0, 2, 1.0, opt_state=bad)


def test_run_with_a_stochastic_objective_is_the_hand_written_loop():
    """key + aux: loss_fn(params, aux, key_t, *args) -> (loss, aux) with key_t the t-th of
    jax.random.split(key, num_steps); a gradient estimate enters via estimated_gradient_loss.
    Checked bit for bit against the plain optax loop, with a carried state (a running count)."""
    target = jnp.array([1.0, -2.0, 0.5])

    def noisy_grad(p, key):  # an unbiased estimate of the gradient of 0.5 |p - target|^2
        return p - target + 0.1 * jax.random.normal(key, p.shape)

    def loss(p, count, key, scale):
        return optim.estimated_gradient_loss(p, scale * noisy_grad(p, key)), count + 1

    p0, opt = jnp.zeros(3), optax.adam(0.1)
    params, info = optim.run(opt, loss, p0, 25, 1.0, key=jax.random.key(0), aux=jnp.int32(0))
    p, state = p0, opt.init(p0)
    for k in jax.random.split(jax.random.key(0), 25):
        updates, state = opt.update(noisy_grad(p, k), state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_array_equal(params, p)
    assert int(info.aux) == 25 and info.loss.shape == (25,)
    # the gradient of estimated_gradient_loss is the estimate itself, held constant
    g = jax.grad(optim.estimated_gradient_loss)(p0, target)
    np.testing.assert_array_equal(g, target)
    with pytest.raises(ValueError, match="^aux is the carried state of a stochastic objective"):
        optim.run(opt, loss, p0, 2, 1.0, aux=jnp.int32(0))
    with pytest.raises(ValueError, match="^safeguard compares losses"):
        optim.run(opt, loss, p0, 2, 1.0, key=jax.random.key(0), aux=jnp.int32(0), safeguard=True)


def test_run_to_a_tolerance_stops_where_the_gradient_is_small():
    """tol: a while_loop that stops before the first step whose gradient max-norm is <= tol.
    sgd(0.5) on 0.5 |p|^2 halves the gradient each step: from max-norm 1 it needs exactly
    ceil(log2(1 / tol)) updates."""
    loss = lambda p: 0.5 * jnp.sum(p**2)  # noqa: E731
    p0 = jnp.array([1.0, -0.5])
    params, info = optim.run(optax.sgd(0.5), loss, p0, 50, tol=1e-3)
    assert int(info.num_updates) == 10 and bool(info.converged)
    np.testing.assert_allclose(params, p0 * 0.5**10)
    np.testing.assert_allclose(info.grad_max_abs[:11], 0.5 ** np.arange(11), rtol=1e-6)
    assert np.all(np.isnan(np.asarray(info.loss[11:])))
    # the iteration limit: not converged, every entry filled
    _, short = optim.run(optax.sgd(0.5), loss, p0, 5, tol=1e-3)
    assert int(short.num_updates) == 5 and not bool(short.converged) and not np.any(np.isnan(short.loss))
    # L-BFGS keeps value and gradient in its state: they are reused (same iterates as optax's loop)
    params, info = optim.run(optax.lbfgs(), lambda p: jnp.sum((p - 2.0) ** 4 + p**2), p0, 100, tol=1e-5)
    assert bool(info.converged) and float(jnp.max(jnp.abs(jax.grad(lambda p: jnp.sum((p - 2.0) ** 4 + p**2))(
        params)))) <= 1e-5
    with pytest.raises(ValueError, match="^tol must be"):
        optim.run(optax.sgd(0.5), loss, p0, 5, tol=-1.0)
    with pytest.raises(ValueError, match="^tol stops a deterministic loss"):
        optim.run(optax.sgd(0.5), loss, p0, 5, tol=1e-3, safeguard=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="safety must be > 0"):
        curvature.scale_by_hessian_bound(safety=0.0)
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        curvature.hessian_bounded_sgd(every=0)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        curvature.max_eigenvalue(lambda p: p * 2, jnp.ones(3))
    with pytest.raises(ValueError, match="method must be"):
        curvature.max_eigenvalue(lambda p: jnp.sum(p**2), jnp.ones(3), method="qr")
    with pytest.raises(ValueError, match="eta must be > 0"):
        curvature.surrogate(lambda p: jnp.sum(p**2), jnp.ones(3), -1.0)
    opt = curvature.scale_by_hessian_bound()
    state = opt.init(jnp.ones(2))
    with pytest.raises(ValueError, match="value_fn must return a scalar"):
        opt.update(jnp.ones(2), state, jnp.ones(2), value_fn=lambda p: p)
    with pytest.raises(ValueError, match="needs params and value_fn"):
        opt.update(jnp.ones(2), state, jnp.ones(2))
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        curvature.ising_smoothness_bound(0)


# ----- issue #12: validation at the entry, convergence warnings, compile once ---------------


def _quadratic(p, scales):
    return 0.5 * jnp.sum(scales * p**2)


def test_power_iteration_warns_when_it_stops_at_num_iters():
    scales = jnp.array([1.0, 0.99, 0.5, 0.1])  # a small spectral gap: slow power iteration
    with pytest.warns(ConvergenceWarning, match="num_iters=3"):
        curvature.max_eigenvalue(_quadratic, jnp.ones(4), scales, num_iters=3, tol=1e-12)
    # Lanczos warns too where its Ritz pair's residual is above sqrt(tol) |lam| (2 steps of 4)
    with pytest.warns(ConvergenceWarning, match="after 2 Lanczos steps"):
        curvature.max_eigenvalue(_quadratic, jnp.ones(4), scales, method="lanczos", num_iters=2)
    # converged (or dense, which has no tolerance): no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        lam, _ = curvature.max_eigenvalue(_quadratic, jnp.ones(4), jnp.array([1.0, 0.1, 0.1, 0.1]), num_iters=200,
                                          tol=1e-6)
        np.testing.assert_allclose(lam, 1.0, rtol=1e-5)
        curvature.max_eigenvalue(_quadratic, jnp.ones(4), scales, method="lanczos", num_iters=4)
        curvature.max_eigenvalue(_quadratic, jnp.ones(4), scales, method="dense")


def test_max_eigenvalue_and_friends_validate_arguments():
    p, scales = jnp.ones(3), jnp.array([1.0, 2.0, 3.0])
    for kw, name in ((dict(num_iters=2.5), "num_iters"), (dict(num_iters=0), "num_iters"), (dict(tol=-1.0), "tol"),
                     (dict(tol=np.nan), "tol"), (dict(which="middle"), "which"),
                     (dict(init_eigenvalue=np.nan), "init_eigenvalue"), (dict(init_vector=jnp.zeros(3)), "init_vector"),
                     (dict(init_vector=jnp.ones(4)), "init_vector")):
        with pytest.raises(ValueError, match=name):
            curvature.max_eigenvalue(_quadratic, p, scales, **kw)
    with pytest.raises(ValueError, match="params contains 1 NaN"):
        curvature.max_eigenvalue(_quadratic, p.at[0].set(jnp.nan), scales)
    with pytest.raises(ValueError, match="params must hold at least one"):
        curvature.max_eigenvalue(_quadratic, jnp.zeros(0), scales)
    with pytest.raises(ValueError, match="loss_fn must be a callable"):
        curvature.max_eigenvalue("loss", p)
    with pytest.raises(ValueError, match="vector must be a pytree with the structure and shapes of params"):
        curvature.hvp(_quadratic, p, jnp.ones(2), scales)
    for kw, name in ((dict(tol=0.0), "tol"), (dict(num_iters=1.5), "num_iters"), (dict(eigenvalue_floor=-1.0),
                                                                                  "eigenvalue_floor"),
                     (dict(safety=np.nan), "safety"), (dict(every=2.5), "every")):
        with pytest.raises(ValueError, match=name):
            curvature.scale_by_hessian_bound(**kw)
    with pytest.raises(ValueError, match="n must be an integer"):
        curvature.ising_smoothness_bound(2.5)
    with pytest.raises(ValueError, match="eta must be"):
        curvature.surrogate(_quadratic, p, np.inf, scales)
    with pytest.raises(ValueError, match="num_steps must be an integer"):
        optim.run(optax.sgd(0.1), _quadratic, p, 2.5, scales)
    with pytest.raises(ValueError, match="optimizer must be an optax GradientTransformation"):
        optim.run("sgd", _quadratic, p, 2, scales)
    # NumPy parameters are accepted (a list is a pytree of leaves, as everywhere in JAX)
    lam, _ = curvature.max_eigenvalue(lambda q: jnp.sum(jnp.asarray([1.0, 2.0]) * q**2), np.ones(2), method="dense")
    np.testing.assert_allclose(lam, 4.0, rtol=1e-6)


def test_eager_calls_compile_once():
    """max_eigenvalue and the optax driver, called eagerly with a new closure, new values
    and a new optimiser object of the same shapes, compile nothing the second time."""

    def calls(seed):
        rng = np.random.default_rng(seed)
        scales = jnp.asarray(rng.uniform(0.5, 2.0, 5), jnp.float32)
        p = jnp.asarray(rng.normal(size=5), jnp.float32)
        loss = lambda q: _quadratic(q, scales)  # noqa: E731 - a new closure each time
        return {
            "power": lambda: curvature.max_eigenvalue(loss, p, num_iters=20, tol=1e-2),
            "lanczos": lambda: curvature.max_eigenvalue(_quadratic, p, scales, method="lanczos", num_iters=4),
            "dense": lambda: curvature.max_eigenvalue(loss, p, method="dense"),
            "optim.run": lambda: optim.run(optax.sgd(0.1), loss, p, 5),
            "hessian_bounded_sgd": lambda: optim.run(curvature.hessian_bounded_sgd(), _quadratic, p, 3, scales),
            "optim.run tol": lambda: optim.run(optax.lbfgs(), loss, p, 20, tol=1e-4),
            "optim.run key": lambda: optim.run(
                optax.sgd(0.1), lambda q, a, k: (optim.estimated_gradient_loss(q, q * scales + jax.random.normal(
                    k, q.shape)), a + 1), p, 5, key=jax.random.key(seed), aux=jnp.int32(0)),
        }

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _assert_compiles_once(calls(1), calls(2))


def test_dense_method_refuses_a_hessian_over_its_memory_budget():
    """method="dense" on 1e5 parameters asked XLA for a 40 GB Hessian and died out of memory."""
    with pytest.raises(ValueError, match=r'method="dense" needs the full 100000 x 100000 Hessian.*"lanczos"'):
        curvature.max_eigenvalue(lambda t: jnp.sum(t**2), jnp.ones(100_000), method="dense")


def test_run_names_what_jax_grad_refuses():
    """A vector loss, integer params, empty params or a stochastic loss without its aux were
    TypeErrors from inside jax.grad (or NumPy's "zero-size array")."""
    sgd = optax.sgd(0.1)
    with pytest.raises(ValueError, match="loss_fn must return a real scalar; it returned \\(3,\\)"):
        optim.run(sgd, lambda p: p**2, jnp.ones(3), 2)
    with pytest.raises(ValueError, match="params must hold floating arrays"):
        optim.run(sgd, lambda p: jnp.sum(p**2), jnp.ones(3, jnp.int32), 2)
    for empty in (jnp.ones(0), {}):
        with pytest.raises(ValueError, match="params must hold at least one entry"):
            optim.run(sgd, lambda p: jnp.sum(p**2), empty, 2)
    with pytest.raises(ValueError, match="must return \\(loss, aux\\)"):
        optim.run(sgd, lambda p, a, k: jnp.sum(p**2), jnp.ones(3), 2, key=jax.random.key(0), aux=0.0)
    with pytest.raises(ValueError, match="grads must be a pytree like params"):
        optim.estimated_gradient_loss(jnp.ones(3), jnp.ones(4))
    np.testing.assert_allclose(optim.run(sgd, lambda p: jnp.sum(p**2), jnp.ones(3), 2)[0], 0.64, rtol=1e-6)


# ------------------------------------------------------- what a probe found (2026-11-30)


def _rotated(spectrum, seed=0, dtype=jnp.float32):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(spectrum), len(spectrum))))
    H = (q * np.asarray(spectrum, np.float64)) @ q.T
    H = jnp.asarray((H + H.T) / 2, dtype)
    return (lambda x: 0.5 * x @ H @ x), jnp.zeros(len(spectrum), dtype), np.linalg.eigvalsh(np.asarray(H, np.float64))


def test_power_iteration_where_the_two_ends_have_one_magnitude():
    """On a saddle (spectrum +-1) the Rayleigh quotient stalls anywhere in between, which the
    old stopping rule took for convergence (0.52, 0.98 or -0.84 for the extremes +-1)."""
    for key in range(4):
        for which, want in (("largest", 1.0), ("smallest", -1.0)):
            lam, _, info = curvature.max_eigenvalue(lambda p: p[0] * p[1], jnp.array([0.3, -0.2]),
                                                    key=jax.random.key(key), which=which, return_info=True)
            assert bool(info.converged)
            np.testing.assert_allclose(lam, want, rtol=1e-5)
    loss, start, eig = _rotated([2.0, -2.0, 1.0, -1.0, 0.5, 0.1])
    for key in range(3):
        for which, want in (("largest", eig[-1]), ("smallest", eig[0])):
            lam, _ = curvature.max_eigenvalue(loss, start, key=jax.random.key(key), which=which)
            np.testing.assert_allclose(lam, want, rtol=1e-5)


def test_power_iteration_at_a_slowly_converging_end_warns_instead_of_claiming_convergence(x64):
    """The smallest of diag(10, 0.001, ..., 0.004) converges at a rate 0.9999 after the shift:
    the old rule stopped after 7 HVPs at 0.0019 as converged."""
    H = jnp.diag(jnp.array([10.0, 0.001, 0.002, 0.003, 0.004]))
    with pytest.warns(ConvergenceWarning, match="power iteration stopped at num_iters=100"):
        _, _, info = curvature.max_eigenvalue(lambda x: 0.5 * x @ H @ x, jnp.zeros(5), which="smallest",
                                              return_info=True)
    assert not bool(info.converged)
    lam, _ = curvature.max_eigenvalue(lambda x: 0.5 * x @ H @ x, jnp.zeros(5), which="smallest", method="lanczos")
    np.testing.assert_allclose(lam, 0.001, rtol=1e-10)


def test_lanczos_after_a_breakdown_returns_a_unit_eigenvector():
    """A Hessian 2I (or 0) is invariant on the first Krylov vector: the padding of T tied with
    the top Ritz value and returned its zero vector as the unit eigenvector."""
    for scale, want in ((1.0, 2.0), (0.0, 0.0)):
        loss = lambda p, s=scale: s * jnp.sum(p**2)  # noqa: E731
        lam, v = curvature.max_eigenvalue(loss, jnp.zeros(4), method="lanczos")
        np.testing.assert_allclose(lam, want, atol=1e-6)
        np.testing.assert_allclose(jnp.linalg.norm(v), 1.0, rtol=1e-6)
        curvature.max_eigenvalue(loss, jnp.zeros(4), method="lanczos", init_vector=v)  # usable as a warm start


def test_lanczos_in_float32_resolves_a_cluster_far_below_the_top():
    """The breakdown threshold (1e3 eps of the scale of H) cut off eigenvalues 1e6 times below
    the top in float32 (0.0019 for 0.0010, 0.0070 for 0.0090); within rounding of H now."""
    for spectrum, which, end in (([1000.0] + [k * 1e-3 for k in range(1, 10)], "smallest", 0),
                                 ([-1000.0] + [k * 1e-3 for k in range(1, 10)], "largest", -1)):
        loss, start, eig = _rotated(spectrum)
        lam, _ = curvature.max_eigenvalue(loss, start, method="lanczos", num_iters=10, which=which)
        assert abs(float(lam) - eig[end]) <= np.finfo(np.float32).eps * 1000, (float(lam), eig[end])


def test_hessian_bounded_sgd_on_a_non_convex_loss_takes_a_bounded_step():
    """The dominant eigenvalue here is negative (-1.97): floored to 1e-8 it gave a step of 1e8
    times the gradient (the loss went from 0.09 to 4e28); the spectral radius bounds it."""
    loss = lambda p: 0.1 * p[0] ** 2 - p[1] ** 2 + 0.25 * p[1] ** 4  # noqa: E731
    p = jnp.array([1.0, 0.1])
    opt = curvature.hessian_bounded_sgd()
    updates, state = opt.update(jax.grad(loss)(p), opt.init(p), p, value_fn=loss)
    np.testing.assert_allclose(state[0].eigenvalue, 1.97, rtol=1e-4)  # max |eig diag(0.2, -1.97)|
    np.testing.assert_allclose(updates, -jax.grad(loss)(p) / 1.97, rtol=1e-4)
    assert float(loss(p + updates)) < float(loss(p))


def _warm_case(sign):
    """Eigenvalues 0.99, 2, ..., 10 rotated so that |H e1| = 1 (a review's construction)."""
    lams = np.r_[0.99, np.arange(2.0, 11.0)]
    th = np.arcsin(np.sqrt((1 - 0.99**2) / (100 - 0.99**2)))
    q = np.eye(10)
    q[[0, 0, 9, 9], [0, 9, 0, 9]] = [np.cos(th), -np.sin(th), np.sin(th), np.cos(th)]
    H = jnp.asarray(sign * (q * lams) @ q.T, jnp.float32)
    return lambda p: 0.5 * p @ H @ p


def test_power_iteration_warm_started_at_the_requested_end():
    """A previous eigenvalue at the requested end once stood in for the spectral radius: the
    shifted pass was then not positive semi-definite and returned the other end (10 for 0.99),
    marked converged."""
    e1 = jnp.zeros(10).at[0].set(1.0)
    for sign, which in ((1.0, "smallest"), (-1.0, "largest")):
        lam, _, info = curvature.max_eigenvalue(_warm_case(sign), jnp.zeros(10), which=which, init_vector=e1,
                                                init_eigenvalue=sign * 1.0, return_info=True)
        assert bool(info.converged)
        np.testing.assert_allclose(lam, sign * 0.99, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_power_iteration_converges_to_a_zero_eigenvalue(dtype, x64):
    ev = jnp.asarray([0.0, 1.0, 2.0, 4.0], dtype)  # a flat direction: the smallest eigenvalue is 0
    lam, _, info = curvature.max_eigenvalue(lambda p: 0.5 * jnp.sum(ev * p * p), jnp.ones(4, dtype), which="smallest",
                                            return_info=True)
    assert bool(info.converged)
    assert abs(float(lam)) <= 1e-5 * 4.0


def test_lanczos_does_not_claim_convergence_where_a_breakdown_hid_a_residual():
    ev = jnp.asarray(np.r_[1e6, np.linspace(1.0, 2.0, 30)], jnp.float32)  # float32, condition number 1e6
    with pytest.warns(ConvergenceWarning, match="Lanczos steps"):
        lam, _, info = curvature.max_eigenvalue(lambda p: 0.5 * jnp.sum(ev * p * p), jnp.ones(31), which="smallest",
                                                method="lanczos", return_info=True)
    assert not bool(info.converged)
