r"""Exact answers for pairwise models on sparse graphs by summing spins out one at a time.

For a model on a :class:`~jaxebm.graphs.Graph` with one coupling per edge,

.. math::
   \log w(x) = \sum_{e=(i,j)} J_e x_i x_j + \sum_k h_k x_k, \qquad
   Z = \sum_{x \in \{-1,+1\}^n} w(x),

the spins are added to a table in the graph's elimination order and each is summed out once
all its neighbours are in (variable elimination, the transfer matrix of a lattice; Baxter,
*Exactly Solved Models*, 1982, ch. 2; Koller and Friedman, 2009, ch. 9). The table lives on
``W`` **slots**, one bit each: adding spin :math:`v` into slot :math:`s` sums out the slot's
previous occupant :math:`u` and couples :math:`v` to the spins in the other slots,

.. math::
   T'(\ldots, x_v, \ldots) = \sum_{x_u} T(\ldots, x_u, \ldots)\,
       e^{J_{uv} x_u x_v}\; e^{x_v (h_v + \sum_{k} J_{kv} x_k)},

so each step touches :math:`2^W` entries with a few multiplications and no table-sized
transcendental, and :math:`\log Z = \log \sum T_{\rm final}`. ``W`` is at most the graph's
:attr:`~jaxebm.graphs.Graph.width` (``min(rows, cols)`` for an open lattice,
``2 min(rows, cols)`` for a torus); the cost is about ``n * 2^W``.

Two arithmetic modes:

* ``"linear"``: the table in linear space, in blocks of ``2^8`` entries that share a log
  scale (renormalised by the block maximum after every step; the scales are summed in log
  space with Kahan compensation). Fast (memory bound), exact up to rounding *as long as
  nothing underflows*: a guard flags any step where an entry falls below ``2^-100`` of its
  block maximum (``2^-960`` in float64), beyond which an underflowed term could matter.
  The range within a block grows with the coupling strength (about ``1.5 beta`` nats per
  spin of an Edwards-Anderson glass), so the guard fires only at very low temperatures.
* ``"log"``: the table in log space, a log-add-exp per entry. Never underflows, 10-50 times
  slower on CPU.

An explicit ``mode="linear"`` refuses (a ``ValueError``; NaN under a caller's ``jit``) where
its guard fires. ``mode="auto"`` (the default) runs the linear pass and, where its guard fires
(very low temperatures), the log pass instead: eagerly the log pass is compiled only when first
needed; under a caller's ``jit`` it is a ``lax.cond`` (under ``vmap`` both run). Either way
float32 agrees with float64 to about 1e-6 relative in :math:`\log Z`.

Lattices built by :func:`jaxebm.graphs.square_lattice` (open, cylindrical or periodic, at
least 2 x 2) run as a ``lax.scan`` over lines whose body adds one line
(compile time independent of the number of lines). Other graphs run as a scan whose body
switches (``lax.switch``) among the few distinct steps (a slot and the slots it couples to),
so they compile in a second or two whatever their size (a 5000-node tree, a 1000-spin band).
Plans and compiled functions are cached per (graph, elimination order, dtype, mode).

Derivatives are exact. :func:`moments` computes the means and edge correlations (in linear
mode) by a hand-written forward-backward sweep that keeps only the table at each line start
and recomputes a line's tables on the way back (about 3.5-7 times the cost of log Z on 2 CPU cores;
the README says why);
``log_partition`` has a custom JVP that uses the same sweep, so ``jax.grad`` of it costs what
:func:`moments` costs (reverse-mode differentiation of the elimination itself costs 15-25
times log Z). The sweep holds every scale constant exactly as the forward pass does, so it
is itself differentiable: second derivatives (a specific heat, a Fisher-vector product) are
exact too. :func:`sample_exact` draws independent exact samples by backward sampling
through recomputed tables.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm._enum.budget import time_limit
from jaxebm._validation import choice, count, graph_fields, is_concrete, prng_key
from jaxebm.graphs import Graph
from jaxebm.types import Array, ArrayLike, PRNGKey

__all__ = [
    "check_budget",
    "estimate_seconds",
    "log_partition",
    "moments",
    "num_slots",
    "sample_exact",
]

MODES = ("auto", "linear", "log")

# Rough throughputs (table entries per second per step) used only to estimate run time before
# refusing a request; measured on 2 shared CPU cores (linear ~2-3e9 for cache-resident tables,
# ~5e8 for 2^24 tables; log ~1e8).
_LINEAR_RATE = {"cpu": 5e8, "gpu": 5e10, "tpu": 5e10}
_LOG_RATE = {"cpu": 5e7, "gpu": 5e9, "tpu": 5e9}
#: Largest table (slots) the engine builds at all: 2^32 entries.
MAX_SLOTS = 32
# Memory limit for the tables kept by sample_exact and by reverse-mode differentiation.
_MEMORY_BUDGET_BYTES = 2**32

# Linear mode: blocks of 2^_BLOCK_BITS entries share a log scale; the guard fires when an
# entry (the block maximum being 1..2) falls below 2^-bits, by itemsize: then nothing that
# underflowed can carry more than 2^-26 of an entry (2^-55 in float64).
_BLOCK_BITS = 8
_UNDERFLOW_BITS = {4: 100, 8: 960}


# --------------------------------------------------------------------------------------
# Plans: the static structure of the elimination, built once per graph in NumPy
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Step:
    """One spin added into ``slot`` (summing out its previous occupant), coupled to ``others``."""

    slot: int
    others: tuple[int, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """Static elimination plan. ``prefix`` steps are unrolled; ``line`` steps form the body of a
    ``lax.scan`` over ``num_lines`` lines. Per-step data (node added, edge to the old occupant,
    edges to the other slots; ``-1`` = none) are NumPy arrays, gathered from ``h`` and ``J``
    inside the compiled function. Hashed by identity (one plan per graph, cached)."""

    n: int
    num_edges: int
    num_slots: int
    prefix: tuple[_Step, ...]
    prefix_node: np.ndarray  # (P,)
    prefix_old: np.ndarray  # (P,)
    prefix_other: tuple[np.ndarray, ...]  # per step (K,)
    line: tuple[_Step, ...]
    line_node: np.ndarray  # (num_lines, L)
    line_old: np.ndarray  # (num_lines, L)
    line_other: tuple[np.ndarray, ...]  # per line position (num_lines, K_p)
    kind: str
    block_bits: int = 0  # linear mode: slots per scale block (set by _plan)
    # "scan" plans (non-lattice graphs): ``line`` holds the distinct steps, ``line_branch``
    # (num_lines, L) says which one each position runs (a lax.switch in an inner scan, so the
    # program compiles each distinct step once); ``line_other`` is one (num_lines, L, K) array
    # padded with -1; a step of slot -1 is a no-op padding the first line (its node is n).
    line_branch: np.ndarray | None = None

    @property
    def scanned(self) -> bool:
        return self.line_branch is not None

    @property
    def num_lines(self) -> int:
        return int(self.line_node.shape[0])

    @property
    def num_steps(self) -> int:
        return len(self.prefix) + self.line_node.size


def _edge_lookup(graph: Graph) -> dict[tuple[int, int], int]:
    return {(int(i), int(j)): k for k, (i, j) in enumerate(graph.edges)}


def _lattice_plan(graph: Graph) -> _Plan | None:
    """Row-by-row plan for a lattice from :func:`square_lattice` (None if it does not apply)."""
    if graph.shape is None:
        return None
    rows, cols = graph.shape
    wrap_r, wrap_c = graph.periodic
    idx = np.arange(rows * cols).reshape(rows, cols)
    order = graph.elimination_order
    by_rows = (idx, wrap_c and cols >= 3, wrap_r and rows >= 3)
    by_cols = (idx.T, wrap_r and rows >= 3, wrap_c and cols >= 3)
    if np.array_equal(order, idx.ravel()) and (rows > 1 or not np.array_equal(order, idx.T.ravel())):
        lines, along, across = by_rows
    elif np.array_equal(order, idx.T.ravel()):  # also a single row (a chain): lines of one spin
        lines, along, across = by_cols
    else:
        return None
    num_rows, length = lines.shape
    if num_rows < 2:
        return None
    lookup = _edge_lookup(graph)
    used = np.zeros(graph.num_edges, dtype=np.int64)

    def edge(a, b):
        if a < 0 or b < 0:
            return -1
        k = lookup.get((min(a, b), max(a, b)))
        if k is None:
            raise KeyError((a, b))
        used[k] += 1
        return k

    base = length if across else 0

    def step_spec(p, slot_of_left, first_slot, with_f):
        """Slots and a key list of which neighbour each other slot holds, sorted by slot."""
        others = []
        if p >= 1:
            others.append((slot_of_left, "left"))
        if along and p == length - 1:
            others.append((first_slot, "wrap"))
        if with_f:
            others.append((p, "f"))
        others.sort()
        return tuple(s for s, _ in others), tuple(k for _, k in others)

    try:
        prefix, prefix_node, prefix_old, prefix_other = [], [], [], []
        if across:  # line 0 goes into the fixed slots 0..L-1, coupled to the next and last lines later
            for p in range(length):
                slots, kinds = step_spec(p, p - 1, 0, False)
                v = int(lines[0, p])
                prefix.append(_Step(p, slots))
                prefix_node.append(v)
                prefix_old.append(-1)
                nb = {"left": int(lines[0, p - 1]) if p else -1, "wrap": int(lines[0, 0])}
                prefix_other.append(np.asarray([edge(nb[k], v) for k in kinds], dtype=np.int32))
        first = 1 if across else 0
        line_specs, kinds_of = [], []
        for p in range(length):
            slots, kinds = step_spec(p, base + p - 1, base, across)
            line_specs.append(_Step(base + p, slots))
            kinds_of.append(kinds)
        line_rows = range(first, num_rows)
        line_node = np.asarray([[int(lines[r, p]) for p in range(length)] for r in line_rows], dtype=np.int32)
        line_old = np.full(line_node.shape, -1, dtype=np.int32)
        line_other = [np.full((len(line_rows), len(kinds_of[p])), -1, dtype=np.int32) for p in range(length)]
        for a, r in enumerate(line_rows):
            for p in range(length):
                v = int(lines[r, p])
                if r - 1 >= first:
                    line_old[a, p] = edge(int(lines[r - 1, p]), v)
                for k, kind in enumerate(kinds_of[p]):
                    if kind == "left":
                        line_other[p][a, k] = edge(int(lines[r, p - 1]), v)
                    elif kind == "wrap":
                        line_other[p][a, k] = edge(int(lines[r, 0]), v)
                    elif r == 1:  # "f": the first line is the top neighbour of line 1 ...
                        line_other[p][a, k] = edge(int(lines[0, p]), v)
                    elif r == num_rows - 1:  # ... and the bottom neighbour of the last line
                        line_other[p][a, k] = edge(int(lines[0, p]), v)
    except KeyError:
        return None
    if not np.all(used == 1):  # every edge exactly once, or this is not the lattice we think
        return None
    return _Plan(graph.n, graph.num_edges, base + length, tuple(prefix), np.asarray(prefix_node, np.int32),
                 np.asarray(prefix_old, np.int32), tuple(prefix_other), tuple(line_specs), line_node, line_old,
                 tuple(line_other), "lattice")


def _generic_plan(graph: Graph) -> _Plan:
    """One step per spin along ``graph.elimination_order``; a spin's slot is reused once all
    its neighbours are in (interval scheduling of the spins' lifetimes). The steps run as a
    scan (:func:`_scan_plan`): unrolled, one step per spin, XLA's compile time grew about
    quadratically with the spins for log Z and far worse for exact sampling (30 spins: 7 minutes)."""
    order = graph.elimination_order
    n = graph.n
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    last = pos.copy()
    if graph.num_edges:
        pe = pos[graph.edges]
        np.maximum.at(last, graph.edges[:, 0], pe[:, 1])
        np.maximum.at(last, graph.edges[:, 1], pe[:, 0])
    lookup = _edge_lookup(graph)
    offsets, dst, eid = graph._csr
    occupant: list[int] = []
    slot_of = np.full(n, -1, dtype=np.int64)
    steps, nodes, olds, others = [], [], [], []
    for t, v in enumerate(order.tolist()):
        replace = None
        for s, u in enumerate(occupant):  # an occupant whose last neighbour is v: sum it out now
            if u >= 0 and last[u] == t:
                replace = s
                break
        if replace is None:
            for s, u in enumerate(occupant):
                if u < 0 or last[u] < t:
                    replace = s
                    break
        if replace is None:
            occupant.append(-1)
            replace = len(occupant) - 1
        u = occupant[replace]
        old_edge = lookup.get((min(u, v), max(u, v)), -1) if u >= 0 else -1
        nb, ne = dst[offsets[v]:offsets[v + 1]], eid[offsets[v]:offsets[v + 1]]
        earlier = [(int(slot_of[w]), int(e)) for w, e in zip(nb.tolist(), ne.tolist())
                   if pos[w] < t and w != u]
        earlier.sort()
        steps.append(_Step(replace, tuple(s for s, _ in earlier)))
        nodes.append(v)
        olds.append(old_edge)
        others.append(np.asarray([e for _, e in earlier], dtype=np.int32))
        occupant[replace] = v
        slot_of[v] = replace
    return _scan_plan(n, graph.num_edges, len(occupant), steps, nodes, olds, others)


_NULL_STEP = _Step(-1, ())
_BRANCH_MAX_OTHERS = 6


def _scan_plan(n, num_edges, num_slots, steps, nodes, olds, others) -> _Plan:
    """The steps as ``ceil(sqrt(steps))``-long lines of a scan; each position dispatches on
    its step's (slot, others) among the distinct ones, padded by no-op steps at the start."""
    L = math.isqrt(len(steps) - 1) + 1
    num_lines = -(-len(steps) // L)
    pad = num_lines * L - len(steps)
    # Steps into one slot share a branch coupled to the union of their other slots (zero
    # couplings where a step has no edge), up to _BRANCH_MAX_OTHERS slots: a handful of branches
    # per slot, each compiled once, at about the cost of a step's own coupling pattern.
    groups: dict[int, list[set]] = {}
    group_of = []
    for step in steps:
        mine = groups.setdefault(step.slot, [])
        cap = max(_BRANCH_MAX_OTHERS, len(step.others))
        k = next((k for k, union in enumerate(mine) if len(union | set(step.others)) <= cap), len(mine))
        if k == len(mine):
            mine.append(set())
        mine[k].update(step.others)
        group_of.append(k)
    branches = {_NULL_STEP: 0} if pad else {}
    step_branch = []
    for step, k in zip(steps, group_of):
        step_branch.append(branches.setdefault(_Step(step.slot, tuple(sorted(groups[step.slot][k]))), len(branches)))
    branch_steps = tuple(branches)
    K = max(1, max(len(b.others) for b in branch_steps))
    branch = np.asarray([0] * pad + step_branch, np.int32).reshape(num_lines, L)
    node = np.asarray([n] * pad + list(nodes), np.int32).reshape(num_lines, L)
    old = np.asarray([-1] * pad + list(olds), np.int32).reshape(num_lines, L)
    other = np.full((pad + len(steps), K), -1, np.int32)
    for t, (step, b, edges) in enumerate(zip(steps, step_branch, others)):
        position = {slot: k for k, slot in enumerate(branch_steps[b].others)}
        for slot, e in zip(step.others, edges):
            other[pad + t, position[slot]] = e
    empty = np.zeros((0,), np.int32)
    return _Plan(n, num_edges, num_slots, (), empty, empty, (), branch_steps, node, old,
                 (other.reshape(num_lines, L, K),), "scan", line_branch=branch)


_PLANS: dict = {}


def _plan(graph: Graph) -> _Plan:
    """The cached plan of ``graph`` (keyed by the graph and its elimination order)."""
    if not isinstance(graph, Graph):
        raise ValueError(f"graph must be a jaxebm.graphs.Graph; got {type(graph).__name__}.")
    key = (graph, graph.elimination_order.tobytes(), _BLOCK_BITS, _BRANCH_MAX_OTHERS)
    plan = _PLANS.get(key)
    if plan is None:
        plan = dataclasses.replace(_lattice_plan(graph) or _generic_plan(graph), block_bits=_BLOCK_BITS)
        if len(_PLANS) > 256:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def num_slots(graph: Graph) -> int:
    """Number of table slots the elimination of ``graph`` uses: the table has ``2^slots``
    entries (at most ``graph.width``)."""
    return _plan(graph).num_slots


# --------------------------------------------------------------------------------------
# Budget
# --------------------------------------------------------------------------------------


def _backend() -> str:
    return jax.default_backend()


def estimate_seconds(graph: Graph, *, mode: str = "linear") -> float:
    """Rough wall time (s) of one exact log-partition pass over ``graph`` by elimination:
    ``steps * 2^slots`` table entries at a measured rate (``mode`` "linear" or "log")."""
    plan = _plan(graph)
    rates = _LOG_RATE if mode == "log" else _LINEAR_RATE
    rate = rates.get(_backend(), rates["cpu"])
    if _backend() == "cpu":
        import os

        rate *= max(1, os.cpu_count() or 1) / 2
    return float(plan.num_steps * 2.0**plan.num_slots / rate)


# Compile time, measured for log Z on 2 CPU cores: unrolled steps (a torus's first line) grow
# about quadratically (100 steps 3 s, 300 steps 18 s); a scan plan compiles each distinct step
# once (about 0.1 s each); a lattice compiles one line.
_COMPILE_SECONDS_PER_STEP = 0.01
_COMPILE_SECONDS_PER_STEP_SQUARED = 2e-4
_COMPILE_SECONDS_PER_BRANCH = 0.1


def _compile_seconds(plan: _Plan) -> float:
    """Rough compile time (s) of the plan's unrolled steps and a scan plan's distinct steps."""
    steps = len(plan.prefix)
    branches = len(plan.line) if plan.scanned else 0
    return (steps * _COMPILE_SECONDS_PER_STEP + steps**2 * _COMPILE_SECONDS_PER_STEP_SQUARED
            + branches * _COMPILE_SECONDS_PER_BRANCH)


def _power_of_two(n: int) -> str:
    """2^n in scientific notation, for any n."""
    e = n * math.log10(2.0)
    return f"{10 ** (e - math.floor(e)):.2f}e{math.floor(e)}"


def check_budget(graph: Graph, *, max_seconds: float | None = None, mode: str = "auto",
                 what: str = "graph") -> None:
    """Raise a ValueError, with the width, the table size, the state count and an estimated
    time, if the exact elimination of ``graph`` is over budget (``max_seconds``, default
    :data:`jaxebm.enumeration.DEFAULT_MAX_SECONDS`) or its table cannot be held."""
    plan = _plan(graph)
    limit = time_limit(max_seconds)  # a positive number or math.inf (ValueError on NaN, <= 0, ...)
    run = estimate_seconds(graph, mode="log" if mode == "log" else "linear")
    compile_seconds = _compile_seconds(plan)
    seconds = run + compile_seconds
    w = plan.num_slots
    if w > MAX_SLOTS or seconds > limit:
        compiling = f", about {compile_seconds:,.3g} s of it to compile" if compile_seconds > 0.5 * seconds else ""
        raise ValueError(
            f"{what}: summing its {graph.n} spins out along its elimination order (width {graph.width}) keeps a "
            f"table of 2^{w} = {2**w:,} entries over {plan.num_steps} steps (the model has 2^{graph.n} ~ "
            f"{_power_of_two(graph.n)} states), estimated at {seconds:,.3g} s on {_backend()}{compiling}; the "
            "limit is "
            + (f"{MAX_SLOTS} slots." if w > MAX_SLOTS else
               f"max_seconds={limit:g}. Pass a larger max_seconds to run it anyway, or use a sampler "
               "(jaxebm.mcmc) or AIS.")
        )


# --------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------
#
# Linear mode keeps the table as t * w[b] * exp(S[b] + G): ``t`` (2^W,), per-block multipliers
# ``w`` and log scales ``S`` over blocks of the 2^k least significant slots, and a global log
# scale ``G`` summed with Kahan compensation ``Gc``. After each step a block's maximum of ``t``
# becomes its new 1/w, so entries stay <= 2 and the dynamic range that must fit in a float is
# only that *within* a block (a few spins). Log mode keeps log T - G, shifted by its maximum
# after each step. The scales are constants for differentiation (their gradients cancel).


def _view(num_slots: int, slots, cut: int | None = None) -> tuple[tuple[int, ...], dict[int, int]]:
    """Reshape of a flat ``2^W`` table (slot 0 = most significant bit) exposing ``slots`` as
    axes of size 2, with an axis boundary before slot ``cut`` (the block boundary)."""
    marks = sorted(set(slots))
    shape, axis, prev = [], {}, -1

    def gap(lo, hi):  # slots lo..hi-1, split at the cut
        if cut is not None and lo < cut < hi:
            return [2 ** (cut - lo), 2 ** (hi - cut)]
        return [2 ** (hi - lo)] if hi > lo else []

    for s in marks:
        shape.extend(gap(prev + 1, s))
        axis[s] = len(shape)
        shape.append(2)
        prev = s
    shape.extend(gap(prev + 1, num_slots))
    return tuple(shape), axis


def _kahan(total, comp, x):
    y = x - comp
    new = total + y
    return new, (new - total) - y


def _block_bits(plan: _Plan) -> int:
    return min(plan.num_slots, plan.block_bits)


def _underflow_bits(dtype) -> int:
    return _UNDERFLOW_BITS[jnp.dtype(dtype).itemsize]


def _field(shape, axis, step: _Step, h_v, c_other, dtype):
    s = jnp.asarray([-1.0, 1.0], dtype)
    field = h_v
    for k, slot in enumerate(step.others):
        bshape = [1] * len(shape)
        bshape[axis[slot]] = 2
        field = field + c_other[k] * s.reshape(bshape)
    return field


def _step_log(carry, step: _Step, plan: _Plan, h_v, c_old, c_other):
    table, g, gc, flag = carry
    num_slots = plan.num_slots
    shape, axis = _view(num_slots, (step.slot,) + step.others)
    tv = table.reshape(shape)
    ax = axis[step.slot]
    t0 = lax.index_in_dim(tv, 0, ax, keepdims=True)
    t1 = lax.index_in_dim(tv, 1, ax, keepdims=True)
    field = _field(shape, axis, step, h_v, c_other, table.dtype)
    # jnp.logaddexp: its derivative splits ties evenly (max + log1p(exp(-|a - b|)) gives them to one side)
    outs = [jnp.logaddexp(t0 - c_old * sv, t1 + c_old * sv) + sv * field for sv in (-1.0, 1.0)]
    out = jnp.concatenate(outs, axis=ax).reshape(-1)
    m = lax.stop_gradient(jnp.max(out))
    g, gc = _kahan(g, gc, m)
    return (out - m, g, gc, flag)


def _merge(ax: int, t, R, e_m, e_p):
    r"""One linear step on a table view ``t`` (axis ``ax`` = the replaced slot):
    :math:`\mathrm{out}_v = \sum_u t_u R_u e^{e_v(u)}` for :math:`v = \mp 1`, stacked on ``ax``.
    ``R`` (per-block scale factors) and ``e_v`` (exponents over the slot and its neighbours)
    are small and broadcast."""
    t0 = lax.index_in_dim(t, 0, ax, keepdims=True)
    t1 = lax.index_in_dim(t, 1, ax, keepdims=True)
    outs = []
    for e in (e_m, e_p):
        F = R * jnp.exp(e)
        outs.append(t0 * lax.index_in_dim(F, 0, ax, keepdims=True) + t1 * lax.index_in_dim(F, 1, ax, keepdims=True))
    return jnp.concatenate(outs, axis=ax)


class _Terms(NamedTuple):
    """What a linear step and its transpose share: the table view (``shape``, slot ``axis``,
    the replaced slot's axis ``ax``; ``small``: the axes its neighbours do not index), the
    spin values ``su`` on ``ax``, the exponents ``e_m``/``e_p`` of the new spin's two values,
    the per-block factors ``R`` and the merged block log scales ``S_out``."""

    shape: tuple[int, ...]
    axis: dict
    ax: int
    small: tuple[int, ...]
    su: Array
    e_m: Array
    e_p: Array
    bound: Array
    R: Array
    S_out: Array


def _linear_terms(S, w, step: _Step, plan: _Plan, h_v, c_old, c_other, dtype) -> _Terms:
    num_slots = plan.num_slots
    major = num_slots - _block_bits(plan)
    slots = (step.slot,) + step.others
    shape, axis = _view(num_slots, slots, cut=major)
    bshape, baxis = _view(major, [s for s in slots if s < major])
    # Block arrays broadcast against the table view: major axes, then ones for the minor part.
    nminor = len(shape) - len(bshape)
    ax = axis[step.slot]
    field = _field(shape, axis, step, h_v, c_other, dtype) + jnp.zeros((1,) * len(shape), dtype)
    small = tuple(i for i in range(len(shape)) if field.shape[i] == 1 and i != ax)
    # The bound is a constant (in the transpose too): the sweep is then itself differentiable
    # (the scales cancel between the tables and the adjoints), so log Z has exact second derivatives.
    bound = lax.stop_gradient(jnp.abs(c_old) + jnp.abs(h_v) + jnp.sum(jnp.abs(c_other)))
    su = jnp.asarray([-1.0, 1.0], dtype).reshape([2 if i == ax else 1 for i in range(len(shape))])
    e_m = -c_old * su - field - bound  # v = -1: exponent c_old s_u s_v + s_v field - bound
    e_p = c_old * su + field - bound
    Sv = S.reshape(bshape)
    wv = w.reshape(bshape)
    if step.slot < major:  # the summed-out spin indexes blocks: merge block pairs on a common scale
        s_new = jnp.max(Sv, axis=baxis[step.slot], keepdims=True)
        R = (jnp.exp(Sv - s_new) * wv).reshape(bshape + (1,) * nminor)
        S_out = jnp.broadcast_to(s_new, Sv.shape).reshape(-1)
    else:
        R = wv.reshape(bshape + (1,) * nminor)
        S_out = S
    return _Terms(shape, axis, ax, small, su, e_m, e_p, bound, R, S_out)


def _block_max_min(blocks):
    """Per-block (max, min) of a ``(blocks, size)`` table in one pass: one variadic reduction
    (on CPU, separate max and min reductions made XLA compute the step's table twice; log Z
    ran 1.5x slower)."""
    inf = jnp.asarray(jnp.inf, blocks.dtype)
    return lax.reduce((blocks, blocks), (-inf, inf), lambda a, b: (jnp.maximum(a[0], b[0]), jnp.minimum(a[1], b[1])),
                      (1,))


def _step_linear(carry, step: _Step, plan: _Plan, h_v, c_old, c_other):
    t, S, w, g, gc, flag = carry
    dtype = t.dtype
    k = _block_bits(plan)
    major = plan.num_slots - k
    terms = _linear_terms(S, w, step, plan, h_v, c_old, c_other, dtype)
    out = _merge(terms.ax, t.reshape(terms.shape), lax.stop_gradient(terms.R), terms.e_m, terms.e_p).reshape(-1)
    bmax, bmin = _block_max_min(lax.stop_gradient(out.reshape(2**major, 2**k)))
    flag = flag | jnp.any(bmin < 2.0 ** (-_underflow_bits(dtype))) | ~jnp.all(jnp.isfinite(bmax))
    # Keep S small: move the largest block scale and the bound into the global scale.
    S_out = lax.stop_gradient(terms.S_out + jnp.log(bmax))
    top = jnp.max(S_out)
    g, gc = _kahan(g, gc, terms.bound + top)
    return (out, S_out - top, 1.0 / bmax, g, gc, flag)


def _step_linear_bwd(carry, step: _Step, plan: _Plan, h_v, c_old, c_other, g_out):
    """Transpose of :func:`_step_linear` (scales, bound and multipliers held constant, as in
    reverse-mode differentiation): given the adjoint ``g_out`` of the table after the step and
    the carry before it, returns (adjoint of the table before, d h_v, d c_old, d c_other)."""
    t, S, w = carry[:3]
    dtype = t.dtype
    shape, axis, ax, small, su, e_m, e_p, _, R, _ = _linear_terms(S, w, step, plan, h_v, c_old, c_other, dtype)
    tR = t.reshape(shape) * R
    gv = g_out.reshape(shape)
    g_m = lax.index_in_dim(gv, 0, ax, keepdims=True)
    g_p = lax.index_in_dim(gv, 1, ax, keepdims=True)
    x_m, x_p = jnp.exp(e_m), jnp.exp(e_p)
    # adjoint of the table before: sum over v of g_v R exp(e_v(u))
    gR = [g_m * lax.index_in_dim(x_m, u, ax, keepdims=True) + g_p * lax.index_in_dim(x_p, u, ax, keepdims=True)
          for u in (0, 1)]
    g_t = (jnp.concatenate(gR, axis=ax) * R).reshape(-1)
    # adjoints of the exponents, exp(e_v(u)) sum_rest g_v t_u R, enter only through the field
    # (their difference summed over u) and c_old (the same weighted by s_u)
    d = jnp.sum(tR * (g_p * x_p - g_m * x_m), axis=small, keepdims=True)
    g_field = jnp.sum(d, axis=ax, keepdims=True)
    g_c_old = jnp.sum(d * su)
    s = jnp.asarray([-1.0, 1.0], dtype)
    g_other = []
    for slot in step.others:
        b = [1] * len(shape)
        b[axis[slot]] = 2
        g_other.append(jnp.sum(g_field * s.reshape(b)))
    g_c_other = jnp.stack(g_other) if g_other else jnp.zeros((0,), dtype)
    return g_t, jnp.sum(g_field), g_c_old, g_c_other


def _step(carry, step: _Step, plan: _Plan, h_v, c_old, c_other, mode: str):
    if mode == "log":
        return _step_log(carry, step, plan, h_v, c_old, c_other)
    return _step_linear(carry, step, plan, h_v, c_old, c_other)


def _pad(J):
    return jnp.concatenate([J, jnp.zeros((1,), J.dtype)])


def _initial(plan: _Plan, dtype, mode: str):
    w = plan.num_slots
    zero = jnp.zeros((), dtype)
    start = jnp.asarray(-w * math.log(2.0), dtype)
    if mode == "log":
        return (jnp.zeros((2**w,), dtype), start, zero, jnp.zeros((), bool))
    blocks = 2 ** (w - _block_bits(plan))
    return (jnp.ones((2**w,), dtype), jnp.zeros((blocks,), dtype), jnp.ones((blocks,), dtype), start, zero,
            jnp.zeros((), bool))


def _local_log(carry, mode: str):
    """Log of the table up to the global scale: (2^W,) values."""
    if mode == "log":
        return carry[0]
    t, S, w = carry[:3]
    blocks = S.shape[0]
    return (jnp.log(t.reshape(blocks, -1) * w[:, None]) + S[:, None]).reshape(-1)


def _prefix_step(carry, plan: _Plan, t: int, h, Jp, mode):
    return _step(carry, plan.prefix[t], plan, h[plan.prefix_node[t]], Jp[plan.prefix_old[t]],
                 Jp[plan.prefix_other[t]], mode)


def _branch(step: _Step, plan: _Plan, mode: str):
    """A scan plan's step as a ``lax.switch`` branch of (carry, h_v, c_old, c_other padded to K)."""
    if step.slot < 0:
        return lambda carry, h_v, c_old, c_other: carry
    k = len(step.others)
    return lambda carry, h_v, c_old, c_other: _step(carry, step, plan, h_v, c_old, c_other[:k], mode)


def _switch(branches):
    """Call branch ``b`` of ``branches`` (no switch when there is one)."""
    if len(branches) == 1:
        return lambda b, *args: branches[0](*args)
    return lambda b, *args: lax.switch(b, branches, *args)


def _branch_bwd(step: _Step, plan: _Plan, K: int):
    """A scan plan's transposed step (:func:`_step_linear_bwd`) as a switch branch; the
    adjoints of the other couplings padded to K."""

    def run(carry, h_v, c_old, c_other, g_out):
        zeros = jnp.zeros((K,), g_out.dtype)
        if step.slot < 0:
            return g_out, zeros[0], zeros[0], zeros
        k = len(step.others)
        g_t, g_h, g_old, g_other = _step_linear_bwd(carry, step, plan, h_v, c_old, c_other[:k], g_out)
        return g_t, g_h, g_old, zeros.at[:k].set(g_other)

    return run


def _line_body(plan: _Plan, mode: str, keep_tables: bool = False):
    """Scan body adding one line; with ``keep_tables`` it also returns the carries before each step."""
    if plan.scanned:
        step = _switch([_branch(s, plan, mode) for s in plan.line])

        def scanned_body(carry, xs):
            h_line, old_line, other_line, branch_line = xs

            def inner(c, x):
                return step(x[0], c, *x[1:]), (c if keep_tables else None)

            return lax.scan(inner, carry, (branch_line, h_line, old_line, other_line))

        return scanned_body

    def body(carry, xs):
        h_line, old_line, other_line = xs
        kept = []
        for p, step in enumerate(plan.line):
            if keep_tables:
                kept.append(carry)
            carry = _step(carry, step, plan, h_line[p], old_line[p], other_line[p], mode)
        if keep_tables:
            return carry, jax.tree.map(lambda *a: jnp.stack(a), *kept)
        return carry, None

    return body


def _line_xs(plan: _Plan, h, Jp):
    """Per-line fields and couplings (a scan plan: its padding steps' node is n, field 0)."""
    if plan.scanned:
        hp = jnp.concatenate([h, jnp.zeros((1,), h.dtype)])
        return (hp[plan.line_node], Jp[plan.line_old], Jp[plan.line_other[0]])
    return (h[plan.line_node], Jp[plan.line_old], tuple(Jp[o] for o in plan.line_other))


def _with_branch(plan: _Plan, xs):
    """The scan's per-line inputs: a scan plan's also say which step each position runs."""
    return xs + (jnp.asarray(plan.line_branch),) if plan.scanned else xs


def _line_length(plan: _Plan) -> int:
    return int(plan.line_node.shape[1]) if plan.num_lines else 0


def _check_memory(plan: _Plan, dtype, what: str) -> None:
    """Refuse when the tables kept for a backward pass (one per line and those of one line,
    a few arrays each) exceed the memory budget."""
    lines = plan.num_lines if _needs_remat(plan, dtype) or what == "exact sampling" else plan.num_steps
    held = 3 * (lines + max(_line_length(plan), len(plan.prefix)) + 2) * 2**plan.num_slots
    held_bytes = held * jnp.dtype(dtype).itemsize
    if held_bytes > _MEMORY_BUDGET_BYTES:
        raise ValueError(f"graph: {what} would hold about {held:,} table entries ({held_bytes / 2**30:.1f} GiB) "
                         f"for a table of 2^{plan.num_slots} entries; the limit is "
                         f"{_MEMORY_BUDGET_BYTES / 2**30:.0f} GiB. log_partition needs only one table.")


def _needs_remat(plan: _Plan, dtype) -> bool:
    return plan.num_steps * 2**plan.num_slots * jnp.dtype(dtype).itemsize * 3 > _MEMORY_BUDGET_BYTES // 4


def _forward(h, J, plan: _Plan, mode: str):
    """Run the elimination; returns the final carry."""
    Jp = _pad(J)
    carry = _initial(plan, h.dtype, mode)
    for t in range(len(plan.prefix)):
        carry = _prefix_step(carry, plan, t, h, Jp, mode)
    if plan.num_lines:
        body = _line_body(plan, mode)
        if _needs_remat(plan, h.dtype):
            body = jax.checkpoint(body)
        carry, _ = lax.scan(body, carry, _with_branch(plan, _line_xs(plan, h, Jp)))
    return carry


def _log_z_mode(h, J, plan: _Plan, mode: str):
    """(log Z, guard flag) in one mode."""
    carry = _forward(h, J, plan, mode)
    return _final_log_z(carry, mode), carry[-1]


def _final_log_z(carry, mode: str):
    """log Z from the final carry: the global log scale plus the log of the table's sum."""
    g, gc = carry[-3:-1]
    if mode == "log":
        table = carry[0]
        block = min(table.shape[0], 1024)
        local = jax.nn.logsumexp(jax.nn.logsumexp(table.reshape(-1, block), axis=1))
    else:
        t, S, w = carry[:3]
        sums = jnp.sum(t.reshape(S.shape[0], -1), axis=1) * w
        local = jax.nn.logsumexp(S + jnp.log(sums))
    return (g - gc) + local


def _unused_carry(dtype):
    """The global scale, its compensation and the guard flag of a linear carry, for steps whose
    table alone is recomputed (the backward sweeps keep only table, block scales and multipliers)."""
    return (jnp.zeros((), dtype),) * 2 + (jnp.zeros((), bool),)


def _moments_linear(h, J, plan: _Plan):
    """((log Z, d log Z / dh, d log Z / dJ), guard flag) of the linear pass by a hand-written
    forward-backward sweep: the forward pass keeps the carry at the start of each line (and
    before each prefix step); the backward pass recomputes a line's tables from its start and
    propagates the adjoint table through the transposed steps, reducing the moments of each
    step's spin onto its few neighbour slots. Same arithmetic as reverse-mode differentiation
    of :func:`_log_z_mode`, without storing every intermediate."""
    Jp = _pad(J)

    def gather(h, Jp):
        pre = (h[plan.prefix_node], Jp[plan.prefix_old], tuple(Jp[o] for o in plan.prefix_other))
        return pre, (_line_xs(plan, h, Jp) if plan.num_lines else None)

    (pre_h, pre_old, pre_other), xs = gather(h, Jp)
    carry = _initial(plan, h.dtype, "linear")
    prefix_carries = []
    for t, step in enumerate(plan.prefix):
        prefix_carries.append(carry)
        carry = _step_linear(carry, step, plan, pre_h[t], pre_old[t], pre_other[t])
    if plan.num_lines:
        body = _line_body(plan, "linear")

        def save(c, xs_line):
            return body(c, xs_line)[0], c[:3]

        carry, starts = lax.scan(save, carry, _with_branch(plan, xs))
    log_z = _final_log_z(carry, "linear")
    flag = carry[-1]
    # Adjoint of the final table: d log Z / d t = w exp(S - log sum) per block.
    t, S, w = carry[:3]
    blocks = S.shape[0]
    sums = jnp.sum(t.reshape(blocks, -1), axis=1) * w
    lse = jax.nn.logsumexp(S + jnp.log(sums))
    g = jnp.broadcast_to((w * jnp.exp(S - lse))[:, None], (blocks, t.shape[0] // blocks)).reshape(-1)
    g_line = None
    if plan.num_lines:
        L = len(plan.line)
        rest = _unused_carry(h.dtype)

        def back(g, inputs):
            c, xs_line = inputs
            kept = []
            for p in range(L):  # recompute the line's tables from its start
                kept.append(c)
                if p + 1 < L:
                    c = _step_linear(c + rest, plan.line[p], plan, xs_line[0][p], xs_line[1][p], xs_line[2][p])[:3]
            gh, go, gother = [None] * L, [None] * L, [None] * L
            for p in reversed(range(L)):
                g, gh[p], go[p], gother[p] = _step_linear_bwd(kept[p], plan.line[p], plan, xs_line[0][p],
                                                              xs_line[1][p], xs_line[2][p], g)
            return g, (jnp.stack(gh), jnp.stack(go), tuple(gother))

        if plan.scanned:
            back = _scanned_back(plan)
        g, g_line = lax.scan(_renormalised(back), g, (starts, _with_branch(plan, xs)), reverse=True)
    g_pre = ([None] * len(plan.prefix), [None] * len(plan.prefix), [None] * len(plan.prefix))
    for t in reversed(range(len(plan.prefix))):
        g, a, b, c = _step_linear_bwd(prefix_carries[t], plan.prefix[t], plan, pre_h[t], pre_old[t], pre_other[t], g)
        g_pre[0][t], g_pre[1][t], g_pre[2][t] = a, b, c
    cot_pre = (jnp.stack(g_pre[0]) if plan.prefix else jnp.zeros((0,), h.dtype),
               jnp.stack(g_pre[1]) if plan.prefix else jnp.zeros((0,), h.dtype), tuple(g_pre[2]))
    _, transpose = jax.vjp(gather, h, Jp)
    gh, gJp = transpose((cot_pre, g_line))
    return (log_z, gh, gJp[:-1]), flag


def _renormalised(back):
    """A backward line body whose adjoint at the line start is rescaled so that its pairing
    with the table there is 1, as it is exactly (log Z is homogeneous of degree one in the
    table: sum_x t(x) d log Z / d t(x) = 1). Rounding otherwise drifts the adjoint's scale like
    a random walk over the steps (float32 edge correlations off by 2e-5 on a 200000-node tree)."""

    def run(g, inputs):
        g, out = back(g, inputs)
        t = inputs[0][0]
        return g / lax.stop_gradient(jnp.sum(t * g)), out

    return run


def _scanned_back(plan: _Plan):
    """:func:`_moments_linear`'s backward line body for a scan plan: an inner scan recomputes
    the line's tables, a reverse one runs the transposed steps (switching on each position's step)."""
    K = plan.line_other[0].shape[-1]
    step = _switch([_branch(s, plan, "linear") for s in plan.line])
    step_bwd = _switch([_branch_bwd(s, plan, K) for s in plan.line])

    def back(g, inputs):
        c, (h_line, old_line, other_line, branch_line) = inputs
        rest = _unused_carry(c[0].dtype)

        def recompute(c, x):
            return step(x[0], c + rest, *x[1:])[:3], c

        _, kept = lax.scan(recompute, c, (branch_line, h_line, old_line, other_line))

        def transpose(g, x):
            kept_p, b, h_v, c_old, c_other = x
            g, g_h, g_old, g_other = step_bwd(b, kept_p, h_v, c_old, c_other, g)
            return g, (g_h, g_old, g_other)

        return lax.scan(transpose, g, (kept, branch_line, h_line, old_line, other_line), reverse=True)

    return back


def _moments_mode(h, J, plan: _Plan, mode: str):
    """((log Z, means, edge correlations), guard flag) in one mode: the hand-written
    forward-backward sweep in linear mode, reverse-mode differentiation in log mode."""
    if mode == "linear":
        return _moments_linear(h, J, plan)
    (log_z, flag), (gh, gJ) = jax.value_and_grad(lambda a, b: _log_z_mode(a, b, plan, mode), argnums=(0, 1),
                                                 has_aux=True)(h, J)
    return (log_z, gh, gJ), flag


def _moments(h, J, plan: _Plan, mode: str):
    """(log Z, means, edge correlations); "auto" switches to log mode where the linear guard fires."""
    if mode == "auto":
        value, flag = _moments_mode(h, J, plan, "linear")
        return lax.cond(flag, lambda: _moments_mode(h, J, plan, "log")[0], lambda: value)
    return _nan_where_flagged(*_moments_mode(h, J, plan, mode))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _log_z(h, J, plan: _Plan, mode: str):
    """log Z; "auto" switches to log mode under ``lax.cond`` where the linear guard fires.
    Its derivative comes from the forward-backward sweep (:func:`_moments`), not from
    reverse-mode differentiation of the elimination."""
    return _log_z_value(h, J, plan, mode)


@_log_z.defjvp
def _log_z_jvp(plan: _Plan, mode: str, primals, tangents):
    log_z, mean, edge_corr = _moments(*primals, plan, mode)
    dh, dJ = tangents
    return log_z, jnp.sum(mean * dh) + jnp.sum(edge_corr * dJ)


def _log_z_value(h, J, plan: _Plan, mode: str):
    if mode == "auto":
        value, flag = _log_z_mode(h, J, plan, "linear")
        return lax.cond(flag, lambda: _log_z_mode(h, J, plan, "log")[0], lambda: value)
    return _nan_where_flagged(*_log_z_mode(h, J, plan, mode))


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def _check_inputs(h, J, graph: Graph):
    if not isinstance(graph, Graph):
        raise ValueError(f"graph must be a jaxebm.graphs.Graph; got {type(graph).__name__}.")
    return graph_fields("", h, J, graph)


@functools.lru_cache(maxsize=128)
def _compiled(plan: _Plan, what: str, mode: str):
    """Jitted (value, guard flag) functions of one plan and mode (cached: compiled once per
    plan, mode and input dtype)."""
    if what == "log_z":
        return jax.jit(lambda h, J: _log_z_mode(h, J, plan, mode))
    if what == "moments":
        return jax.jit(lambda h, J: _moments_mode(h, J, plan, mode))
    if what == "sample":
        return jax.jit(lambda key, h, J, num_samples: _sample_mode(key, h, J, plan, mode, num_samples),
                       static_argnums=3)
    raise AssertionError(what)


def _nan_where_flagged(value, flag):
    """An explicit ``mode="linear"`` result under a caller's ``jit``: NaN where the underflow
    guard fired (the answer could be wrong; eager calls raise instead). The log pass never flags."""
    return jax.tree.map(lambda v: jnp.where(flag, jnp.asarray(jnp.nan, v.dtype), v), value)


def _run(what: str, mode: str, plan: _Plan, traced_fn, *args):
    """Run ``what`` in ``mode``. Eager "auto" calls run the linear pass and, only if its guard
    fires, the log pass (compiled on first need); an eager "linear" call whose guard fires
    raises. Traced calls use ``traced_fn`` (a lax.cond for "auto"; NaN for a flagged "linear")."""
    if not all(is_concrete(a) for a in args):
        return traced_fn(*args)
    if mode != "auto":
        value, flag = _compiled(plan, what, mode)(*args)
        if isinstance(flag, jax.core.Tracer):  # concrete inputs closed over inside a caller's trace
            return _nan_where_flagged(value, flag)
        if bool(flag):
            bits = _underflow_bits(jax.tree.leaves(value)[0].dtype)  # the dtype of h and J
            raise ValueError(
                "mode='linear' cannot be trusted for these parameters: an entry of the elimination table fell "
                f"below 2^-{bits} of its block maximum, or overflowed (very low temperature or strong couplings), "
                "so terms lost to underflow could change the answer. Use mode='auto' (the default, which switches "
                "to log space here) or mode='log'.")
        return value
    value, flag = _compiled(plan, what, "linear")(*args)
    if isinstance(flag, jax.core.Tracer):
        return traced_fn(*args)
    if bool(flag):
        value, _ = _compiled(plan, what, "log")(*args)
    return value


def log_partition(h: ArrayLike, J: ArrayLike, graph: Graph, *, max_seconds: float | None = None,
                  mode: str = "auto") -> Array:
    r"""Exact log partition function of a pairwise model on ``graph``, by elimination.

    .. math:: \log Z = \log \sum_{x \in \{-1,+1\}^n}
              \exp\Big(\sum_{e=(i,j)} J_e x_i x_j + \sum_k h_k x_k\Big)

    Differentiable: a custom JVP gives the exact means and edge correlations from the
    forward-backward sweep of :func:`moments` (and exact higher derivatives); compiled once
    per (graph, dtype, mode); jit-, vmap- and grad-compatible (inside a caller's ``jit`` the
    values of ``h`` and ``J`` are not validated, and "auto" compiles both modes under a
    ``lax.cond``).

    Args:
      h: ``(n,)`` fields.
      J: ``(E,)`` couplings, one per edge in the order of ``graph.edges``.
      graph: the :class:`~jaxebm.graphs.Graph`.
      max_seconds: refuse (ValueError with the width, table size, state count and estimated
        time) if the estimated run time exceeds this (default 600 s).
      mode: "auto" (linear space with an underflow guard, log space where it fires),
        "linear" (a ValueError where the guard fires; NaN under a caller's ``jit``) or "log"
        (see the module docstring).

    Returns:
      Scalar :math:`\log Z` in the dtype of ``h`` and ``J``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxebm import elimination, graphs
      >>> g = graphs.square_lattice(16, 16, periodic=False)
      >>> log_z = elimination.log_partition(jnp.zeros(g.n), 0.4 * jnp.ones(g.num_edges), g)
    """
    choice("mode", mode, MODES)
    h, J = _check_inputs(h, J, graph)
    check_budget(graph, max_seconds=max_seconds, mode=mode)
    plan = _plan(graph)
    return _run("log_z", mode, plan, lambda a, b: _log_z(a, b, plan, mode), h, J)


def moments(h: ArrayLike, J: ArrayLike, graph: Graph, *, max_seconds: float | None = None,
            mode: str = "auto") -> tuple[Array, Array, Array]:
    r"""Exact log partition function, means and edge correlations of a model on ``graph``.

    .. math:: \langle x_k \rangle = \frac{\partial \log Z}{\partial h_k}, \qquad
              \langle x_i x_j \rangle = \frac{\partial \log Z}{\partial J_e}, \quad e = (i, j)

    (linear mode: a forward pass keeping the table at each line start, then a backward sweep
    that recomputes each line's tables and propagates the adjoint table through the transposed
    steps, the same arithmetic as reverse-mode differentiation of :func:`log_partition`; log
    mode: reverse-mode differentiation).

    Args:
      h, J, graph, max_seconds, mode: as in :func:`log_partition`.

    Returns:
      ``(log_z, mean (n,), edge_corr (E,))``.
    """
    choice("mode", mode, MODES)
    h, J = _check_inputs(h, J, graph)
    check_budget(graph, max_seconds=None if max_seconds is None else time_limit(max_seconds) / 3, mode=mode)
    plan = _plan(graph)
    _check_memory(plan, h.dtype, "exact moments (reverse-mode differentiation)")

    return _run("moments", mode, plan, lambda a, b: _moments(a, b, plan, mode), h, J)


# --------------------------------------------------------------------------------------
# Exact sampling: backward through the tables
# --------------------------------------------------------------------------------------


def _sample_table(key, log_table, num_samples: int):
    """Flat indices drawn with probabilities proportional to ``exp(log_table)``, bit by bit
    from the most significant, with exact pairwise partial sums."""
    levels = [log_table]
    while levels[-1].shape[0] > 1:
        pairs = levels[-1].reshape(-1, 2)
        levels.append(jnp.logaddexp(pairs[:, 0], pairs[:, 1]))
    idx = jnp.zeros((num_samples,), jnp.int32)
    keys = jax.random.split(key, max(1, len(levels) - 1))
    for depth, level in enumerate(reversed(levels[:-1])):
        l0, l1 = level[2 * idx], level[2 * idx + 1]
        bit = jax.random.uniform(keys[depth], (num_samples,), log_table.dtype) < jax.nn.sigmoid(l1 - l0)
        idx = 2 * idx + bit.astype(jnp.int32)
    return idx


def _entry_log(carry, idx, plan: _Plan, mode: str):
    """Log of table entries ``idx`` up to the global scale."""
    if mode == "log":
        return carry[0][idx]
    t, S, w = carry[:3]
    block = idx >> _block_bits(plan)
    return jnp.log(t[idx] * w[block]) + S[block]


def _back_step(key, idx, carry, slot, plan: _Plan, c_old, mode: str):
    """Given the flat index after a step into ``slot``, draw the slot's previous occupant from
    the table before it (``carry``); returns (index before the step, spin of the node added)."""
    mask = jnp.left_shift(jnp.int32(1), plan.num_slots - 1 - slot).astype(jnp.int32)
    sv = jnp.where((idx & mask) != 0, 1.0, -1.0).astype(carry[0].dtype)
    i0, i1 = idx & ~mask, idx | mask
    l0 = _entry_log(carry, i0, plan, mode) - c_old * sv
    l1 = _entry_log(carry, i1, plan, mode) + c_old * sv
    u = jax.random.uniform(key, idx.shape, carry[0].dtype) < jax.nn.sigmoid(l1 - l0)
    return jnp.where(u, i1, i0), sv


def _sample_mode(key, h, J, plan: _Plan, mode: str, num_samples: int):
    """(samples, guard flag of the forward pass)."""
    Jp = _pad(J)
    key_final, key_prefix, key_lines = jax.random.split(key, 3)
    carry = _initial(plan, h.dtype, mode)
    prefix_carries = []
    for t in range(len(plan.prefix)):
        prefix_carries.append(carry)
        carry = _prefix_step(carry, plan, t, h, Jp, mode)
    x = jnp.zeros((num_samples, plan.n), h.dtype)
    if plan.num_lines:
        xs = _with_branch(plan, _line_xs(plan, h, Jp))
        body = _line_body(plan, mode)

        def save(c, xs_line):
            return body(c, xs_line)[0], c

        carry, starts = lax.scan(save, carry, xs)
    idx = _sample_table(key_final, _local_log(carry, mode), num_samples)
    flag = carry[-1]
    if plan.num_lines:
        keep_body = _line_body(plan, mode, keep_tables=True)

        def back(idx, inputs):
            start, xs_line, k = inputs
            _, kept = keep_body(start, xs_line)
            if plan.scanned:  # the slot of each position's step; the padding steps (slot -1) keep idx
                slots = jnp.asarray([s.slot for s in plan.line], jnp.int32)[xs_line[3]]

                def draw(idx, x):
                    before, key_p, slot, c_old = x
                    new, sv = _back_step(key_p, idx, before, jnp.maximum(slot, 0), plan, c_old, mode)
                    return jnp.where(slot >= 0, new, idx), sv

                idx, spins = lax.scan(draw, idx, (kept, jax.random.split(k, slots.shape[0]), slots, xs_line[1]),
                                      reverse=True)
                return idx, spins.T
            keys = jax.random.split(k, len(plan.line))
            spins = [None] * len(plan.line)
            for p in reversed(range(len(plan.line))):
                before = jax.tree.map(lambda a, p=p: a[p], kept)
                idx, spins[p] = _back_step(keys[p], idx, before, plan.line[p].slot, plan, xs_line[1][p], mode)
            return idx, jnp.stack(spins, axis=1)

        line_keys = jax.random.split(key_lines, plan.num_lines)
        idx, line_spins = lax.scan(back, idx, (starts, xs, line_keys), reverse=True)
        # line_spins: (num_lines, num_samples, L)
        # (a scan plan's padding steps have node n: dropped)
        x = x.at[:, plan.line_node.ravel()].set(jnp.transpose(line_spins, (1, 0, 2)).reshape(num_samples, -1),
                                                mode="drop")
    keys = jax.random.split(key_prefix, max(1, len(plan.prefix)))
    for t in reversed(range(len(plan.prefix))):
        idx, sv = _back_step(keys[t], idx, prefix_carries[t], plan.prefix[t].slot, plan, Jp[plan.prefix_old[t]],
                             mode)
        x = x.at[:, plan.prefix_node[t]].set(sv)
    return x, flag


def _sample(key, h, J, plan: _Plan, mode: str, num_samples: int):
    if mode == "auto":
        x, flag = _sample_mode(key, h, J, plan, "linear", num_samples)
        return lax.cond(flag, lambda: _sample_mode(key, h, J, plan, "log", num_samples)[0], lambda: x)
    return _nan_where_flagged(*_sample_mode(key, h, J, plan, mode, num_samples))


def sample_exact(key: PRNGKey, h: ArrayLike, J: ArrayLike, graph: Graph, num_samples: int, *,
                 max_seconds: float | None = None, mode: str = "auto") -> Array:
    r"""Independent exact samples of a pairwise model on ``graph``, by backward sampling.

    .. math:: x \sim q(x) = \frac1Z \exp\Big(\sum_{e=(i,j)} J_e x_i x_j + h^\top x\Big)

    The forward elimination keeps the table at the start of each line; the final table gives
    the spins left in it, and going back step by step each summed-out spin is drawn from its
    exact conditional
    :math:`q(x_u \mid \text{later spins}) \propto T(\ldots x_u \ldots)\, e^{J_{uv} x_u x_v}`
    (the tables of a line are recomputed from its start). Vectorised over samples.

    Args:
      key: PRNG key.
      h, J, graph, max_seconds, mode: as in :func:`log_partition`.
      num_samples: number of samples, a positive integer.

    Returns:
      ``(num_samples, n)`` spins in {-1, +1}, in the dtype of ``h`` and ``J``.
    """
    key = prng_key("key", key)
    choice("mode", mode, MODES)
    num_samples = count("num_samples", num_samples)
    h, J = _check_inputs(h, J, graph)
    check_budget(graph, max_seconds=max_seconds, mode=mode)
    plan = _plan(graph)
    _check_memory(plan, h.dtype, "exact sampling")
    return _run("sample", mode, plan, lambda k, a, b, m: _sample(k, a, b, plan, mode, m), key, h, J, num_samples)
