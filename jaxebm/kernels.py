r"""Fused Pallas kernels for the split enumerators (issue #8).

The XLA split engine (:mod:`jaxebm.enumeration`) writes each chunk's ``(C, 2^|B|)`` tile of
log weights to memory, reads it back for the ``exp`` and again for the reduction. These
kernels keep the tile on chip: each program owns ``tile_rows`` outer states, walks the
``2^|B|`` inner states in tiles of ``tile_inner``, and keeps an online (flash-attention
style) log-sum-exp, so memory traffic is ``O(|B|)`` per *outer* state instead of ``O(1)``
per state.

For a tile with log weights :math:`L_{ij} = u_i \cdot s_j + f^A_i + f^B_j` the program keeps
one running maximum :math:`m` and updates

.. math:: r_i \leftarrow r_i e^{m_{old} - m} + \sum_j e^{L_{ij} - m}, \qquad
          o_i \leftarrow o_i e^{m_{old} - m} + \sum_j e^{L_{ij} - m} s_j

and, for the inner marginal, emits each tile's column sums :math:`\sum_i e^{L_{ij} - m}`
with their shift :math:`m`. One shift per program is enough: a term more than ~87 below the
program maximum (itself below the global maximum) is below float32 resolution of :math:`Z`.

Engines (``engine=`` of :func:`jaxebm.enumeration.pairwise_log_partition`,
:func:`jaxebm.enumeration.pairwise_moments` and :func:`jaxebm.rbm.log_partition`):

* ``"xla"``: the unfused XLA path (any backend);
* ``"pallas"``: these kernels; compiled with Triton on CUDA GPUs, run with ``interpret=True``
  elsewhere (slow: for testing the kernel's logic on CPU). The choice is made per platform at
  lowering time (``lax.platform_dependent``), so exporting for CUDA from a CPU-only machine
  runs the real Triton lowering; the test suite does exactly that;
* ``"auto"`` (default): ``"pallas"`` on GPU when a one-time probe compiles and agrees with
  XLA, otherwise ``"xla"``.

Matmuls inside the kernels use ``Precision.HIGHEST``, which Triton lowers to IEEE float32
(never TF32). Block shapes are powers of two; the contraction width is padded to 16.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm._numerics import HIGHEST, log2cosh
from jaxebm._validation import check_ndim, choice, count

ENGINES = ("auto", "xla", "pallas")

#: Default tile sizes (rows = outer states per program, inner = inner states per step).
TILE_ROWS = 64
TILE_INNER = 256
#: Units of the summed layer per step of the RBM kernel (the other layer is zero-padded to a multiple).
RBM_TILE_UNITS = 32
#: Contraction widths are padded to a multiple of this (Triton's minimum dot size).
PAD = 16


def _pl():
    from jax.experimental import pallas as pl  # imported lazily: nothing heavy at import time

    return pl


def _triton(num_warps: int = 4):
    """Selects the Triton backend explicitly (newer JAX defaults GPU Pallas to Mosaic GPU,
    which copies whole blocks to shared memory; these kernels index large blocks in place)."""
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=num_warps)


def padded(k: int) -> int:
    """Contraction width ``k`` rounded up to a multiple of :data:`PAD` (at least ``PAD``)."""
    k = count("k", k, minimum=0)
    return max(PAD, -(-k // PAD) * PAD)


def _check_operands(names_shapes):
    """Shape checks at trace time: ``(name, array, ndim, {axis: (size, what)})``."""
    arrays = []
    for name, x, ndim, sizes in names_shapes:
        check_ndim(name, x, ndim, f"a {ndim}-d array")
        for axis, (size, what) in sizes.items():
            if x.shape[axis] != size:
                raise ValueError(f"{name} must have {size} entries along axis {axis} ({what}); got shape {x.shape}.")
        arrays.append(x)
    for (name, *_), x in zip(names_shapes, arrays):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be a floating array; got dtype {x.dtype}.")


def _tile(name: str, value: int) -> int:
    value = count(name, value)
    if value & (value - 1):
        raise ValueError(f"{name} must be a power of two; got {value}.")
    return value


def _call(build, args, interpret: bool | None):
    """Runs ``build(interpret)(*args)``. With ``interpret=None`` the choice is made per platform
    when lowering (``lax.platform_dependent``): compiled (Triton) on CUDA, interpreted elsewhere,
    so the same jitted function also exports correctly for another platform."""
    if interpret is not None:
        return build(interpret)(*args)
    return lax.platform_dependent(*args, cuda=build(False), rocm=build(False), default=build(True))


# --------------------------------------------------------------------------------------
# Pairwise (Ising) split enumeration
# --------------------------------------------------------------------------------------


def _pairwise_kernel(u_ref, fo_ref, s_ref, fi_ref, *out_refs, tile_inner, num_tiles, with_moments):
    pl = _pl()
    u = u_ref[...]  # (TA, K) cross coefficients of this program's outer states
    fo = fo_ref[...]  # (TA,)
    rows = u.shape[0]
    dtype = u.dtype

    def body(t, carry):
        m_old, r, o = carry
        sl = pl.ds(pl.multiple_of(t * tile_inner, tile_inner), tile_inner)
        s = s_ref[:, sl]  # (K, TB) inner spins, transposed
        L = jnp.dot(u, s, precision=HIGHEST) + fo[:, None] + fi_ref[sl][None, :]
        m = jnp.maximum(m_old, jnp.max(L))
        m_safe = jnp.where(m > -jnp.inf, m, 0.0).astype(dtype)
        P = jnp.exp(L - m_safe)
        decay = jnp.exp(m_old - m_safe)
        r = r * decay + jnp.sum(P, axis=1)
        if with_moments:
            o = o * decay + lax.dot_general(P, s, (((1,), (1,)), ((), ())), precision=HIGHEST)
            col_ref, shift_ref = out_refs[2], out_refs[3]
            col_ref[0, sl] = jnp.sum(P, axis=0)
            shift_ref[0, pl.ds(t, 1)] = jnp.full((1,), m_safe, dtype)
        return m, r, o

    m0 = jnp.full((), -jnp.inf, dtype)
    o0 = jnp.zeros((rows, u.shape[1]), dtype) if with_moments else jnp.zeros((), dtype)
    m, r, o = lax.fori_loop(0, num_tiles, body, (m0, jnp.zeros((rows,), dtype), o0))
    m_safe = jnp.where(m > -jnp.inf, m, 0.0).astype(dtype)
    out_refs[0][...] = m_safe + jnp.log(r)
    if with_moments:
        out_refs[1][...] = jnp.where(r[:, None] > 0, o / jnp.where(r > 0, r, 1.0)[:, None], 0.0)


def pairwise_rows(u, f_outer, inner_t, f_inner, *, with_moments: bool = False,
                  tile_rows: int = TILE_ROWS, tile_inner: int = TILE_INNER, interpret: bool | None = None):
    r"""Row log-sum-exps of :math:`L_{ij} = u_i \cdot s_j + f^A_i + f^B_j` over inner states ``j``.

    With :math:`u_i = J_{AB}^\top x_{A,i}` these are the split terms of the Ising log weight
    :math:`\tfrac12 x^\top J x + h^\top x` (Eq. (2.28)); summing the rows gives Eq. (2.29).

    Args:
      u: ``(C, K)`` cross coefficients of ``C`` outer states (``K`` a multiple of 16, zero-padded).
      f_outer: ``(C,)`` outer self terms.
      inner_t: ``(K, 2^b)`` inner spins, transposed and zero-padded to ``K`` rows.
      f_inner: ``(2^b,)`` inner self terms.
      with_moments: also return the weighted inner-spin means and column sums.

    Returns:
      ``log_rows (C,)``; with moments also ``inner_mean (C, K)`` (the conditional mean of the
      inner spins given each outer state), ``cols (G, 2^b)`` and ``shifts (G, 2^b / TB)``:
      program ``g``'s column sums of :math:`e^{L_{ij} - \text{shift}}`, tile by tile.
    """
    pl = _pl()
    tile_rows, tile_inner = _tile("tile_rows", tile_rows), _tile("tile_inner", tile_inner)
    check_ndim("u", u, 2, "cross coefficients of shape (C, K)")
    check_ndim("inner_t", inner_t, 2, "transposed inner spins of shape (K, 2^b)")
    C, K = u.shape
    NB = inner_t.shape[1]
    _check_operands([("u", u, 2, {}), ("f_outer", f_outer, 1, {0: (C, "one per outer state, as u")}),
                     ("inner_t", inner_t, 2, {0: (K, "the contraction width of u")}),
                     ("f_inner", f_inner, 1, {0: (NB, "one per inner state, as inner_t")})])
    if K % PAD:
        raise ValueError(f"u must have a contraction width K that is a multiple of {PAD} (zero-padded); got {K}.")
    ta, tb = min(tile_rows, C), min(tile_inner, NB)
    if C % ta or NB % tb:
        raise ValueError(f"tile sizes ({ta}, {tb}) must divide the problem ({C}, {NB}).")
    G, T = C // ta, NB // tb
    dtype = u.dtype
    out_shape = [jax.ShapeDtypeStruct((C,), dtype)]
    out_specs = [pl.BlockSpec((ta,), lambda g: (g,))]
    if with_moments:
        out_shape += [jax.ShapeDtypeStruct((C, K), dtype), jax.ShapeDtypeStruct((G, NB), dtype),
                      jax.ShapeDtypeStruct((G, T), dtype)]
        out_specs += [pl.BlockSpec((ta, K), lambda g: (g, 0)), pl.BlockSpec((1, NB), lambda g: (g, 0)),
                      pl.BlockSpec((1, T), lambda g: (g, 0))]
    kernel = functools.partial(_pairwise_kernel, tile_inner=tb, num_tiles=T, with_moments=with_moments)

    def build(interpret):
        return pl.pallas_call(
            kernel,
            out_shape=tuple(out_shape),
            grid=(G,),
            in_specs=[pl.BlockSpec((ta, K), lambda g: (g, 0)), pl.BlockSpec((ta,), lambda g: (g,)),
                      pl.BlockSpec((K, NB), lambda g: (0, 0)), pl.BlockSpec((NB,), lambda g: (0,))],
            out_specs=tuple(out_specs),
            interpret=interpret,
            compiler_params=_triton(),
        )

    out = _call(build, (u, f_outer, inner_t, f_inner), interpret)
    return tuple(out) if with_moments else out[0]


# --------------------------------------------------------------------------------------
# RBM: sum of log 2cosh over the other layer, fused with the log-sum-exp
# --------------------------------------------------------------------------------------


def _rbm_kernel(field_ref, fo_ref, table_ref, fi_ref, out_ref, *, tile_inner, num_tiles, tile_units,
                num_unit_tiles):
    pl = _pl()
    rows = field_ref.shape[0]
    dtype = field_ref.dtype

    def inner_body(t, carry):
        m_old, r = carry
        sl = pl.ds(pl.multiple_of(t * tile_inner, tile_inner), tile_inner)

        def unit_body(v, acc):
            vs = pl.ds(pl.multiple_of(v * tile_units, tile_units), tile_units)
            a = field_ref[:, vs][:, None, :] + table_ref[sl, vs][None, :, :]  # (TA, TB, TV)
            return acc + jnp.sum(log2cosh(a), axis=2)

        acc = lax.fori_loop(0, num_unit_tiles, unit_body, jnp.zeros((rows, tile_inner), dtype))
        L = acc + fo_ref[...][:, None] + fi_ref[sl][None, :]  # (TA, TB)
        m = jnp.maximum(m_old, jnp.max(L))
        m_safe = jnp.where(m > -jnp.inf, m, 0.0).astype(dtype)
        r = r * jnp.exp(m_old - m_safe) + jnp.sum(jnp.exp(L - m_safe), axis=1)
        return m, r

    m, r = lax.fori_loop(0, num_tiles, inner_body, (jnp.full((), -jnp.inf, dtype), jnp.zeros((rows,), dtype)))
    out_ref[...] = jnp.where(m > -jnp.inf, m, 0.0).astype(dtype) + jnp.log(r)


def rbm_rows(out_field, f_outer, table, f_inner, *, tile_rows: int = 4, tile_inner: int = 64,
             tile_units: int = RBM_TILE_UNITS, interpret: bool | None = None):
    r"""Row log-sum-exps of :math:`L_{ij} = \sum_k \log 2\cosh(a_{ik} + t_{jk}) + f^A_i + f^B_j`.

    These are the marginal log weights of the enumerated RBM layer (Eq. (4.81)-(4.82)), split
    into outer and inner parts; summing the rows gives :math:`\log Z` (Eq. (4.80)).

    Args:
      out_field: ``(C, V)`` pre-activations of the other layer from ``C`` outer states.
      f_outer: ``(C,)`` outer self terms.
      table: ``(2^b, V)`` inner pre-activations, bias included.
      f_inner: ``(2^b,)`` inner self terms.

    ``V`` must be a multiple of ``tile_units``: pad both ``out_field`` and ``table`` with zero
    columns, each adding exactly :math:`\log 2` per state, and subtract that from ``f_outer``.
    """
    pl = _pl()
    tile_rows, tile_inner = _tile("tile_rows", tile_rows), _tile("tile_inner", tile_inner)
    tile_units = _tile("tile_units", tile_units)
    check_ndim("out_field", out_field, 2, "pre-activations of shape (C, V)")
    check_ndim("table", table, 2, "inner pre-activations of shape (2^b, V)")
    C, V = out_field.shape
    NB = table.shape[0]
    _check_operands([("out_field", out_field, 2, {}),
                     ("f_outer", f_outer, 1, {0: (C, "one per outer state, as out_field")}),
                     ("table", table, 2, {1: (V, "the units of out_field")}),
                     ("f_inner", f_inner, 1, {0: (NB, "one per inner state, as table")})])
    ta, tb, tv = min(tile_rows, C), min(tile_inner, NB), min(tile_units, V)
    if C % ta or NB % tb or V % tv:
        raise ValueError(f"tile sizes ({ta}, {tb}, {tv}) must divide the problem ({C}, {NB}, {V}).")
    kernel = functools.partial(_rbm_kernel, tile_inner=tb, num_tiles=NB // tb, tile_units=tv,
                               num_unit_tiles=V // tv)

    def build(interpret):
        return pl.pallas_call(
            kernel,
            out_shape=jax.ShapeDtypeStruct((C,), out_field.dtype),
            grid=(C // ta,),
            in_specs=[pl.BlockSpec((ta, V), lambda g: (g, 0)), pl.BlockSpec((ta,), lambda g: (g,)),
                      pl.BlockSpec((NB, V), lambda g: (0, 0)), pl.BlockSpec((NB,), lambda g: (0,))],
            out_specs=pl.BlockSpec((ta,), lambda g: (g,)),
            interpret=interpret,
            compiler_params=_triton(),
        )

    return _call(build, (out_field, f_outer, table, f_inner), interpret)


# --------------------------------------------------------------------------------------
# Engine selection
# --------------------------------------------------------------------------------------


@functools.cache
def _probe(backend: str) -> bool:
    """Compiles a small pairwise kernel on ``backend`` and checks it against plain XLA."""
    try:
        rng = np.random.default_rng(0)
        K, C, NB = PAD, 128, 1024
        u = jnp.asarray(rng.normal(size=(C, K)), jnp.float32)
        fo = jnp.asarray(rng.normal(size=C), jnp.float32)
        s = jnp.asarray(rng.choice([-1.0, 1.0], size=(K, NB)), jnp.float32)
        fi = jnp.asarray(rng.normal(size=NB), jnp.float32)
        got = np.asarray(jax.jit(functools.partial(pairwise_rows, interpret=False))(u, fo, s, fi))
        want = np.asarray(jax.nn.logsumexp(jnp.dot(u, s, precision=HIGHEST) + fo[:, None] + fi[None], axis=1))
        return bool(np.allclose(got, want, rtol=1e-5, atol=1e-4))
    except Exception as err:  # noqa: BLE001 - any lowering failure means "use XLA"
        warnings.warn(f"jaxebm: the Pallas enumeration kernel is unavailable on {backend} ({err!r:.200}); "
                      "using the XLA engine.", RuntimeWarning, stacklevel=3)
        return False


def resolve(engine: str | None) -> str:
    """``"xla"`` or ``"pallas"`` for an ``engine`` argument (``None`` means ``"auto"``)."""
    engine = choice("engine", "auto" if engine is None else engine, ENGINES)
    if engine != "auto":
        return engine
    backend = jax.default_backend()
    return "pallas" if backend == "gpu" and _probe(backend) else "xla"
