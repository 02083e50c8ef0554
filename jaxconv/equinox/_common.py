"""Argument handling and initialisation shared by the Equinox layers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .._args import check_positive, normalize_padding_string, pad_pairs

PaddingArg = str | int | Sequence[int] | Sequence[tuple[int, int]]
IntOrSeq = int | Sequence[int]
CONV_PADDINGS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")


def default_dtype():
    """Equinox's default parameter dtype: float64 under x64, else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def uniform_init(key, shape, dtype, lim: float) -> jax.Array:
    """``eqx.nn``'s initialisation: U(-lim, lim), real and imaginary parts apart."""
    if jnp.issubdtype(dtype, jnp.complexfloating):
        real_dtype = jnp.finfo(dtype).dtype
        rkey, ikey = jax.random.split(key, 2)
        real = jax.random.uniform(rkey, shape, real_dtype, minval=-lim, maxval=lim)
        imag = jax.random.uniform(ikey, shape, real_dtype, minval=-lim, maxval=lim)
        return real.astype(dtype) + 1j * imag.astype(dtype)
    return jax.random.uniform(key, shape, dtype, minval=-lim, maxval=lim)


def conv_weights(key, out_channels, grouped_in, kernel, nd, use_bias, dtype):
    """``(weight, bias)`` drawn exactly as ``eqx.nn.Conv`` and ``ConvTranspose`` do.

    ``weight`` is ``(out_channels, grouped_in, *kernel)``, ``bias``
    ``(out_channels, 1, ..., 1)`` (or ``None``), both U(-lim, lim) with
    ``lim = 1 / sqrt(grouped_in * prod(kernel))`` from the two halves of
    ``jax.random.split(key)``.
    """
    dtype = default_dtype() if dtype is None else dtype
    wkey, bkey = jax.random.split(key, 2)
    lim = 1 / math.sqrt(grouped_in * math.prod(kernel))
    weight = uniform_init(wkey, (out_channels, grouped_in, *kernel), dtype, lim)
    bshape = (out_channels,) + (1,) * nd
    bias = uniform_init(bkey, bshape, dtype, lim) if use_bias else None
    return weight, bias


def check_groups(in_channels: Any, out_channels: Any, groups: Any) -> int:
    """``groups`` as an int, checked to divide both channel counts."""
    check_positive(in_channels, "in_channels")
    check_positive(out_channels, "out_channels")
    g = check_positive(groups, "groups")
    for name, c in (("in_channels", in_channels), ("out_channels", out_channels)):
        if c % g:
            raise ValueError(f"`groups` (={groups}) must divide `{name}` (={c}).")
    return g


def padding_arg(padding: Any, nd: int, strings: Sequence[str]):
    """An upper-case padding string from ``strings``, or ``nd`` ``(lo, hi)`` pairs."""
    if isinstance(padding, str):
        return normalize_padding_string(padding, tuple(strings))
    return pad_pairs(padding, nd)


def check_input(x: Any, nd: int, layer: str) -> jax.Array:
    """``x`` as an array, checked to be one unbatched example."""
    x = jnp.asarray(x)
    if x.ndim != nd + 1:
        raise ValueError(
            f"`x` (shape {x.shape}) must have rank {nd + 1} for {layer}: "
            f"(channels, {nd} spatial axes), one example; use jax.vmap(layer) "
            f"for a batch."
        )
    return x
