"""Graphs (jaxebm.graphs) and exact answers by elimination (jaxebm.elimination), against the
float64 brute force and closed forms of tests/reference.py."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import elimination, graphs, ising
from tests import reference as ref

# ----------------------------------------------------------------------------- graphs


@pytest.mark.parametrize("rows,cols,periodic", [
    (3, 4, False), (4, 3, True), (3, 5, (True, False)), (4, 4, (False, True)), (5, 5, True),
    (2, 5, True), (1, 6, True), (2, 2, True), (1, 1, True), (6, 1, (True, False)),
])
def test_square_lattice_edges_against_independent_construction(rows, cols, periodic):
    g = graphs.square_lattice(rows, cols, periodic=periodic)
    wrap = (periodic, periodic) if isinstance(periodic, bool) else periodic
    want = ref.lattice_edges(rows, cols, *wrap)
    assert g.n == rows * cols
    assert g.edges.dtype == np.int32 and g.edges.shape == (len(want), 2)
    assert np.all(g.edges[:, 0] < g.edges[:, 1])
    np.testing.assert_array_equal(np.array(sorted(map(tuple, g.edges.tolist()))).reshape(-1, 2), want)
    assert g.num_edges == len(want)


def _check_structure(g):
    e = g.edges
    deg = np.bincount(e.ravel(), minlength=g.n)
    np.testing.assert_array_equal(g.degree, deg)
    assert g.neighbours.shape == g.neighbour_edges.shape == g.neighbour_mask.shape == (g.n, max(1, deg.max(initial=0)))
    seen = set()
    for v in range(g.n):
        nb = g.neighbours[v][g.neighbour_mask[v]]
        ne = g.neighbour_edges[v][g.neighbour_mask[v]]
        assert len(nb) == deg[v]
        for u, k in zip(nb, ne):
            assert {int(e[k, 0]), int(e[k, 1])} == {v, int(u)}
            seen.add((v, int(k)))
        assert np.all(g.neighbours[v][~g.neighbour_mask[v]] == 0)
        assert np.all(g.neighbour_edges[v][~g.neighbour_mask[v]] == 0)
    assert len(seen) == 2 * g.num_edges
    # a proper colouring, and classes that partition the nodes
    if g.num_edges:
        assert np.all(g.colours[e[:, 0]] != g.colours[e[:, 1]])
    assert len(g.colour_classes) == g.num_colours
    np.testing.assert_array_equal(np.sort(np.concatenate(g.colour_classes)), np.arange(g.n))
    for c, cls in enumerate(g.colour_classes):
        assert cls.dtype == np.int32 and np.all(np.diff(cls) > 0) and np.all(g.colours[cls] == c)
    # elimination order is a permutation and the width matches its definition
    order = g.elimination_order
    np.testing.assert_array_equal(np.sort(order), np.arange(g.n))
    pos = np.empty(g.n, int)
    pos[order] = np.arange(g.n)
    sizes = []
    for t in range(g.n):
        frontier = [u for u in range(g.n)
                    if pos[u] < t and any(pos[w] >= t for w in g.neighbours[u][g.neighbour_mask[u]])]
        sizes.append(len(frontier) + 1)
    assert g.width == max(sizes) == graphs.width(g)
    assert elimination.num_slots(g) <= g.width


@pytest.mark.parametrize("make", [
    lambda: graphs.square_lattice(4, 5, periodic=False),
    lambda: graphs.square_lattice(4, 4, periodic=True),
    lambda: graphs.square_lattice(3, 5, periodic=True),
    lambda: graphs.square_lattice(5, 3, periodic=(False, True)),
    lambda: graphs.erdos_renyi(0, 14, 0.3),
    lambda: graphs.random_tree(1, 12),
    lambda: graphs.chain(7, periodic=True),
    lambda: graphs.from_edges(5, np.zeros((0, 2), int)),
])
def test_graph_structure(make):
    _check_structure(make())


def test_lattice_colouring_and_width():
    g = graphs.square_lattice(6, 8, periodic=False)
    r, c = np.divmod(np.arange(g.n), 8)
    np.testing.assert_array_equal(g.colours, (r + c) % 2)
    assert g.width == 7  # row by row along the shorter side: min(rows, cols) + 1
    np.testing.assert_array_equal(g.elimination_order, np.arange(48).reshape(6, 8).T.ravel())
    assert graphs.square_lattice(16, 16, periodic=False).width == 17
    assert graphs.square_lattice(10, 10, periodic=True).width == 21
    assert graphs.square_lattice(5, 5, periodic=True).num_colours == 3  # odd torus: not bipartite
    # a cylinder is cut into its rings: width cols + 1, not 2 * rows + 1
    assert graphs.square_lattice(9, 5, periodic=(False, True)).width == 6
    assert graphs.square_lattice(5, 9, periodic=(False, True)).width == 10


def test_trees_get_a_logarithmic_width():
    # reverse Cuthill-McKee alone gave a 5000-node random tree width 536 (a table of 2^535)
    for n in (300, 5000, 20000):
        tree = graphs.random_tree(0, n)
        assert tree.width <= math.log2(n) + 1
        assert graphs.order_width(tree, tree.elimination_order) == tree.width


def test_graph_equality_hash_and_static_use():
    a = graphs.square_lattice(4, 4, periodic=False)
    b = graphs.from_edges(16, a.edges[:, ::-1])  # (j, i) pairs are stored as (i, j)
    assert a == b and hash(a) == hash(b)
    assert a != graphs.square_lattice(4, 4, periodic=True)
    f = jax.jit(lambda x, g: x * g.num_edges, static_argnums=1)
    assert float(f(1.0, a)) == 24.0 and float(f(2.0, b)) == 48.0


def test_from_dense_and_from_edges_order():
    J = np.zeros((5, 5))
    J[0, 3] = J[3, 0] = 1.0
    J[1, 2] = J[2, 1] = -2.0
    J[0, 1] = J[1, 0] = 0.5
    g = graphs.from_dense(J)
    np.testing.assert_array_equal(g.edges, [[0, 1], [0, 3], [1, 2]])  # upper triangle, row-major
    g2 = graphs.from_edges(4, [[3, 1], [0, 2]])
    np.testing.assert_array_equal(g2.edges, [[1, 3], [0, 2]])  # order kept, pairs swapped


@pytest.mark.parametrize("n,edges,match", [
    (4, [[0, 0]], "self-loops"),
    (4, [[0, 1], [1, 0]], "duplicates"),
    (4, [[0, 1], [2, 3], [0, 1]], "duplicates"),
    (4, [[0, 4]], r"\[0, 3\]"),
    (4, [[-1, 2]], r"\[0, 3\]"),
    (4, [[0.5, 1]], "integer"),
    (4, [0, 1], r"\(E, 2\)"),
    (4, [[0, 1, 2]], r"\(E, 2\)"),
    (4, [["a", "b"]], "integer"),
    (0, [[0, 1]], "n must be"),
    (2.5, [[0, 1]], "n must be"),
])
def test_from_edges_refuses_bad_input(n, edges, match):
    with pytest.raises(ValueError, match=match):
        graphs.from_edges(n, edges)


def test_other_constructors_refuse_bad_input():
    with pytest.raises(ValueError, match="symmetric"):
        graphs.from_dense(np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="square"):
        graphs.from_dense(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"zero diagonal .*J\[0, 0\] = 1"):  # it was dropped silently
        graphs.from_dense([[1, 1], [1, 0]])
    with pytest.raises(ValueError, match="periodic"):
        graphs.square_lattice(3, 3, periodic="yes")
    with pytest.raises(ValueError, match="rows"):
        graphs.square_lattice(0, 3)
    with pytest.raises(ValueError, match="graph must be"):
        graphs.width("not a graph")


def test_graph_constructor_checks_its_hints_shape_and_size():
    tri = [[0, 1], [1, 2], [0, 2]]
    # colour labels are any integers, renumbered 0, 1, ... (a negative label dropped a node from its class)
    g = graphs.Graph(4, tri, colour_hint=[-1, 5, 1, 2])
    assert g.colours.tolist() == [0, 3, 1, 2]
    assert sorted(np.concatenate(g.colour_classes).tolist()) == [0, 1, 2, 3]
    for hint, match in [([0, 1, 1.7, 2], r"integer colours; colour_hint\[2\] is 1.7"),
                        ([0, 0, 1, 2], r"proper colouring: edge \[0, 1\] joins two nodes of colour 0"),
                        ([0, 1, 2], r"shape \(4,\)"), ([True, False, True, False], "integer")]:
        with pytest.raises(ValueError, match=match):
            graphs.Graph(4, tri, colour_hint=hint)
    # shape and periodic: both, well formed (periodic=None crashed the elimination plan)
    for kw, match in [(dict(shape=(2, 2)), "given together"), (dict(periodic=(True, False)), "given together"),
                      (dict(shape=(2, 2), periodic="x"), "pair of bools"),
                      (dict(shape=(3,), periodic=(True, True)), "rows \\* cols = n = 4")]:
        with pytest.raises(ValueError, match=match):
            graphs.Graph(4, tri, **kw)
    assert graphs.Graph(4, tri, shape=[2, 2], periodic=[False, np.bool_(True)]).periodic == (False, True)
    # node indices are int32: a larger n wrapped them around silently
    with pytest.raises(ValueError, match="n must be at most 2147483647"):
        graphs.from_edges(2**31 + 5, [[0, 2**31 + 1]])
    with pytest.raises(ValueError, match=r"edges\[0\] is \[0.0, 1e\+20\]"):  # printed as given, not cast
        graphs.from_edges(3, np.array([[0, 1e20]]))


def test_long_chains_and_rings_run_as_a_scan():
    # a chain is a 1 x n lattice: one compiled line step for any n (it unrolled one step per spin)
    for periodic in (False, True):
        g = graphs.chain(2000, periodic=periodic)
        assert elimination._plan(g).kind == "lattice" and elimination.num_slots(g) == 1 + periodic
    n, K = 2000, 0.3
    got = float(elimination.log_partition(np.zeros(n, np.float32), np.full(n - 1, K, np.float32), graphs.chain(n)))
    want = n * math.log(2.0) + (n - 1) * math.log(math.cosh(K))  # zero-field open chain
    assert abs(got - want) <= 2e-6 * want
    ring = graphs.chain(9, periodic=True)
    rng = np.random.default_rng(1)
    hr, Jr = rng.normal(size=9), rng.normal(size=9)
    log_z, mean, corr, _ = ref.graph_exact(hr, Jr, ring.edges)
    got_z, got_mean, got_corr = elimination.moments(hr.astype(np.float32), Jr.astype(np.float32), ring)
    assert abs(float(got_z) - log_z) <= 2e-6 * abs(log_z)
    np.testing.assert_allclose(got_mean, mean, atol=3e-6)
    np.testing.assert_allclose(got_corr, corr, atol=3e-6)


# ----------------------------------------------------------------------------- exact answers


SMALL_GRAPHS = {
    "open 3x4": lambda: graphs.square_lattice(3, 4, periodic=False),
    "cylinder rows 4x3": lambda: graphs.square_lattice(4, 3, periodic=(True, False)),
    "cylinder cols 3x5": lambda: graphs.square_lattice(3, 5, periodic=(False, True)),
    "torus 4x4": lambda: graphs.square_lattice(4, 4, periodic=True),
    "torus 3x5": lambda: graphs.square_lattice(3, 5, periodic=True),
    "strip 2x6 periodic": lambda: graphs.square_lattice(2, 6, periodic=True),
    "random n=14": lambda: graphs.erdos_renyi(3, 14, 0.25),
    "random n=16": lambda: graphs.erdos_renyi(4, 16, 0.2),
    "tree n=13": lambda: graphs.random_tree(5, 13),
}


def _model(g, rng, scale=1.0, field=0.5):
    return rng.normal(scale=field, size=g.n), rng.normal(scale=scale, size=g.num_edges)


@pytest.mark.parametrize("name,mode", [(name, "linear") if name not in ("torus 4x4", "random n=16")
                                       else pytest.param(name, "linear", marks=pytest.mark.slow)  # also in float64
                                       for name in SMALL_GRAPHS]
                         + [(name, "log") for name in ("torus 3x5", "cylinder rows 4x3")]
                         + [pytest.param("random n=14", "log", marks=pytest.mark.slow)])
def test_exact_against_brute_force_float32(name, mode, rng):
    g = SMALL_GRAPHS[name]()
    h, J = _model(g, rng)
    log_z, mean, corr, _ = ref.graph_exact(h, J, g.edges)
    got_z, got_mean, got_corr = elimination.moments(h.astype(np.float32), J.astype(np.float32), g, mode=mode)
    assert got_z.dtype == jnp.float32 and got_mean.shape == (g.n,) and got_corr.shape == (g.num_edges,)
    assert abs(float(got_z) - log_z) <= 2e-6 * abs(log_z)
    np.testing.assert_allclose(got_mean, mean, atol=3e-6)
    np.testing.assert_allclose(got_corr, corr, atol=3e-6)


@pytest.mark.parametrize("name,modes", [("torus 4x4", ("linear",)), ("cylinder cols 3x5", ("linear", "log")),
                                        ("random n=16", ("linear",))])
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_exact_against_brute_force_float64(name, modes, rng, x64):
    g = SMALL_GRAPHS[name]()
    h, J = _model(g, rng, scale=1.5)
    log_z, mean, corr, _ = ref.graph_exact(h, J, g.edges)
    for mode in modes:
        got_z, got_mean, got_corr = elimination.moments(h, J, g, mode=mode)
        assert got_z.dtype == jnp.float64
        assert abs(float(got_z) - log_z) <= 1e-12 * abs(log_z)
        np.testing.assert_allclose(got_mean, mean, atol=1e-12)
        np.testing.assert_allclose(got_corr, corr, atol=1e-12)


@pytest.mark.slow
def test_scale_blocks_are_exercised(monkeypatch, rng):
    # Blocks of 2 slots: most steps sum out a spin that indexes the blocks (the merge path).
    monkeypatch.setattr(elimination, "_BLOCK_BITS", 2)
    for g in (graphs.square_lattice(4, 4, periodic=True), graphs.erdos_renyi(7, 14, 0.3)):
        h, J = _model(g, rng, scale=1.5)
        log_z, mean, corr, _ = ref.graph_exact(h, J, g.edges)
        assert elimination._plan(g).block_bits == 2
        got_z, got_mean, got_corr = elimination.moments(h.astype(np.float32), J.astype(np.float32), g, mode="linear")
        assert abs(float(got_z) - log_z) <= 2e-6 * abs(log_z)
        np.testing.assert_allclose(got_mean, mean, atol=3e-6)
        np.testing.assert_allclose(got_corr, corr, atol=3e-6)


def test_gradient_of_log_partition_is_the_moments(rng):
    g = graphs.square_lattice(3, 4, periodic=(True, False))
    h, J = _model(g, rng)
    _, mean, corr, _ = ref.graph_exact(h, J, g.edges)
    gh, gJ = jax.grad(lambda a, b: elimination.log_partition(a, b, g), argnums=(0, 1))(
        jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32))
    np.testing.assert_allclose(gh, mean, atol=3e-6)
    np.testing.assert_allclose(gJ, corr, atol=3e-6)
    # and under jit + vmap over a batch of models (the traced "auto" path)
    hs = np.stack([h, -h]).astype(np.float32)
    batched = jax.jit(jax.vmap(lambda a: elimination.log_partition(a, J.astype(np.float32), g)))(hs)
    np.testing.assert_allclose(batched, [ref.graph_exact(x, J, g.edges)[0] for x in (h, -h)], rtol=2e-6)


@pytest.mark.parametrize("make", [lambda: graphs.square_lattice(9, 12, periodic=False),
                                  lambda: graphs.square_lattice(6, 10, periodic=True),
                                  lambda: graphs.square_lattice(10, 5, periodic=(True, False)),
                                  lambda: graphs.erdos_renyi(6, 16, 0.25)])
@pytest.mark.slow  # 15-25 s each: compiling reverse-mode differentiation of the elimination
def test_moments_sweep_matches_reverse_mode(make, rng):
    # moments (and the custom JVP of log_partition) use a hand-written forward-backward sweep;
    # here it is checked against plain reverse-mode differentiation of the elimination pass
    # (with scale blocks, merges and prefix steps), eagerly and under jit + vmap (the traced
    # "auto" path).
    g = make()
    h, J = (x.astype(np.float32) for x in _model(g, rng))
    plan = elimination._plan(g)

    def reverse_mode(a, b):
        return jax.value_and_grad(lambda a, b: elimination._log_z_mode(a, b, plan, "linear")[0],
                                  argnums=(0, 1))(a, b)

    z, mean, corr = elimination.moments(h, J, g, mode="linear")
    rz, (rh, rJ) = reverse_mode(h, J)
    assert abs(float(z) - float(rz)) <= 1e-6 * abs(float(rz))
    np.testing.assert_allclose(mean, rh, atol=2e-6)
    np.testing.assert_allclose(corr, rJ, atol=2e-6)
    hs = np.stack([h, -h])
    bz, bmean, bcorr = jax.jit(jax.vmap(lambda a: elimination.moments(a, J, g)))(hs)
    np.testing.assert_allclose(bz[0], z, rtol=1e-6)
    np.testing.assert_allclose(bmean[0], mean, atol=2e-6)
    np.testing.assert_allclose(bcorr[0], corr, atol=2e-6)
    _, (nh, nJ) = reverse_mode(-h, J)
    np.testing.assert_allclose(bmean[1], nh, atol=2e-6)
    np.testing.assert_allclose(bcorr[1], nJ, atol=2e-6)


@pytest.mark.parametrize("mode", ["linear", pytest.param("log", marks=pytest.mark.slow)])
def test_second_derivatives_of_log_partition_are_the_covariance(mode, rng):
    """The Hessian of log Z is the covariance of the sufficient statistics (x_k, x_i x_j):
    forward-over-reverse through the custom JVP (the sweep differentiated again) against the
    brute force, and the specific-heat form d^2 log Z / d beta^2 = Var(log w)."""
    g = graphs.square_lattice(3, 4, periodic=(True, False))
    h, J = _model(g, rng)
    *_, probs = ref.graph_exact(h, J, g.edges)
    X = ref.all_states(g.n)
    stats = np.concatenate([X, X[:, g.edges[:, 0]] * X[:, g.edges[:, 1]]], axis=1)
    mean = probs @ stats
    cov = (stats - mean).T @ ((stats - mean) * probs[:, None])
    theta = jnp.asarray(np.concatenate([h, J]), jnp.float32)

    def log_z(t):
        return elimination.log_partition(t[:g.n], t[g.n:], g, mode=mode)

    hess = jax.jit(jax.hessian(log_z))(theta)
    np.testing.assert_allclose(hess, cov, atol=2e-5)
    lw = stats @ np.concatenate([h, J])
    var = probs @ (lw - probs @ lw) ** 2
    d2 = jax.grad(jax.grad(lambda b: log_z(b * theta)))(1.0)
    assert abs(float(d2) - var) <= 1e-5 * var + 1e-5, (float(d2), var)


@pytest.mark.slow
def test_float32_agrees_with_float64_on_larger_lattices(rng):
    for g in (graphs.square_lattice(11, 11, periodic=False), graphs.square_lattice(5, 5, periodic=True)):
        h, J = _model(g, rng, field=0.2)
        lz32 = float(elimination.log_partition(h.astype(np.float32), J.astype(np.float32), g))
        with jax.enable_x64(True):
            lz64 = float(elimination.log_partition(h, J, g, mode="log"))
            lz64_linear = float(elimination.log_partition(h, J, g, mode="linear"))
        assert abs(lz64 - lz64_linear) <= 1e-12 * abs(lz64)
        assert abs(lz32 - lz64) <= 1e-6 * abs(lz64)


@pytest.mark.parametrize("K", [0.2, 0.4406868, 0.7])
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_torus_against_kaufman(K, x64):
    g = graphs.square_lattice(10, 10, periodic=True)
    want = ref.kaufman_log_z(10, 10, K)
    got = float(elimination.log_partition(np.zeros(g.n), np.full(g.num_edges, K), g))
    assert abs(got - want) <= 1e-12 * abs(want)


def test_torus_against_kaufman_float32():
    g = graphs.square_lattice(6, 7, periodic=True)
    want = ref.kaufman_log_z(6, 7, 0.44)
    got = float(elimination.log_partition(np.zeros(g.n, np.float32), np.full(g.num_edges, 0.44, np.float32), g))
    assert abs(got - want) <= 1e-6 * abs(want)


def test_open_chain_against_transfer_matrix(rng, x64):
    n = 40
    h, c = rng.normal(size=n), rng.normal(size=n - 1)
    log_z, mean, nn = ref.chain_log_z_and_moments(h, c)
    for g in (graphs.chain(n), graphs.square_lattice(1, n, periodic=False),
              graphs.square_lattice(n, 1, periodic=False)):
        got_z, got_mean, got_corr = elimination.moments(h, c, g)
        assert abs(float(got_z) - log_z) <= 1e-12 * abs(log_z)
        np.testing.assert_allclose(got_mean, mean, atol=1e-12)
        np.testing.assert_allclose(got_corr, nn, atol=1e-12)


def test_zero_field_trees(rng, x64):
    for seed in range(1):
        g = graphs.random_tree(seed, 24)
        J = rng.normal(scale=2.0, size=g.num_edges)
        got = float(elimination.log_partition(np.zeros(g.n), J, g))
        want = ref.forest_log_z(g.n, J)
        assert abs(got - want) <= 1e-12 * abs(want)
        # zero-field tree: <x_i x_j> = tanh J_e on every edge
        _, mean, corr = elimination.moments(np.zeros(g.n), J, g)
        np.testing.assert_allclose(mean, 0.0, atol=1e-12)
        np.testing.assert_allclose(corr, np.tanh(J), atol=1e-12)


def test_low_temperature_switches_to_log_space(rng):
    g = graphs.square_lattice(8, 8, periodic=False)
    h, J = _model(g, rng, scale=8.0, field=0.5)  # a table spanning far more than 2^100
    h, J = h.astype(np.float32), J.astype(np.float32)
    plan = elimination._plan(g)
    _, flag = elimination._compiled(plan, "log_z", "linear")(jnp.asarray(h), jnp.asarray(J))
    assert bool(flag)
    auto = float(elimination.log_partition(h, J, g))
    log = float(elimination.log_partition(h, J, g, mode="log"))
    assert auto == log
    with jax.enable_x64(True):
        want = float(elimination.log_partition(h.astype(np.float64), J.astype(np.float64), g, mode="log"))
    assert abs(auto - want) <= 1e-6 * abs(want)


@pytest.mark.parametrize("case", ["tie h=0", "pm1 glass beta=20", "ferromagnet h=0"])
def test_log_space_derivatives_split_ties_evenly(case):
    # Log space adds exp(a) + exp(b) with a == b wherever the field or couplings are symmetric;
    # max + log1p(exp(-|a - b|)) differentiated gives the tie to one side (means of 1 instead of 0).
    if case == "tie h=0":
        g, h, J = graphs.chain(2), np.zeros(2), np.zeros(1)
    elif case == "pm1 glass beta=20":  # "auto" runs log space here (the linear guard fires)
        p = ising.edwards_anderson(jax.random.key(0), graphs.square_lattice(2, 3, periodic=False), beta=20.0,
                                   couplings="pm1")
        g, h, J = p.graph, np.asarray(p.h, np.float64), np.asarray(p.J, np.float64)
    else:
        g = graphs.square_lattice(2, 3, periodic=False)
        h, J = np.zeros(g.n), np.full(g.num_edges, 0.3)
    log_z, mean, corr, _ = ref.graph_exact(h, J, g.edges)
    mode = "auto" if case == "pm1 glass beta=20" else "log"
    got_z, got_mean, got_corr = elimination.moments(h.astype(np.float32), J.astype(np.float32), g, mode=mode)
    np.testing.assert_allclose(got_mean, mean, atol=3e-6)
    np.testing.assert_allclose(got_corr, corr, atol=3e-6)
    if case == "pm1 glass beta=20":  # the gradient on the default path (what ising.fit and nll use)
        params = ising.GraphIsingParams(jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32), g)
        np.testing.assert_allclose(jax.grad(ising.log_partition)(params).h, mean, atol=3e-6)


def test_compiles_once(rng):
    g = graphs.square_lattice(5, 6, periodic=(True, False))
    plan = elimination._plan(g)
    h, J = _model(g, rng)
    for scale in (1.0, 0.5, 0.25):
        elimination.log_partition((scale * h).astype(np.float32), (scale * J).astype(np.float32), g, mode="linear")
        elimination.moments((scale * h).astype(np.float32), (scale * J).astype(np.float32), g, mode="linear")
    assert elimination._compiled(plan, "log_z", "linear")._cache_size() == 1
    assert elimination._compiled(plan, "moments", "linear")._cache_size() == 1
    # an equal graph built another way reuses the plan and the compiled function
    same = graphs.square_lattice(5, 6, periodic=(True, False))
    assert elimination._plan(same) is plan


# ----------------------------------------------------------------------------- scan plans

SCAN_GRAPHS = ("random n=14", "random n=16", "tree n=13")


@pytest.fixture
def scan_plans(monkeypatch):
    """Scan plans of non-lattice graphs with at most two other slots per branch (so that slots
    get several branches) and, with ``blocks``, blocks of 2 slots (most steps merge blocks)."""
    monkeypatch.setattr(elimination, "_BRANCH_MAX_OTHERS", 2)
    return lambda blocks=False: monkeypatch.setattr(elimination, "_BLOCK_BITS", 2) if blocks else None


@pytest.mark.parametrize("name,mode", [("random n=16", "linear")]  # several branches per slot
                         + [pytest.param(name, mode, marks=pytest.mark.slow) for name in SCAN_GRAPHS
                            for mode in ("linear", "log") if (name, mode) != ("random n=16", "linear")])
def test_scan_plan_against_brute_force(name, mode, scan_plans, rng):
    g = SMALL_GRAPHS[name]()
    plan = elimination._plan(g)
    assert plan.kind == "scan" and plan.num_lines == 4 and not plan.prefix
    assert len(plan.line) < g.n and max(len(s.others) for s in plan.line) <= 2
    h, J = _model(g, rng)
    log_z, mean, corr, _ = ref.graph_exact(h, J, g.edges)
    got_z, got_mean, got_corr = elimination.moments(h.astype(np.float32), J.astype(np.float32), g, mode=mode)
    assert abs(float(got_z) - log_z) <= 2e-6 * abs(log_z)
    np.testing.assert_allclose(got_mean, mean, atol=3e-6)
    np.testing.assert_allclose(got_corr, corr, atol=3e-6)
    assert float(elimination.log_partition(h.astype(np.float32), J.astype(np.float32), g, mode=mode)) == float(got_z)


@pytest.mark.parametrize("name", SCAN_GRAPHS)
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_scan_plan_float64_blocks_and_reverse_mode(name, scan_plans, rng, x64):
    scan_plans(blocks=True)  # most steps merge scale blocks
    g = SMALL_GRAPHS[name]()
    plan = elimination._plan(g)
    assert plan.kind == "scan" and plan.block_bits == 2
    h, J = _model(g, rng, scale=1.5)
    log_z, mean, corr, _ = ref.graph_exact(h, J, g.edges)
    for mode in ("linear", "log"):
        got_z, got_mean, got_corr = elimination.moments(h, J, g, mode=mode)
        assert abs(float(got_z) - log_z) <= 1e-12 * abs(log_z)
        np.testing.assert_allclose(got_mean, mean, atol=1e-12)
        np.testing.assert_allclose(got_corr, corr, atol=1e-12)
    value, (gh, gJ) = jax.value_and_grad(lambda a, b: elimination._log_z_mode(a, b, plan, "linear")[0],
                                         argnums=(0, 1))(h, J)
    assert abs(float(value) - log_z) <= 1e-12 * abs(log_z)
    np.testing.assert_allclose(gh, mean, atol=1e-12)
    np.testing.assert_allclose(gJ, corr, atol=1e-12)


def test_long_non_lattice_graphs_run_as_a_scan(rng, x64):
    # unrolled one step per spin, these compiled for hours; as a scan, a few distinct steps
    tree = graphs.random_tree(3, 3000)
    plan = elimination._plan(tree)
    assert plan.kind == "scan" and len(plan.line) <= 2 * plan.num_slots + 1
    J = rng.normal(scale=2.0, size=tree.num_edges)
    log_z, mean, corr = elimination.moments(np.zeros(tree.n), J, tree)
    want = ref.forest_log_z(tree.n, J)
    assert abs(float(log_z) - want) <= 1e-12 * abs(want)
    np.testing.assert_allclose(mean, 0.0, atol=1e-12)
    np.testing.assert_allclose(corr, np.tanh(J), atol=1e-12)  # zero-field tree: <x_i x_j> = tanh J_e
    # a path with shuffled labels (not a lattice), with fields, against the transfer matrix; compiled once
    n = 2000
    label = rng.permutation(n)  # the k-th spin along the path is node label[k]
    ends = np.sort(np.stack([label[:-1], label[1:]], axis=1), axis=1)
    by_edge = np.lexsort((ends[:, 1], ends[:, 0]))  # graph edge e is path edge by_edge[e]
    path = graphs.from_edges(n, ends[by_edge])
    assert elimination._plan(path).kind == "scan"
    for seed in range(2):
        h, c = np.random.default_rng(seed).normal(size=(2, n))
        log_z, mean, nn = ref.chain_log_z_and_moments(h, c[:-1])
        h_nodes = np.empty(n)
        h_nodes[label] = h
        got_z, got_mean, got_corr = elimination.moments(h_nodes, c[:-1][by_edge], path, mode="linear")
        assert abs(float(got_z) - log_z) <= 1e-12 * abs(log_z)
        np.testing.assert_allclose(got_mean[label], mean, atol=1e-12)
        np.testing.assert_allclose(got_corr, nn[by_edge], atol=1e-12)
    assert elimination._compiled(elimination._plan(path), "moments", "linear")._cache_size() == 1


@pytest.mark.slow  # about 10 s: full suites run it (pytest -m slow)
def test_float32_moments_of_a_50000_node_tree():
    # rounding used to drift the adjoint's scale like a random walk over the 50000 steps
    # (edge correlations off by 1.4e-5); it is renormalised at each line start now
    g = graphs.random_tree(3, 50_000)
    rng = np.random.default_rng(3)
    J, h = rng.normal(scale=1.0, size=g.num_edges), rng.normal(scale=0.3, size=g.n)
    log_z, mean, corr = elimination.moments(h.astype(np.float32), J.astype(np.float32), g)
    with jax.enable_x64(True):
        want_z, want_mean, want_corr = elimination.moments(h, J, g)
    assert abs(float(log_z) - float(want_z)) <= 2e-6 * abs(float(want_z))
    np.testing.assert_allclose(mean, want_mean, atol=3e-6)
    np.testing.assert_allclose(corr, want_corr, atol=3e-6)


@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_scan_plan_sample_exact_histogram(scan_plans, rng):
    g = SMALL_GRAPHS["random n=14"]()  # 4 lines of 4 with 2 padding steps
    assert elimination._plan(g).kind == "scan"
    _assert_exact_histogram(g, "auto", rng)


# ----------------------------------------------------------------------------- sampling


def _chi_square_threshold(dof, false_alarm=1e-6):
    from scipy.stats import chi2

    return chi2.isf(false_alarm, dof)


@pytest.mark.parametrize("g,mode", [
    (graphs.square_lattice(3, 3, periodic=True), "linear"),  # lattice plan with a fixed first line
    (graphs.square_lattice(3, 4, periodic=False), "log"),
    (graphs.erdos_renyi(11, 10, 0.35), "auto"),  # scan plan (3 lines of 4, 2 padding steps)
    (graphs.chain(10, periodic=True), "linear"),  # lattice plan with lines of one spin
])
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_sample_exact_histogram(g, mode, rng):
    _assert_exact_histogram(g, mode, rng)


def _assert_exact_histogram(g, mode, rng):
    h, J = _model(g, rng, scale=0.8, field=0.4)
    _, _, _, p = ref.graph_exact(h, J, g.edges)
    num = 40_000
    x = np.asarray(elimination.sample_exact(jax.random.key(3), h.astype(np.float32), J.astype(np.float32), g, num,
                                            mode=mode))
    assert x.shape == (num, g.n) and set(np.unique(x)) <= {-1.0, 1.0}
    codes = ((x > 0).astype(np.int64) << np.arange(g.n)).sum(axis=1)  # bit k = spin k, as ref.all_states
    counts = np.bincount(codes, minlength=2**g.n)
    expected = num * p
    # Pool the states expected fewer than 5 times into one bin; Pearson chi-square at a
    # false-alarm probability of 1e-6.
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    stat = np.sum((obs - exp) ** 2 / np.maximum(exp, 1e-300))
    assert stat < _chi_square_threshold(len(obs) - 1), stat


@pytest.mark.slow
def test_sample_exact_moments_on_larger_lattice(rng):
    g = graphs.square_lattice(6, 6, periodic=True)
    h, J = _model(g, rng, scale=0.5, field=0.2)
    h, J = h.astype(np.float32), J.astype(np.float32)
    _, mean, corr = elimination.moments(h, J, g)
    num = 20_000
    x = np.asarray(elimination.sample_exact(jax.random.key(0), h, J, g, num))
    # Each estimate has standard deviation <= 1/sqrt(num); 5.5 sigma over 108 statistics
    # (Bonferroni: false alarm < 1e-5).
    tol = 5.5 / math.sqrt(num)
    np.testing.assert_allclose(x.mean(0), mean, atol=tol)
    np.testing.assert_allclose((x[:, g.edges[:, 0]] * x[:, g.edges[:, 1]]).mean(0), corr, atol=tol)


# ----------------------------------------------------------------------------- refusals


def test_refuses_bad_parameters():
    g = graphs.square_lattice(3, 3, periodic=False)
    with pytest.raises(ValueError, match=r"J must have shape \(12,\)"):
        elimination.log_partition(np.zeros(9), np.zeros(11), g)
    with pytest.raises(ValueError, match=r"h must have shape \(9,\)"):
        elimination.log_partition(np.zeros(8), np.zeros(12), g)
    with pytest.raises(ValueError, match="NaN"):
        elimination.log_partition(np.zeros(9), np.full(12, np.nan), g)
    with pytest.raises(ValueError, match="graph must be"):
        elimination.log_partition(np.zeros(9), np.zeros(12), "3x3")
    with pytest.raises(ValueError, match="mode"):
        elimination.log_partition(np.zeros(9), np.zeros(12), g, mode="fast")
    with pytest.raises(ValueError, match="num_samples"):
        elimination.sample_exact(jax.random.key(0), np.zeros(9), np.zeros(12), g, 0)


@pytest.mark.parametrize("bad, match", [(float("nan"), "finite"), (-1.0, "> 0"), (0, "> 0"), ("60", "real number"),
                                        (True, "number of seconds")])
def test_refuses_a_bad_time_budget(bad, match):
    """max_seconds is checked as in dense enumeration (a NaN budget compared False and ran anything)."""
    g = graphs.square_lattice(3, 3, periodic=False)
    params = ising.GraphIsingParams(np.zeros(9), np.zeros(12), g)
    for run in (lambda: elimination.log_partition(params.h, params.J, g, max_seconds=bad),
                lambda: elimination.moments(params.h, params.J, g, max_seconds=bad),
                lambda: elimination.sample_exact(jax.random.key(0), params.h, params.J, g, 2, max_seconds=bad),
                lambda: ising.log_partition(params, max_seconds=bad),
                lambda: ising.moments(params, max_seconds=bad),
                lambda: ising.log_partition(ising.to_dense(params), max_seconds=bad)):
        with pytest.raises(ValueError, match=rf"max_seconds must .*{re.escape(match)}"):
            run()


def test_refuses_over_budget():
    g = graphs.square_lattice(40, 40, periodic=False)  # width 41, 2^40 table entries
    with pytest.raises(ValueError) as err:
        elimination.log_partition(np.zeros(g.n), np.zeros(g.num_edges), g)
    msg = str(err.value)
    assert "width 41" in msg and "2^40" in msg and "states" in msg and "estimated" in msg
    g = graphs.square_lattice(18, 18, periodic=False)
    with pytest.raises(ValueError, match=r"max_seconds=1e-06"):
        elimination.log_partition(np.zeros(g.n), np.zeros(g.num_edges), g, max_seconds=1e-6)
    dense = graphs.from_dense(np.ones((40, 40)) - np.eye(40))  # complete graph: width 40
    with pytest.raises(ValueError, match="width 40"):
        elimination.moments(np.zeros(40), np.zeros(dense.num_edges), dense)
    # the estimate counts the compile time (here all of it: a scan of ~10 distinct steps)
    g = graphs.erdos_renyi(0, 60, 0.05)
    with pytest.raises(ValueError, match=r"of it to compile.*max_seconds=0.5"):
        elimination.log_partition(np.zeros(g.n), np.zeros(g.num_edges), g, max_seconds=0.5)


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_24x24_open_lattice_float32_against_float64():
    g = graphs.square_lattice(24, 24, periodic=False)
    rng = np.random.default_rng(1)
    h, J = _model(g, rng, scale=1.0, field=0.1)
    lz32 = float(elimination.log_partition(h.astype(np.float32), J.astype(np.float32), g))
    with jax.enable_x64(True):
        lz64 = float(elimination.log_partition(h, J, g))
    assert abs(lz32 - lz64) <= 1e-6 * abs(lz64)


# ----------------------------------------------------------------------------- ising on graphs


def _graph_params(g, rng, scale=0.8, field=0.4, dtype=np.float32):
    from jaxebm import ising

    h, J = _model(g, rng, scale=scale, field=field)
    return ising.GraphIsingParams(jnp.asarray(h, dtype), jnp.asarray(J, dtype), g), h, J


@pytest.mark.parametrize("g,eliminate", [(graphs.from_dense(np.ones((10, 10)) - np.eye(10)), False),  # K_10: enumerate
                                         (graphs.square_lattice(5, 6, periodic=False), True)])  # n = 30: eliminate
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_ising_functions_accept_graph_params(g, eliminate, rng):
    from jaxebm import _graph_ising, ising

    assert _graph_ising.use_elimination(g) == eliminate

    params, h, J = _graph_params(g, rng)
    dense = ising.to_dense(params)
    assert isinstance(dense, ising.IsingParams) and dense.J.shape == (g.n, g.n)
    np.testing.assert_array_equal(np.asarray(dense.J)[g.edges[:, 0], g.edges[:, 1]], J.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(dense.J), np.asarray(dense.J).T)
    x = np.where(rng.random((5, g.n)) < 0.5, -1.0, 1.0)
    want_lw = ref.graph_log_weights(h.astype(np.float32), J.astype(np.float32), g.edges, x)
    np.testing.assert_allclose(ising.log_weight(params, x), want_lw, rtol=1e-5)
    np.testing.assert_allclose(ising.energy(params, x[0]), -want_lw[0], rtol=1e-5)
    log_z = ising.log_partition(params)
    mean, edge_corr = ising.moments(params)
    assert mean.shape == (g.n,) and edge_corr.shape == (g.num_edges,)
    lz, m, c = elimination.moments(h.astype(np.float32), J.astype(np.float32), g)
    assert abs(float(log_z) - float(lz)) <= 2e-6 * abs(float(lz))
    np.testing.assert_allclose(mean, m, atol=3e-6)
    np.testing.assert_allclose(edge_corr, c, atol=3e-6)
    if g.n <= 16:
        want_z, want_mean, want_corr, _ = ref.graph_exact(h, J, g.edges)
        assert abs(float(log_z) - want_z) <= 2e-6 * abs(want_z)
        np.testing.assert_allclose(mean, want_mean, atol=3e-6)
        np.testing.assert_allclose(edge_corr, want_corr, atol=3e-6)
    np.testing.assert_allclose(ising.log_prob(params, x), want_lw - float(log_z), rtol=1e-5, atol=1e-4)
    data = np.asarray(ising.sample_exact(jax.random.key(1), params, 64))
    assert data.shape == (64, g.n)
    want_nll = float(log_z) - ref.graph_log_weights(h.astype(np.float32), J.astype(np.float32), g.edges, data).mean()
    assert abs(float(ising.nll(params, data)) - want_nll) <= 1e-5 * abs(want_nll)
    m_d, c_d = ising.data_moments(data, g)
    np.testing.assert_allclose(c_d, (data[:, g.edges[:, 0]] * data[:, g.edges[:, 1]]).mean(0), atol=1e-6)
    assert abs(float(ising.nll_from_moments(params, m_d, c_d)) - want_nll) <= 1e-5 * abs(want_nll)
    # jit with the graph as a static field: gradients are the exact moment differences
    grads = jax.jit(jax.grad(ising.nll))(params, data)
    assert isinstance(grads, ising.GraphIsingParams) and grads.graph == g
    np.testing.assert_allclose(grads.h, mean - m_d, atol=2e-5)
    np.testing.assert_allclose(grads.J, edge_corr - c_d, atol=2e-5)


def test_graph_params_validation():
    from jaxebm import ising

    g = graphs.square_lattice(3, 3, periodic=False)
    with pytest.raises(ValueError, match=r"params.J must have shape \(12,\)"):
        ising.log_partition(ising.GraphIsingParams(jnp.zeros(9), jnp.zeros(13), g))
    with pytest.raises(ValueError, match=r"params.h must have shape \(9,\)"):
        ising.validate_params(ising.GraphIsingParams(jnp.zeros(8), jnp.zeros(12), g))
    with pytest.raises(ValueError, match="NaN"):
        ising.moments(ising.GraphIsingParams(jnp.zeros(9), jnp.full(12, jnp.nan), g))
    with pytest.raises(ValueError, match="graph"):
        ising.log_partition(ising.GraphIsingParams(jnp.zeros(9), jnp.zeros(12), "3x3"))
    big = graphs.square_lattice(40, 40, periodic=False)
    with pytest.raises(ValueError, match="width 41"):
        ising.log_partition(ising.GraphIsingParams(jnp.zeros(big.n), jnp.zeros(big.num_edges), big))
    with pytest.raises(ValueError, match="couplings"):
        ising.edwards_anderson(jax.random.key(0), g, couplings="uniform")
    with pytest.raises(ValueError, match="beta"):
        ising.edwards_anderson(jax.random.key(0), g, beta=-1.0)


def test_edwards_anderson():
    from jaxebm import ising

    g = graphs.square_lattice(30, 30, periodic=True)
    p = ising.edwards_anderson(jax.random.key(0), g, beta=0.5, couplings="pm1", field=0.0)
    assert p.J.shape == (g.num_edges,) and p.J.dtype == jnp.float32
    assert set(np.unique(np.asarray(p.J)).tolist()) == {-0.5, 0.5}
    np.testing.assert_array_equal(p.h, 0.0)
    q = ising.edwards_anderson(jax.random.key(1), g, beta=2.0, field=0.1)
    # Gaussian couplings of standard deviation beta; fields of standard deviation beta * field
    # (1800 and 900 draws: the sample std is within 6 standard errors)
    assert abs(float(jnp.std(q.J)) - 2.0) < 6 * 2.0 / math.sqrt(2 * g.num_edges)
    assert abs(float(jnp.std(q.h)) - 0.2) < 6 * 0.2 / math.sqrt(2 * g.n)


@pytest.mark.slow
def test_fit_on_graph_matches_moments(rng):
    import optax

    from jaxebm import ising

    g = graphs.square_lattice(3, 4, periodic=False)
    truth, _, _ = _graph_params(g, rng, scale=0.5, field=0.3)
    data = ising.sample_exact(jax.random.key(2), truth, 2000)
    start = ising.GraphIsingParams(jnp.zeros(g.n), jnp.zeros(g.num_edges), g)
    fitted, info = ising.fit(optax.lbfgs(), start, data, 40)
    assert isinstance(fitted, ising.GraphIsingParams) and fitted.graph == g
    mean, edge_corr = ising.moments(fitted)
    m_d, c_d = ising.data_moments(data, g)
    # maximum likelihood matches the data's sufficient statistics (Eq. (2.31)-(2.32))
    np.testing.assert_allclose(mean, m_d, atol=1e-4)
    np.testing.assert_allclose(edge_corr, c_d, atol=1e-4)
    assert float(info.loss[-1]) <= float(info.loss[0])


def test_builders_refuse_a_non_bool_periodic_and_a_bad_key():
    """chain(3, periodic="no") built a ring (a non-empty string is truthy); random graphs took
    any object as a key and failed with an AttributeError."""
    for bad in ("no", 1, None):
        with pytest.raises(ValueError, match="periodic must be a bool"):
            graphs.chain(3, periodic=bad)
    assert graphs.chain(4, periodic=np.bool_(True)).num_edges == 4
    for bad in ("k", True, 2.5, jax.random.split(jax.random.key(0), 2), np.zeros(2, np.int32)):
        with pytest.raises(ValueError, match="key must be"):
            graphs.random_tree(bad, 4)
    same = [graphs.random_tree(k, 6).edges for k in (jax.random.key(3), jax.random.PRNGKey(3))]
    np.testing.assert_array_equal(*same)  # a typed key and its raw data are the same key


def test_explicit_linear_mode_refuses_where_its_guard_fires(rng):
    # Strong couplings: the linear table underflows (it returned NaN, and garbage samples, silently)
    g = graphs.square_lattice(3, 4, periodic=False)
    h, J = (100 * rng.standard_normal(g.n)).astype(np.float32), (100 * rng.standard_normal(g.num_edges)).astype(
        np.float32)
    key = jax.random.key(0)
    for call in (lambda: elimination.log_partition(h, J, g, mode="linear"),
                 lambda: elimination.moments(h, J, g, mode="linear"),
                 lambda: elimination.sample_exact(key, h, J, g, 10, mode="linear"),
                 lambda: ising.log_partition(ising.GraphIsingParams(h, J, g), mode="linear")):
        with pytest.raises(ValueError, match="mode='linear' cannot be trusted.*mode='auto'"):
            call()
    # under a caller's jit the flagged linear pass is NaN, never a plausible number
    assert np.isnan(jax.jit(lambda a, b: elimination.log_partition(a, b, g, mode="linear"))(h, J))
    x = jax.jit(lambda k, a, b: elimination.sample_exact(k, a, b, g, 10, mode="linear"))(key, h, J)
    assert np.all(np.isnan(x))
    # "auto" (log space here) is exact
    log_z = ref.graph_exact(h.astype(np.float64), J.astype(np.float64), g.edges)[0]
    assert abs(float(elimination.log_partition(h, J, g)) - log_z) <= 2e-6 * abs(log_z)


def test_half_precision_and_integer_parameters_compute_in_float32():
    # float16 reached the elimination's dtype table (a KeyError); dense parameters promote to float32
    g = graphs.square_lattice(3, 3, periodic=False)
    h, J = np.full(g.n, 0.25), np.full(g.num_edges, -0.5)
    want = ref.graph_exact(h, J, g.edges)[0]
    for dtype in (np.float16, np.int32):
        scale = 4 if dtype == np.int32 else 1
        got = elimination.log_partition((scale * h).astype(dtype), (scale * J).astype(dtype), g)
        exact = want if scale == 1 else ref.graph_exact(scale * h, scale * J, g.edges)[0]
        assert got.dtype == jnp.float32 and abs(float(got) - exact) <= 2e-6 * abs(exact)
    p = ising.GraphIsingParams(h.astype(np.float16), J.astype(np.float16), g)
    assert abs(float(ising.log_partition(p, mode="linear")) - want) <= 2e-6 * abs(want)


def test_exact_functions_of_a_model_closed_over_in_a_jit():
    # concrete params inside a caller's trace: the eager dispatch called bool() on a tracer
    g = graphs.square_lattice(3, 4, periodic=False)
    p = ising.edwards_anderson(jax.random.key(0), g, beta=0.7)
    q = ising.edwards_anderson(jax.random.key(1), g, beta=0.5)
    cold = ising.edwards_anderson(jax.random.key(0), g, beta=20.0, couplings="pm1")  # "auto" runs log space
    np.testing.assert_allclose(jax.jit(lambda a: ising.kl(a, q))(p), ising.kl(p, q), rtol=1e-6)  # "auto"
    np.testing.assert_allclose(jax.jit(lambda x: ising.log_partition(p, mode="linear") + x)(0.0),
                               ising.log_partition(p, mode="linear"), rtol=1e-6)
    assert np.isnan(jax.jit(lambda x: ising.log_partition(cold, mode="linear") + x)(0.0))  # flagged: NaN
