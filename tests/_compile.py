"""A compile counter for the compile-once tests (issue #12), shared by the test modules."""

from __future__ import annotations

import contextlib

import jax


@contextlib.contextmanager
def count_compiles():
    """Counts XLA compilations (JAX's backend-compile monitoring event) inside the block."""
    compiled = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def assert_compiles_once(first_calls, second_calls):
    """Each ``second_calls[name]()`` (new values, same shapes) compiles nothing once
    ``first_calls[name]()`` has run; first checks that the counter does see a compilation."""
    with count_compiles() as compiled:
        jax.jit(lambda x: x - 1)(1.0)
    assert len(compiled) == 1
    for name in first_calls:
        jax.block_until_ready(first_calls[name]())
        with count_compiles() as compiled:
            jax.block_until_ready(second_calls[name]())
        assert compiled == [], f"{name} recompiled: {compiled}"


@contextlib.contextmanager
def compile_counter():
    """Like :func:`count_compiles`, yielding ``[number of compilations]`` instead of names."""
    counter = [0]
    with count_compiles() as compiled:
        try:
            yield counter
        finally:
            counter[0] = len(compiled)
