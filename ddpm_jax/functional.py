"""Model functions as pytrees, so compiled samplers and likelihoods trace once and take new params as inputs.

A `model_fn(x_t, t) -> output` is any pure function of arrays. Wrapped in a `jax.tree_util.Partial`, its
bound arrays (the params) become traced arguments of a jitted caller rather than compile-time constants, and
the same function with other params reuses the compiled code.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jax.tree_util import Partial


def bind(apply_fn: Callable, params: Any, **kwargs) -> Partial:
    """model_fn(x_t, t) = apply_fn(params, x_t, t, **kwargs), as a pytree over params and kwargs' arrays."""
    return Partial(_Apply(apply_fn), params, kwargs)


@dataclasses.dataclass(frozen=True)
class _Apply:
    """apply_fn with the argument order of `bind`; equal (same compiled code) for equal apply_fns."""

    apply_fn: Callable

    def __call__(self, params, kwargs, x_t, t):
        return self.apply_fn(params, x_t, t, **kwargs)


def as_pytree(model_fn: Callable) -> Partial:
    """`model_fn` itself if it is a Partial; else a Partial holding it (its closure stays a constant)."""
    return model_fn if isinstance(model_fn, Partial) else Partial(model_fn)
