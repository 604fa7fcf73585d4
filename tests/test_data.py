"""The bundled data sets: shapes, values, determinism and argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import data, gmm, ising


def test_two_d_mixture_samples_the_notes_mixture():
    params = data.two_d_mixture_params()
    np.testing.assert_allclose(params.weights, [0.3, 0.45, 0.25])
    assert params.means.shape == (3, 2) and params.covs.shape == (3, 2, 2)
    key = jax.random.key(0)
    x, labels = data.two_d_mixture(key, 4000)
    assert x.shape == (4000, 2) and labels.shape == (4000,)
    same_x, _ = gmm.sample(key, params, 4000)
    np.testing.assert_array_equal(x, same_x)  # a thin wrapper: the experiments' numbers are unchanged
    # component frequencies within 4 binomial standard errors of the weights
    counts = np.bincount(np.asarray(labels), minlength=3) / 4000
    se = np.sqrt(np.asarray(params.weights) * (1 - np.asarray(params.weights)) / 4000)
    assert np.all(np.abs(counts - np.asarray(params.weights)) <= 4 * se)


def test_exact_ising_samples_are_spins_from_the_model():
    params = ising.IsingParams(h=jnp.array([0.5, -0.2, 0.0]),
                               J=jnp.array([[0.0, 0.3, 0.0], [0.3, 0.0, -0.4], [0.0, -0.4, 0.0]]))
    key = jax.random.key(1)
    x = data.exact_ising_samples(key, params, 20_000)
    assert x.shape == (20_000, 3) and set(np.unique(np.asarray(x))) == {-1.0, 1.0}
    np.testing.assert_array_equal(x, ising.sample_exact(key, params, 20_000))
    mean, _ = ising.moments(params)
    # each spin's mean within 4 standard errors sqrt((1 - m^2) / N)
    se = np.sqrt((1 - np.asarray(mean) ** 2) / 20_000)
    assert np.all(np.abs(np.asarray(x).mean(0) - np.asarray(mean)) <= 4 * se)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_counts_are_validated(n):
    params = ising.IsingParams(h=jnp.zeros(2), J=jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="n must be"):
        data.two_d_mixture(jax.random.key(0), n)
    with pytest.raises(ValueError, match="n must be"):
        data.exact_ising_samples(jax.random.key(0), params, n)


def test_train_test_split_is_a_seeded_partition():
    x, y = np.arange(20).reshape(10, 2), np.arange(10)
    x_train, x_test, y_train, y_test = data.train_test_split(x, y, train_fraction=0.8, seed=3)
    assert x_train.shape == (8, 2) and x_test.shape == (2, 2)
    np.testing.assert_array_equal(x_train[:, 0] // 2, y_train)  # rows stay paired across arrays
    assert sorted(np.concatenate([y_train, y_test]).tolist()) == list(range(10))
    again = data.train_test_split(x, y, train_fraction=0.8, seed=3)
    np.testing.assert_array_equal(again[2], y_train)
    perm = np.random.default_rng(3).permutation(10)
    np.testing.assert_array_equal(y_train, perm[:8])


@pytest.mark.parametrize(("arrays", "kwargs", "match"), [
    ((), {}, "at least one array"),
    ((np.zeros(4), np.zeros(5)), {}, "same number of rows"),
    ((np.zeros(4),), {"train_fraction": 0.0}, "train_fraction"),
    ((np.zeros(4),), {"train_fraction": 1.5}, "train_fraction"),
    ((np.zeros(4),), {"train_fraction": 0.1}, "empty part"),
    ((np.zeros(4),), {"seed": -1}, "seed"),
])
def test_train_test_split_refuses_bad_arguments(arrays, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.train_test_split(*arrays, **kwargs)


def test_digits_as_pm1_spins():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    x, labels = data.digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32 and labels.shape == (1797,)
    assert set(np.unique(x)) == {-1.0, 1.0}
    np.testing.assert_array_equal(x == 1.0, load_digits().data > 7)
    assert set(np.unique(labels)) == set(range(10))
    with pytest.raises(ValueError, match="threshold"):
        data.digits(threshold=float("nan"))
    assert data.digits(dtype=np.float64)[0].dtype == np.float64


@pytest.mark.parametrize("dtype", [np.uint8, bool, np.int32, np.complex64, "foo"])
def test_non_float_dtypes_are_refused(dtype):
    """An unsigned dtype wrapped -1 to 255, bool made every spin True, an integer dtype
    rounded the mixture weights to 0."""
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        data.two_d_mixture_params(dtype=dtype)
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        data.digits(dtype=dtype)  # refused before scikit-learn is needed


def test_exact_samples_take_a_time_budget():
    params = ising.init(jax.random.key(0), 40, 0.1)
    with pytest.raises(ValueError, match=r"2\^40 .*max_seconds=600"):
        data.exact_ising_samples(jax.random.key(1), params, 3)
    small = ising.init(jax.random.key(0), 12, 0.1)
    with pytest.raises(ValueError, match="max_seconds=1e-09"):
        data.exact_ising_samples(jax.random.key(1), small, 3, max_seconds=1e-9)
    assert data.exact_ising_samples(jax.random.key(1), small, 3, max_seconds=60).shape == (3, 12)


def test_wine_standardised_and_projected():
    pytest.importorskip("sklearn")
    x, labels = data.wine()
    assert x.shape == (178, 13) and set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(x.std(0), 1.0, rtol=1e-12)
    pcs, _ = data.wine(principal_components=2)
    assert pcs.shape == (178, 2)
    # principal components are uncorrelated, in decreasing order of variance, and carry the
    # largest share of the variance any two directions can
    cov = np.cov(pcs.T)
    assert abs(cov[0, 1]) < 1e-10 and cov[0, 0] >= cov[1, 1]
    top2 = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[-2:]
    np.testing.assert_allclose(np.sort(np.diag(cov)), top2, rtol=1e-10)
    for bad in (0, 14, 1.5):
        with pytest.raises(ValueError, match="principal_components"):
            data.wine(principal_components=bad)


def test_missing_sklearn_names_the_experiments_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    for loader in (data.digits, data.wine):
        with pytest.raises(ImportError, match=r"experiments"):
            loader()
