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
    """model_fn(x_t, t, *args) = apply_fn(params, x_t, t, *args, **kwargs), a pytree over params and kwargs.

    A bound method of an equal object (e.g. `model.apply` of an equal Flax module) gives an equal function, so
    compiled callers are reused across equal models. Extra positional args (class labels) pass through.
    """
    owner, func = getattr(apply_fn, "__self__", None), getattr(apply_fn, "__func__", apply_fn)
    try:
        hash(owner)
    except TypeError:  # an unhashable owner: keep the bound method itself (compared by identity)
        owner, func = None, apply_fn
    return Partial(_Apply(owner, func), params, kwargs)


@dataclasses.dataclass(frozen=True)
class _Apply:
    """apply_fn in `bind`'s argument order; equal for equal (owner, function) pairs."""

    owner: Any  # the object of a bound method, or None for a plain function
    func: Callable

    def __call__(self, params, kwargs, x_t, t, *args):
        fn = self.func if self.owner is None else self.func.__get__(self.owner)
        return fn(params, x_t, t, *args, **kwargs)


def as_pytree(model_fn: Callable) -> Partial:
    """`model_fn` itself if it is a Partial; else a Partial holding it (its closure stays a constant)."""
    return model_fn if isinstance(model_fn, Partial) else Partial(model_fn)
