r"""Sparse pairwise structure: the graph of a pairwise model on :math:`n` spins.

A :class:`Graph` holds ``n`` nodes and an ``(E, 2)`` edge list (``i < j``, no self-loops, no
duplicates), plus what samplers and exact solvers derive from it, all in NumPy and computed
once, on first use:

* a padded **neighbour table** (``neighbours``, ``neighbour_edges``, ``neighbour_mask``) for
  gathers in colour-class samplers;
* a proper **colouring** (``colours``, ``colour_classes``): the two classes of a bipartite
  graph (the checkerboard of an even lattice), else a greedy largest-degree-first colouring.
  The spins of one class are conditionally independent given the rest;
* an **elimination order** and its **width**, which set the cost of exact answers by summing
  spins out one at a time (:mod:`jaxebm.elimination`), about :math:`n\,2^{\mathrm{width}}`.

Width. Spins are added to a table in ``elimination_order``; a spin is summed out as soon as
all its neighbours have been added. With :math:`\pi(v)` the position of node :math:`v` and
:math:`\ell(v) = \max(\pi(v), \max_{u \sim v} \pi(u))` the step at which it is summed out,
the table at step :math:`t` (just after adding node :math:`v_t`, before summing out) spans

.. math:: F_t = \{u : \pi(u) < t \le \ell(u)\} \cup \{v_t\},
          \qquad \mathrm{width} = \max_t |F_t|,

so the largest table has :math:`2^{\mathrm{width}}` entries (the vertex separation number
plus one, i.e. at most pathwidth + 1 of the order). An open ``rows x cols`` lattice
eliminated row by row along its shorter side has width ``min(rows, cols) + 1``; a torus about
``2 min(rows, cols) + 1``.

A :class:`Graph` is frozen and hashable (by ``n`` and the edge bytes), so it can be a static
field of a jitted function's arguments. Two graphs with the same edges are equal even when
built differently (a lattice's elimination order is a construction hint, not identity).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import numpy as np

from jaxebm._validation import count, prng_key

__all__ = [
    "Graph",
    "chain",
    "erdos_renyi",
    "from_dense",
    "from_edges",
    "random_tree",
    "square_lattice",
    "width",
]

# The greedy frontier heuristic is O(n * candidates) in Python: only tried up to this size.
_GREEDY_MAX_NODES = 4000


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _check_integer_valued(name: str, arr: np.ndarray, what: str) -> None:
    """Refuses an array that is not integers or integer-valued finite floats (bools included)."""
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold {what}; got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(f"{name} must hold {what}; {name}[{row}] is {arr[row].tolist()}.")


def _check_edges(n: int, edges) -> np.ndarray:
    """Validated edges as an (E, 2) int32 array with i < j, in the order given."""
    try:
        arr = np.asarray(edges)
    except (TypeError, ValueError) as err:
        raise ValueError(f"edges must be an integer array of shape (E, 2); could not convert it ({err}).") from None
    if arr.size == 0:
        arr = np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"edges must be an integer array of shape (E, 2); got shape {arr.shape}.")
    _check_integer_valued("edges", arr, "integer node indices")
    if arr.shape[0] and (arr.min() < 0 or arr.max() >= n):
        bad = int(np.argwhere((arr < 0) | (arr >= n))[0, 0])
        raise ValueError(f"edges must hold node indices in [0, {n - 1}] (n = {n}); edges[{bad}] is "
                         f"{arr[bad].tolist()}.")
    arr = arr.astype(np.int64)
    loops = arr[:, 0] == arr[:, 1]
    if loops.any():
        bad = int(np.argmax(loops))
        raise ValueError(f"edges must not contain self-loops; edges[{bad}] is {arr[bad].tolist()}.")
    lo, hi = np.minimum(arr[:, 0], arr[:, 1]), np.maximum(arr[:, 0], arr[:, 1])
    keys = lo * n + hi
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    if np.any(counts > 1):
        dup_key = keys[first[np.argmax(counts > 1)]]
        where = np.flatnonzero(keys == dup_key)
        raise ValueError(f"edges must not contain duplicates (an edge (i, j) and (j, i) are the same); "
                         f"edges[{where[0]}] and edges[{where[1]}] both join nodes {int(lo[where[0]])} and "
                         f"{int(hi[where[0]])}.")
    return np.stack([lo, hi], axis=1).astype(np.int32)


_MAX_NODES = int(np.iinfo(np.int32).max)


def _check_colours(n: int, edges: np.ndarray, colour_hint) -> np.ndarray:
    """A validated proper colouring: (n,) integer labels, different across every edge, renumbered
    0, 1, ... in increasing order (so that no colour class is empty)."""
    colours = np.asarray(colour_hint)
    if colours.shape != (n,):
        raise ValueError(f"colour_hint must have shape ({n},) (one colour per node); got {colours.shape}.")
    _check_integer_valued("colour_hint", colours, "integer colours")
    if edges.shape[0] and np.any(colours[edges[:, 0]] == colours[edges[:, 1]]):
        bad = int(np.argmax(colours[edges[:, 0]] == colours[edges[:, 1]]))
        raise ValueError(f"colour_hint must be a proper colouring: edge {edges[bad].tolist()} joins two nodes of "
                         f"colour {colours[edges[bad, 0]]}.")
    return np.unique(colours, return_inverse=True)[1].reshape(n).astype(np.int32)


def _check_lattice_shape(n: int, shape, periodic) -> tuple[tuple[int, int], tuple[bool, bool]]:
    """Validated ``(shape, periodic)`` of a lattice: two positive sizes whose product is ``n`` and
    the wrap flags as :func:`square_lattice` takes them (both must be given)."""
    if shape is None or periodic is None:
        raise ValueError("shape and periodic must be given together (square_lattice sets both); got "
                         f"shape={shape!r}, periodic={periodic!r}.")
    try:
        rows, cols = (count("shape[0]", shape[0]), count("shape[1]", shape[1])) if len(shape) == 2 else (0, 0)
    except TypeError:
        rows = cols = 0
    if rows * cols != n:
        raise ValueError(f"shape must be (rows, cols) with rows * cols = n = {n}; got {shape!r}.")
    return (rows, cols), _wrap_flags(periodic)


def _check_order(n: int, order) -> np.ndarray:
    order = np.asarray(order)
    if order.shape != (n,) or not np.issubdtype(order.dtype, np.integer) or not np.array_equal(
            np.sort(order), np.arange(n)):
        raise ValueError(f"order must be a permutation of range({n}); got an array of shape {order.shape}.")
    return order.astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Graph:
    """An undirected simple graph on ``n`` nodes, static and hashable.

    Attributes:
      n: number of nodes (spins).
      edges: ``(E, 2)`` int32, ``i < j`` in each row, in the order given at construction
        (rows given as ``(j, i)`` are swapped). A model's couplings ``J`` ``(E,)`` follow it.
      order_hint: optional elimination order used instead of a computed one (lattices pass
        row by row along the shorter side). Not part of equality or hashing.
      colour_hint: optional proper colouring used instead of the computed one (checked).
        Not part of equality or hashing.
      shape: ``(rows, cols)`` for a lattice built by :func:`square_lattice`, else ``None``.
    """

    n: int
    edges: np.ndarray
    order_hint: np.ndarray | None = None
    colour_hint: np.ndarray | None = None
    shape: tuple[int, int] | None = None
    periodic: tuple[bool, bool] | None = None

    def __post_init__(self):
        n = count("n", self.n)
        if n > _MAX_NODES:
            raise ValueError(f"n must be at most {_MAX_NODES} (node indices are int32); got {n}.")
        edges = _check_edges(n, self.edges)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "edges", _frozen(edges))
        if self.order_hint is not None:
            object.__setattr__(self, "order_hint", _frozen(_check_order(n, self.order_hint)))
        if self.colour_hint is not None:
            object.__setattr__(self, "colour_hint", _frozen(_check_colours(n, edges, self.colour_hint)))
        if self.shape is not None or self.periodic is not None:
            shape, periodic = _check_lattice_shape(n, self.shape, self.periodic)
            object.__setattr__(self, "shape", shape)
            object.__setattr__(self, "periodic", periodic)
        object.__setattr__(self, "_hash", hash((n, edges.shape, edges.tobytes())))

    # ----------------------------------------------------------------- identity

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        if self is other:
            return True
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.n == other.n and self._hash == other._hash and self.edges.shape == other.edges.shape
                and bool(np.array_equal(self.edges, other.edges)))

    def __repr__(self) -> str:
        kind = f", shape={self.shape}, periodic={self.periodic}" if self.shape is not None else ""
        return f"Graph(n={self.n}, num_edges={self.num_edges}{kind})"

    def __getstate__(self):  # cached derived arrays are cheap to recompute
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)
        self.__post_init__()

    # ----------------------------------------------------------------- derived structure

    @property
    def num_edges(self) -> int:
        """Number of edges ``E``."""
        return int(self.edges.shape[0])

    @functools.cached_property
    def degree(self) -> np.ndarray:
        """``(n,)`` int32: number of neighbours of each node."""
        deg = np.bincount(self.edges.ravel(), minlength=self.n)
        return _frozen(deg.astype(np.int32))

    @functools.cached_property
    def _csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets (n+1,), neighbour (2E,), edge index (2E,)), neighbours sorted by edge order."""
        e = self.edges.astype(np.int64)
        src = np.concatenate([e[:, 0], e[:, 1]])
        dst = np.concatenate([e[:, 1], e[:, 0]])
        eid = np.concatenate([np.arange(len(e)), np.arange(len(e))])
        perm = np.lexsort((eid, src))
        offsets = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=self.n), out=offsets[1:])
        return offsets, dst[perm], eid[perm]

    @functools.cached_property
    def _neighbour_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        offsets, dst, eid = self._csr
        deg = self.degree
        d = max(1, int(deg.max()) if self.n else 1)
        nbr = np.zeros((self.n, d), dtype=np.int32)
        nedge = np.zeros((self.n, d), dtype=np.int32)
        mask = np.arange(d)[None, :] < deg[:, None]
        rows = np.repeat(np.arange(self.n), deg)
        cols = np.arange(len(dst)) - np.repeat(offsets[:-1], deg)
        nbr[rows, cols] = dst
        nedge[rows, cols] = eid
        return _frozen(nbr), _frozen(nedge), _frozen(mask)

    @property
    def neighbours(self) -> np.ndarray:
        """``(n, D)`` int32: neighbour indices of each node (D = max degree, at least 1),
        in the order of their edges in ``edges``; padding entries are 0."""
        return self._neighbour_table[0]

    @property
    def neighbour_edges(self) -> np.ndarray:
        """``(n, D)`` int32: index into ``edges`` of the edge to each neighbour; padding 0."""
        return self._neighbour_table[1]

    @property
    def neighbour_mask(self) -> np.ndarray:
        """``(n, D)`` bool: True for real neighbours, False for padding."""
        return self._neighbour_table[2]

    @functools.cached_property
    def colours(self) -> np.ndarray:
        """``(n,)`` int32: a proper colouring (adjacent nodes differ).

        Bipartite graphs get their two classes (per connected component, the lowest node has
        colour 0), which is the checkerboard ``(r + c) % 2`` of an even or open lattice; other
        graphs a greedy largest-degree-first colouring (Welsh and Powell, 1967)."""
        if self.colour_hint is not None:
            return self.colour_hint
        two = self._two_colouring()
        return _frozen(two if two is not None else self._greedy_colouring())

    @functools.cached_property
    def colour_classes(self) -> tuple[np.ndarray, ...]:
        """One sorted int32 array of node indices per colour."""
        colours = self.colours
        return tuple(_frozen(np.flatnonzero(colours == c).astype(np.int32)) for c in range(self.num_colours))

    @property
    def num_colours(self) -> int:
        """Number of colours used by ``colours`` (1 for a graph without edges)."""
        return int(self.colours.max()) + 1

    def _two_colouring(self) -> np.ndarray | None:
        """BFS 2-colouring, vectorised by levels; None if the graph has an odd cycle."""
        offsets, dst, _ = self._csr
        colour = np.full(self.n, -1, dtype=np.int64)
        deg = self.degree.astype(np.int64)
        for start in range(self.n):
            if colour[start] >= 0:
                continue
            colour[start] = 0
            frontier = np.array([start])
            while frontier.size:
                counts = deg[frontier]
                idx = np.repeat(offsets[frontier], counts) + (np.arange(counts.sum()) - np.repeat(
                    np.cumsum(counts) - counts, counts))
                nb = dst[idx]
                want = 1 - np.repeat(colour[frontier], counts)
                if np.any((colour[nb] >= 0) & (colour[nb] != want)):
                    return None
                new = colour[nb] < 0
                colour[nb[new]] = want[new]
                frontier = np.unique(nb[new])
        return colour.astype(np.int32)

    def _greedy_colouring(self) -> np.ndarray:
        offsets, dst, _ = self._csr
        order = np.lexsort((np.arange(self.n), -self.degree))
        colour = np.full(self.n, -1, dtype=np.int64)
        for v in order:
            used = set(colour[dst[offsets[v]:offsets[v + 1]]].tolist())
            c = 0
            while c in used:
                c += 1
            colour[v] = c
        return colour.astype(np.int32)

    @functools.cached_property
    def _order_and_width(self) -> tuple[np.ndarray, int]:
        if self.order_hint is not None:
            return self.order_hint, order_width(self, self.order_hint)
        candidates = []
        candidates.append(np.arange(self.n, dtype=np.int32))
        candidates.append(self._reverse_cuthill_mckee())
        candidates.append(self._heavy_last_depth_first_order())
        if self.n <= _GREEDY_MAX_NODES:
            candidates.append(self._greedy_frontier_order())
        best, best_cost = None, None
        for order in candidates:
            w, cost = order_width(self, order, return_cost=True)
            if best_cost is None or (cost, w) < best_cost:
                best, best_cost = order, (cost, w)
        return _frozen(best.astype(np.int32)), int(best_cost[1])

    @property
    def elimination_order(self) -> np.ndarray:
        """``(n,)`` int32: the order in which exact solvers add spins: the construction hint
        when given (a lattice's row-by-row order), else the cheapest (by ``sum_t 2^{|F_t|}``)
        of the identity, reverse Cuthill-McKee and a greedy frontier order."""
        return self._order_and_width[0]

    @property
    def width(self) -> int:
        """Largest table size exponent of ``elimination_order`` (see the module docstring):
        exact answers cost about ``n * 2^width`` operations."""
        return self._order_and_width[1]

    # ----------------------------------------------------------------- orders

    def _reverse_cuthill_mckee(self) -> np.ndarray:
        """Reverse Cuthill-McKee (Cuthill and McKee, 1969; George, 1971): BFS from a
        pseudo-peripheral node of each component, neighbours by increasing degree, reversed."""
        offsets, dst, _ = self._csr
        deg = self.degree
        seen = np.zeros(self.n, dtype=bool)
        out: list[int] = []
        for root in np.lexsort((np.arange(self.n), deg)):
            if seen[root]:
                continue
            start = self._pseudo_peripheral(int(root))
            seen[start] = True
            queue = [start]
            head = 0
            while head < len(queue):
                v = queue[head]
                head += 1
                nb = dst[offsets[v]:offsets[v + 1]]
                nb = nb[~seen[nb]]
                if nb.size:
                    nb = np.unique(nb)
                    nb = nb[np.lexsort((nb, deg[nb]))]
                    seen[nb] = True
                    queue.extend(nb.tolist())
            out.extend(queue)
        return np.asarray(out[::-1], dtype=np.int32)

    def _heavy_last_depth_first_order(self) -> np.ndarray:
        """Pre-order of a breadth-first spanning forest, each node's children taken by increasing
        subtree size (the largest last). A node leaves the frontier once its last child is in, so
        on a tree only ancestors of the current light subtrees stay: width at most log2(n) + 1."""
        offsets, dst, _ = self._csr
        n = self.n
        parent = np.full(n, -1, dtype=np.int64)
        seen = np.zeros(n, dtype=bool)
        bfs: list[int] = []
        roots: list[int] = []
        for root in range(n):
            if seen[root]:
                continue
            seen[root] = True
            roots.append(root)
            queue, head = [root], 0
            while head < len(queue):
                v = queue[head]
                head += 1
                for u in dst[offsets[v]:offsets[v + 1]].tolist():
                    if not seen[u]:
                        seen[u] = True
                        parent[u] = v
                        queue.append(u)
            bfs.extend(queue)
        size = np.ones(n, dtype=np.int64)
        for v in reversed(bfs):
            if parent[v] >= 0:
                size[parent[v]] += size[v]
        children: list[list[int]] = [[] for _ in range(n)]
        for v in bfs:
            if parent[v] >= 0:
                children[parent[v]].append(v)
        order: list[int] = []
        for root in roots:
            stack = [root]
            while stack:
                v = stack.pop()
                order.append(v)
                stack.extend(sorted(children[v], key=lambda c: (-size[c], c)))  # largest popped last
        return np.asarray(order, dtype=np.int32)

    def _bfs_levels(self, start: int) -> np.ndarray:
        offsets, dst, _ = self._csr
        level = np.full(self.n, -1, dtype=np.int64)
        level[start] = 0
        frontier = np.array([start])
        d = 0
        deg = self.degree.astype(np.int64)
        while frontier.size:
            d += 1
            counts = deg[frontier]
            idx = np.repeat(offsets[frontier], counts) + (np.arange(counts.sum()) - np.repeat(
                np.cumsum(counts) - counts, counts))
            nb = np.unique(dst[idx])
            nb = nb[level[nb] < 0]
            level[nb] = d
            frontier = nb
        return level

    def _pseudo_peripheral(self, start: int) -> int:
        """George and Liu's (1979) heuristic: walk to a node of maximal eccentricity."""
        node, ecc = start, -1
        for _ in range(8):
            level = self._bfs_levels(node)
            new_ecc = int(level.max())
            if new_ecc <= ecc:
                break
            ecc = new_ecc
            last = np.flatnonzero(level == new_ecc)
            node = int(last[np.lexsort((last, self.degree[last]))][0])
        return node

    def _greedy_frontier_order(self) -> np.ndarray:
        """Greedy: repeatedly add the node that least grows the frontier (ties: fewest
        un-added neighbours, then lowest index), starting from a pseudo-peripheral node."""
        offsets, dst, _ = self._csr
        nbrs = [set(dst[offsets[v]:offsets[v + 1]].tolist()) for v in range(self.n)]
        remaining = [len(s) for s in nbrs]  # un-added neighbours of each node
        added = np.zeros(self.n, dtype=bool)
        frontier: set[int] = set()
        candidates: set[int] = set()
        order: list[int] = []
        deg = self.degree
        while len(order) < self.n:
            if not candidates:
                rest = np.flatnonzero(~added)
                start = self._pseudo_peripheral(int(rest[np.lexsort((rest, deg[rest]))][0]))
                if added[start]:
                    start = int(rest[0])
                candidates = {start}

            def score(v):
                closes = sum(1 for u in nbrs[v] if u in frontier and remaining[u] == 1)
                opens = 1 if remaining[v] - sum(1 for u in nbrs[v] if added[u]) > 0 else 0
                return (opens - closes, remaining[v], v)

            v = min(candidates, key=score)
            candidates.discard(v)
            added[v] = True
            order.append(v)
            for u in nbrs[v]:
                remaining[u] -= 1
                if added[u]:
                    if remaining[u] == 0:
                        frontier.discard(u)
                else:
                    candidates.add(u)
            if any(not added[u] for u in nbrs[v]):
                frontier.add(v)
        return np.asarray(order, dtype=np.int32)


def order_width(graph: Graph, order, *, return_cost: bool = False):
    r"""Width of an elimination order (the largest :math:`|F_t|`, see the module docstring),
    and optionally its cost :math:`\sum_t 2^{|F_t|}` (table entries touched)."""
    order = _check_order(graph.n, order)
    pos = np.empty(graph.n, dtype=np.int64)
    pos[order] = np.arange(graph.n)
    last = pos.copy()
    if graph.num_edges:
        pe = pos[graph.edges]
        np.maximum.at(last, graph.edges[:, 0], pe[:, 1])
        np.maximum.at(last, graph.edges[:, 1], pe[:, 0])
    diff = np.zeros(graph.n + 1, dtype=np.int64)
    np.add.at(diff, pos + 1, 1)
    np.add.at(diff, last + 1, -1)
    sizes = np.cumsum(diff)[: graph.n] + 1
    w = int(sizes.max())
    if return_cost:
        with np.errstate(over="ignore"):  # a frontier of over 1023 spins costs inf
            return w, float(np.sum(np.exp2(sizes.astype(np.float64))))
    return w


def width(graph: Graph) -> int:
    """Width of ``graph``'s elimination order: exact answers cost about ``n * 2^width``."""
    if not isinstance(graph, Graph):
        raise ValueError(f"graph must be a jaxebm.graphs.Graph; got {type(graph).__name__}.")
    return graph.width


def from_edges(n: int, edges) -> Graph:
    """The graph on ``n`` nodes with the given ``(E, 2)`` edge list (kept in order; each pair
    stored as ``i < j``). Refuses self-loops, duplicates and out-of-range indices."""
    return Graph(n, edges)


def from_dense(J) -> Graph:
    """The graph of a dense coupling matrix: an edge ``(i, j)``, ``i < j``, wherever
    ``J[i, j] != 0``, in row-major order of the upper triangle (``J[i, j]`` for those edges is
    then ``J[tuple(graph.edges.T)]``). ``J`` must be square and symmetric, with a zero diagonal."""
    try:
        Jn = np.asarray(J)
    except (TypeError, ValueError) as err:
        raise ValueError(f"J must be a square numeric matrix; could not convert it ({err}).") from None
    if Jn.ndim != 2 or Jn.shape[0] != Jn.shape[1] or Jn.shape[0] == 0:
        raise ValueError(f"J must be a square (n, n) matrix with n >= 1; got shape {Jn.shape}.")
    if not (np.issubdtype(Jn.dtype, np.number) or Jn.dtype == np.bool_) or np.iscomplexobj(Jn):
        raise ValueError(f"J must be a real numeric matrix; got dtype {Jn.dtype}.")
    if np.issubdtype(Jn.dtype, np.inexact) and not np.all(np.isfinite(Jn)):
        raise ValueError("J contains NaN or infinite values; expected finite numbers.")
    if not np.array_equal(Jn != 0, (Jn != 0).T) or not np.allclose(Jn, Jn.T, rtol=1e-6, atol=0):
        raise ValueError("J must be symmetric.")
    if np.any(np.diagonal(Jn) != 0):  # as dense Ising parameters: x_k x_k = 1 is not an edge
        k = int(np.flatnonzero(np.diagonal(Jn) != 0)[0])
        raise ValueError(f"J must have a zero diagonal (a self-coupling x_k x_k = 1 is a constant, not an edge); "
                         f"got J[{k}, {k}] = {Jn[k, k]}.")
    i, j = np.nonzero(np.triu(Jn != 0, k=1))
    return Graph(Jn.shape[0], np.stack([i, j], axis=1))


def _wrap_flags(periodic) -> tuple[bool, bool]:
    if isinstance(periodic, (bool, np.bool_)):
        return bool(periodic), bool(periodic)
    try:
        a, b = periodic
    except (TypeError, ValueError):
        raise ValueError(f"periodic must be a bool or a (rows_wrap, cols_wrap) pair of bools; got {periodic!r}.") \
            from None
    if not all(isinstance(x, (bool, np.bool_)) for x in (a, b)):
        raise ValueError(f"periodic must be a bool or a (rows_wrap, cols_wrap) pair of bools; got {periodic!r}.")
    return bool(a), bool(b)


def square_lattice(rows: int, cols: int, *, periodic=True) -> Graph:
    """The ``rows x cols`` square lattice; node ``(r, c)`` has index ``r * cols + c``.

    Edges come row by row: for each node, its right neighbour then its down neighbour, then
    the wrap-around edges (each row's ``(r, cols-1) -- (r, 0)``, then each column's
    ``(rows-1, c) -- (0, c)``). A periodic dimension of size 1 adds no edge and one of size 2
    no second copy of its edge.

    Args:
      rows, cols: lattice size, positive integers.
      periodic: True (torus), False (open) or a pair ``(rows_wrap, cols_wrap)``: whether the
        last row connects to the first, and the last column to the first (a cylinder).
    """
    rows = count("rows", rows)
    cols = count("cols", cols)
    wrap_r, wrap_c = _wrap_flags(periodic)
    idx = np.arange(rows * cols).reshape(rows, cols)
    # Slot 0 of each node: its right edge; slot 1: its down edge (row-major, right first).
    slots = np.zeros((rows, cols, 2, 2), dtype=np.int64)
    slots[:, :, :, 0] = idx[:, :, None]
    slots[:, :-1, 0, 1] = idx[:, 1:]
    slots[:-1, :, 1, 1] = idx[1:, :]
    valid = np.zeros((rows, cols, 2), dtype=bool)
    valid[:, :-1, 0] = True
    valid[:-1, :, 1] = True
    parts = [slots[valid]]
    if wrap_c and cols >= 3:
        parts.append(np.stack([idx[:, -1], idx[:, 0]], axis=-1))
    if wrap_r and rows >= 3:
        parts.append(np.stack([idx[-1, :], idx[0, :]], axis=-1))
    edges = np.concatenate(parts, axis=0) if parts else np.zeros((0, 2), dtype=np.int64)
    # Row by row along the shorter side (the frontier is min(rows, cols) spins), counting a
    # wrapped direction of travel double: a torus or cylinder keeps its first line to the end.
    row_major = cols * (2 if wrap_r and rows >= 3 else 1)
    col_major = rows * (2 if wrap_c and cols >= 3 else 1)
    order = idx.ravel() if row_major <= col_major else idx.T.ravel()
    # (a(r) + b(c)) mod k is proper when a and b properly colour the row and column cycles:
    # the checkerboard when both are even or open, else 3 colours.
    def cycle_colouring(size, wrap):
        base = np.arange(size) % 2
        if wrap and size >= 3 and size % 2:
            base[-1] = 2
        return base

    a, b = cycle_colouring(rows, wrap_r), cycle_colouring(cols, wrap_c)
    k = 2 if max(a.max(), b.max()) < 2 else 3
    colour_hint = ((a[:, None] + b[None, :]) % k).ravel()
    return Graph(rows * cols, edges, order_hint=order, colour_hint=colour_hint, shape=(rows, cols),
                 periodic=(wrap_r, wrap_c))


def chain(n: int, *, periodic: bool = False) -> Graph:
    """The path ``0 - 1 - ... - (n-1)`` (a ring when ``periodic`` and ``n >= 3``)."""
    n = count("n", n)
    if not isinstance(periodic, (bool, np.bool_)):  # periodic="no" is truthy: refuse, do not guess
        raise ValueError(f"periodic must be a bool; got {periodic!r}.")
    edges = [(i, i + 1) for i in range(n - 1)]
    if periodic and n >= 3:
        edges.append((0, n - 1))
    # a 1 x n lattice: exact answers run as a scan over its spins (compiled once for any n)
    return Graph(n, np.asarray(edges, dtype=np.int64).reshape(-1, 2), order_hint=np.arange(n),
                 shape=(1, n), periodic=(False, bool(periodic)))


def _rng(key) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key (or an int seed)."""
    if isinstance(key, numbers.Integral) and not isinstance(key, (bool, np.bool_)):
        if int(key) < 0:
            raise ValueError(f"key must be a JAX PRNG key or a non-negative integer seed; got {int(key)}.")
        return np.random.default_rng(int(key))
    import jax

    key = prng_key("key", key)  # a typed key or raw key data; anything else (a bool too) is refused
    data = np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return np.random.default_rng(data.astype(np.uint64).ravel().tolist())


def erdos_renyi(key, n: int, p: float) -> Graph:
    """A G(n, p) random graph: each pair ``i < j`` is an edge with probability ``p``
    (edges in row-major order). ``key`` is a JAX PRNG key or an integer seed."""
    n = count("n", n)
    if not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1]; got {p!r}.")
    rng = _rng(key)
    i, j = np.triu_indices(n, k=1)
    keep = rng.random(i.shape[0]) < p
    return Graph(n, np.stack([i[keep], j[keep]], axis=1))


def random_tree(key, n: int) -> Graph:
    """A random labelled tree: node ``k >= 1`` joins a uniformly chosen earlier node (a random
    recursive tree). ``key`` is a JAX PRNG key or an integer seed."""
    n = count("n", n)
    rng = _rng(key)
    parents = [int(rng.integers(0, k)) for k in range(1, n)]
    return Graph(n, np.asarray([(p, k) for k, p in zip(range(1, n), parents)], dtype=np.int64).reshape(-1, 2))
