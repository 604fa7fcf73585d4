"""Compile once for public functions that take a user callable (issue #12).

A public function such as :func:`jaxebm.enumeration.log_sum_exp_states` receives a new
closure on every call (``lambda x: log_weight(params, x)``), so a ``jax.jit`` keyed on the
callable's identity would recompile every time, and one keyed on a reused callable could
silently keep stale closed-over values. Instead the callable is traced to a jaxpr (cheap:
no compilation), its closed-over arrays become explicit operands, and the jitted work is
keyed on the *printed program*: two closures that compute the same thing with different
captured arrays share one compiled executable and each gets its own values.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.extend.core

__all__ = ["Traced", "scan", "trace"]

_unique = itertools.count()


class Traced:
    """A traced function, hashable and comparable by its printed program (a static argument
    of ``jax.jit``). Call it as ``traced(consts, *args)`` with the constants :func:`trace`
    returned (or any arrays of the same shapes)."""

    __slots__ = ("jaxpr", "in_tree", "out_tree", "out_shape", "key")

    def __init__(self, jaxpr, in_tree, out_tree, out_shape, key):
        self.jaxpr, self.in_tree, self.out_tree, self.out_shape, self.key = jaxpr, in_tree, out_tree, out_shape, key

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, Traced) and self.key == other.key

    def __call__(self, consts, *args):
        leaves, in_tree = jax.tree_util.tree_flatten(args)
        if in_tree != self.in_tree:
            raise ValueError(f"arguments have structure {in_tree}; the traced function takes {self.in_tree}.")
        # jaxpr_as_fun is the public (jax.extend) evaluator; jax.core.eval_jaxpr is deprecated.
        outs = jax.extend.core.jaxpr_as_fun(jax.extend.core.ClosedJaxpr(self.jaxpr, list(consts)))(*leaves)
        return jax.tree_util.tree_unflatten(self.out_tree, outs)


def _hashable(obj):
    try:
        hash(obj)
        return obj
    except TypeError:
        return ("id", id(obj))  # the Traced holds the jaxpr, hence obj: the id stays unique


def _opaque(jaxpr) -> tuple:
    """The callable parameters of every equation (recursively), in order."""
    out = []
    for eqn in jaxpr.eqns:
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    out.extend(_opaque(sub.jaxpr))
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    out.extend(_opaque(sub))
                elif callable(sub):
                    out.append(_hashable(sub))
    return tuple(out)


def trace(fn, *example_args) -> tuple[Traced, tuple]:
    """Traces ``fn(*example_args)`` (arrays or ``jax.ShapeDtypeStruct``) and returns
    ``(traced, consts)``: ``traced(consts, *args) == fn(*args)``. Closed-over arrays (also
    tracers of an enclosing transformation) are in ``consts``, so gradients flow through them."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*example_args)
    in_tree = jax.tree_util.tree_structure(example_args)
    out_tree = jax.tree_util.tree_structure(out_shape)
    # The printed program names, but does not identify, the Python rules attached to some
    # equations (custom_jvp / custom_vjp rules, callbacks): they join the key by equality.
    key = (str(closed.jaxpr), in_tree, out_tree, _opaque(closed.jaxpr))
    if getattr(jax.config, "jax_use_simplified_jaxpr_constants", False):
        # Array constants may then be inlined (and abbreviated) in the printed program: never
        # share a compilation between two traces.
        key += (next(_unique),)
    return Traced(closed.jaxpr, in_tree, out_tree, out_shape, key), tuple(closed.consts)


@functools.partial(jax.jit, static_argnames=("traced", "num_steps"))
def scan(consts, carry, xs=None, *, traced: Traced, num_steps: int):
    """``num_steps`` iterations of a traced step ``(carry, x) -> (carry, record)`` over ``xs``
    (``None``: the step gets ``None``) as one compiled ``lax.scan``, cached on the traced
    program (see :func:`trace`)."""
    if xs is None:
        return jax.lax.scan(lambda c, _: traced(consts, c, None), carry, None, length=num_steps)
    return jax.lax.scan(lambda c, x: traced(consts, c, x), carry, xs, length=num_steps)
