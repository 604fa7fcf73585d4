"""jaxebm: a JAX functional research library for energy-based models.

Submodules follow the chapters of the lecture notes ``notes/lecture-notes-2025-01.md``:
``enumeration`` (exact ground truth), ``divergence`` and ``gaussian`` (ch. 1-2.4),
``ising`` (ch. 2.5).
"""

from jaxebm import divergence, enumeration, gaussian, ising, types
from jaxebm.ising import IsingParams

__version__ = "0.1.0"

__all__ = ["IsingParams", "divergence", "enumeration", "gaussian", "ising", "types", "__version__"]
