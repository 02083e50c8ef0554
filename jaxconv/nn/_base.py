"""The layer protocol (:class:`Layer`, :class:`LayerInfo`) and shared helpers.

Helpers here are the one place each for: checking one example's shape,
splitting it into spatial axes and channels, default initialisers, dtype
promotion and adding a per-channel bias.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._args import shape_tuple

Shape = tuple[int, ...]
Initializer = Callable[..., jax.Array]


#: Flax's defaults; one shared object each, so equal configs compare equal.
LECUN_NORMAL = jax.nn.initializers.lecun_normal()
ZEROS = jax.nn.initializers.zeros


def kernel_init_field():
    return dataclasses.field(default=LECUN_NORMAL, repr=False)


def bias_init_field():
    return dataclasses.field(default=ZEROS, repr=False)


class LayerInfo(NamedTuple):
    """What a layer does to one example's shape, without running it.

    Attributes:
      output_shape: the output shape of one example.
      params: number of trainable parameters.
      flops: forward FLOPs for one example (multiply-add = 2).
      rf: receptive-field step: ``None`` (spatially pointwise), a
        ``(kernel, stride, dilation, pad_lo)`` tuple of per-axis tuples as
        :func:`jaxconv.shapes.receptive_field` takes, ``"global"`` (every
        output sees the whole input) or ``"unknown"`` (e.g. a transposed conv).
    """

    output_shape: Shape
    params: int
    flops: int
    rf: Any = None


def check_shape(input_shape: Any) -> Shape:
    """``input_shape`` (one example, no batch axes) as a tuple of positive ints."""
    return shape_tuple(input_shape, "input_shape", positive=True)


def spatial_split(shape: Shape, nd: int, data_format: str) -> tuple[Shape, int]:
    """``(spatial, channels)`` of one example's shape."""
    if len(shape) != nd + 1:
        raise ValueError(
            f"`input_shape` (={shape}) must have {nd} spatial axes and a channel "
            f"axis ({data_format}), i.e. {nd + 1} entries (no batch axes)."
        )
    if data_format == "channels_last":
        return shape[:-1], shape[-1]
    return shape[1:], shape[0]


def join(spatial: Shape, channels: int, data_format: str) -> Shape:
    """One example's shape from its spatial sizes and channel count."""
    if data_format == "channels_last":
        return (*spatial, channels)
    return (channels, *spatial)


def promote(x, w):
    """``x`` and ``w`` in their common dtype (as Flax's ``promote_dtype``)."""
    x = jnp.asarray(x)
    dtype = jnp.promote_types(x.dtype, w.dtype)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = w.dtype
    return x.astype(dtype), w.astype(dtype)


def add_bias(y, b, nd: int, data_format: str):
    """``y`` plus the per-channel bias ``b`` (``None``: no bias)."""
    if b is None:
        return y
    b = b.astype(y.dtype)  # explicit broadcasting (rank promotion may raise)
    if data_format == "channels_last":
        return y + b.reshape((1,) * (y.ndim - 1) + (-1,))
    return y + b.reshape((1,) * (y.ndim - nd - 1) + (-1,) + (1,) * nd)


class Layer:
    """Base class: ``init``, ``apply`` and ``info`` (shape inference)."""

    def info(self, input_shape: Sequence[int]) -> LayerInfo:  # pragma: no cover
        raise NotImplementedError

    def init(self, key: jax.Array, input_shape: Sequence[int]):
        """Parameters and output shape for one example of ``input_shape``."""
        info = self.info(input_shape)
        shape = check_shape(input_shape)
        # One compiled function instead of many small eager ops.
        params = jax.jit(lambda k: self._init_params(k, shape))(key)
        return params, info.output_shape

    def _init_params(self, key, input_shape: Shape) -> dict:
        return {}

    def apply(self, params, x, *, key=None, train: bool = False):  # pragma: no cover
        raise NotImplementedError

    def __call__(self, params, x, *, key=None, train: bool = False):
        return self.apply(params, x, key=key, train=train)

    # The per-example rank of the input, when params or config tell it.
    def _rank(self, params) -> int | None:
        return None

    # Layers that keep the rank (pointwise ops, pools): Sequential looks
    # through them to find the input rank.
    _keeps_rank = False

    def _name(self) -> str:
        return type(self).__name__
