r"""The bundled data sets of the experiments: synthetic data from known models and two small
real data sets that ship with scikit-learn (no download).

* :func:`digits`: scikit-learn's 8x8 handwritten digits binarised to +-1 spins (ch. 4).
* :func:`wine`: scikit-learn's wine measurements, standardised, optionally projected on
  their first principal components (ch. 3).
* :func:`two_d_mixture`: samples of the notes' 3-component 2-D Gaussian mixture of Figure 4
  (ch. 3), whose parameters :func:`two_d_mixture_params` returns.
* :func:`exact_ising_samples`: independent exact samples of a small Ising model (ch. 2, 6, 7).
* :func:`train_test_split`: a seeded random split of the rows of one or more arrays.

The real data sets are host (NumPy) arrays, the synthetic ones JAX arrays; ``jnp.asarray``
converts either way. scikit-learn is an optional dependency (the ``experiments`` extra):
it is imported only inside :func:`digits` and :func:`wine`.
"""

from __future__ import annotations

import numpy as np

from jaxebm import gmm, ising
from jaxebm._enum.codes import float_dtype
from jaxebm._validation import count, finite_scalar, prng_key
from jaxebm.types import Array, PRNGKey

__all__ = [
    "digits",
    "exact_ising_samples",
    "train_test_split",
    "two_d_mixture",
    "two_d_mixture_params",
    "wine",
]


def _sklearn_datasets():
    try:
        from sklearn import datasets
    except ImportError:
        raise ImportError(
            "jaxebm.data.digits and jaxebm.data.wine load data sets bundled with scikit-learn, which is not "
            'installed; install the experiments extra: pip install -e ".[experiments]" (or pip install '
            "scikit-learn).") from None
    return datasets


def digits(*, threshold: float = 7.0, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    r"""scikit-learn's 8x8 digits (1797 images, grey levels 0-16) as +-1 spins.

    Pixel :math:`k` becomes :math:`x_k = +1` where its grey level exceeds ``threshold`` and
    :math:`-1` elsewhere.

    Args:
      threshold: grey level (finite) above which a pixel is +1; the default 7 splits the
        0-16 range in the middle.
      dtype: floating dtype of the spins.

    Returns:
      ``(x (1797, 64), labels (1797,))``: NumPy spins in {-1, +1} (row-major 8x8 images) and
      the digit classes 0-9.
    """
    threshold = finite_scalar("threshold", threshold)
    dtype = float_dtype(dtype)  # an unsigned or bool dtype would wrap or lose the -1 spins
    bunch = _sklearn_datasets().load_digits()
    x = np.where(bunch.data > threshold, 1.0, -1.0).astype(dtype)
    return x, np.asarray(bunch.target)


def wine(*, principal_components: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    r"""scikit-learn's wine data (178 wines, 13 measurements, 3 cultivars), standardised.

    Each column is centred and divided by its (population, ``ddof=0``) standard deviation.
    With ``principal_components = p`` the standardised data are projected on their first
    ``p`` principal axes (the right singular vectors of the standardised matrix).

    Args:
      principal_components: ``None`` (all 13 standardised columns) or an integer in 1..13.

    Returns:
      ``(x (178, 13 or p), labels (178,))`` as float64 NumPy arrays and the cultivars 0-2.
    """
    bunch = _sklearn_datasets().load_wine()
    x = (bunch.data - bunch.data.mean(0)) / bunch.data.std(0)
    if principal_components is not None:
        p = count("principal_components", principal_components)
        if p > x.shape[1]:
            raise ValueError(f"principal_components must be at most {x.shape[1]} (the number of measurements); "
                             f"got {p}.")
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        x = x @ vt[:p].T
    return x, np.asarray(bunch.target)


def two_d_mixture_params(dtype=None) -> gmm.GMMParams:
    r"""The notes' Figure 4 mixture: 3 full-covariance components in 2-D (Eq. (3.48)).

    Weights (0.3, 0.45, 0.25); means (-2, 1.5), (1.5, 0.5), (0, -2.5); covariances
    [[0.6, 0.3], [0.3, 0.5]], [[0.8, -0.4], [-0.4, 0.6]], [[0.4, 0], [0, 0.9]]. The
    components overlap enough that EM from a random start visibly moves its ellipses.
    """
    import jax.numpy as jnp

    dtype = None if dtype is None else float_dtype(dtype)  # integer weights would round to 0
    return gmm.GMMParams(
        weights=jnp.array([0.3, 0.45, 0.25], dtype),
        means=jnp.array([[-2.0, 1.5], [1.5, 0.5], [0.0, -2.5]], dtype),
        covs=jnp.array([[[0.6, 0.3], [0.3, 0.5]], [[0.8, -0.4], [-0.4, 0.6]], [[0.4, 0.0], [0.0, 0.9]]], dtype),
        covariance_type="full",
    )


def two_d_mixture(key: PRNGKey, n: int) -> tuple[Array, Array]:
    r"""``n`` samples of the notes' 2-D mixture (:func:`two_d_mixture_params`).

    Args:
      key: PRNG key.
      n: number of samples, a positive integer.

    Returns:
      ``(x (n, 2), components (n,))``: the points and the component that drew each.
    """
    key = prng_key("key", key)
    return gmm.sample(key, two_d_mixture_params(), count("n", n))


def exact_ising_samples(key: PRNGKey, params: ising.IsingParams, n: int, *,
                        max_seconds: float | None = None) -> Array:
    r"""``n`` independent exact samples :math:`x \sim q_\theta` of a small Ising model
    (Eq. (2.28)), by enumeration (:func:`jaxebm.ising.sample_exact`, up to about 34 spins).

    Args:
      key: PRNG key.
      params: the model.
      n: number of samples, a positive integer.
      max_seconds: the time budget of the enumeration (as :func:`jaxebm.ising.sample_exact`).

    Returns:
      ``Float[Array, "n num_spins"]`` spins in {-1, +1}.
    """
    return ising.sample_exact(key, params, count("n", n), max_seconds=max_seconds)


def train_test_split(*arrays, train_fraction: float = 0.8, seed: int = 0) -> tuple[np.ndarray, ...]:
    r"""A seeded random split of the rows of ``arrays`` (all with the same number of rows).

    The rows are permuted by ``np.random.default_rng(seed).permutation``; the first
    ``int(train_fraction * rows)`` go to the training part.

    Args:
      arrays: one or more arrays with equal leading dimensions.
      train_fraction: in (0, 1); both parts must be non-empty.
      seed: integer seed of the permutation.

    Returns:
      ``(train_1, test_1, train_2, test_2, ...)`` as NumPy arrays.
    """
    if not arrays:
        raise ValueError("train_test_split needs at least one array.")
    train_fraction = finite_scalar("train_fraction", train_fraction, minimum=0.0, maximum=1.0, strict=True)
    hosts = [np.asarray(a) for a in arrays]
    rows = {a.shape[0] if a.ndim else None for a in hosts}
    if len(rows) != 1 or None in rows:
        raise ValueError(f"the arrays must all have the same number of rows; got shapes {[a.shape for a in hosts]}.")
    num = rows.pop()
    cut = int(train_fraction * num)
    if not 0 < cut < num:
        raise ValueError(f"train_fraction {train_fraction} leaves an empty part of {num} rows.")
    perm = np.random.default_rng(count("seed", seed, minimum=0)).permutation(num)
    out = []
    for a in hosts:
        out += [a[perm[:cut]], a[perm[cut:]]]
    return tuple(out)
