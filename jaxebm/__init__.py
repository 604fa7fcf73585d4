"""jaxebm: a JAX functional research library for energy-based models.

Submodules follow the chapters of the lecture notes ``notes/lecture-notes-2025-01.md``:
``enumeration`` (exact ground truth) and ``kernels`` (its fused Pallas kernels),
``divergence`` and ``gaussian`` (ch. 1-2.4), ``ising`` (ch. 2.5), ``curvature`` and ``optim``
(ch. 2.6), ``gmm`` (ch. 3), ``rbm`` (ch. 4), ``mcmc`` (ch. 5-6), ``inverse`` (ch. 7);
``data`` holds the experiments' data sets; ``graphs`` (sparse structure: lattices, colourings,
elimination orders) and ``elimination`` (exact answers on narrow graphs) serve sparse models.
"""

from jaxebm import (
    curvature,
    data,
    divergence,
    elimination,
    enumeration,
    gaussian,
    gmm,
    graphs,
    inverse,
    ising,
    kernels,
    mcmc,
    optim,
    rbm,
    types,
)
from jaxebm.ising import IsingParams

__version__ = "0.1.0"

__all__ = ["IsingParams", "curvature", "data", "divergence", "elimination", "enumeration", "gaussian", "gmm",
           "graphs", "inverse", "ising", "kernels", "mcmc", "optim", "rbm", "types", "__version__"]
