"""Pooling layers over :mod:`jaxconv.pooling`: :class:`MaxPool`,
:class:`AvgPool`, :class:`GlobalAvgPool`, :class:`GlobalMaxPool`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from .. import pooling as _pooling
from .. import shapes as _shapes
from .._args import check_bool, check_data_format, ntuple
from ._base import Layer, LayerInfo, check_shape, join, spatial_split


def _pool_rank(window, spatial_dims):
    if spatial_dims is not None:
        return spatial_dims + 1
    if not isinstance(window, int):
        return len(window) + 1
    return None


@dataclasses.dataclass(frozen=True)
class _Pool(Layer):
    window_shape: int | Sequence[int]
    stride: int | Sequence[int] | None = None
    padding: Any = "VALID"
    dilation: int | Sequence[int] = 1
    ceil_mode: bool = False
    data_format: str = "channels_last"
    spatial_dims: int | None = None

    _keeps_rank = True

    def _nd(self, shape):
        if not isinstance(self.window_shape, int):
            return len(self.window_shape)
        return len(shape) - 1

    def info(self, input_shape):
        shape = check_shape(input_shape)
        fmt = check_data_format(self.data_format)
        nd = self._nd(shape)
        spatial, c = spatial_split(shape, nd, fmt)
        window = ntuple(self.window_shape, nd, "window_shape")
        stride = window if self.stride is None else ntuple(self.stride, nd, "stride")
        check_bool(self.ceil_mode, "ceil_mode")
        check_bool(getattr(self, "count_include_pad", True), "count_include_pad")
        out = _shapes.pool_output_shape(
            spatial, window, stride=stride, padding=self.padding,
            dilation=self.dilation, ceil_mode=self.ceil_mode,
        )
        pads = _shapes.resolve_padding(
            self.padding, spatial, window, stride=stride, dilation=self.dilation
        )
        rf = (window, stride, ntuple(self.dilation, nd, "dilation"),
              tuple(lo for lo, _ in pads))
        flops = math.prod(out) * c * math.prod(window)
        return LayerInfo(join(out, c, fmt), 0, flops, rf)

    def _rank(self, params):
        return _pool_rank(self.window_shape, self.spatial_dims)

    def _window(self, x):
        if isinstance(self.window_shape, int) and self.spatial_dims is not None:
            return (self.window_shape,) * self.spatial_dims
        return self.window_shape

    def _run(self, fn, x, **extra):
        window = self._window(x)
        rank = _pool_rank(window, None)
        if rank is None:  # int window, unknown rank: one batch axis, as the ops
            return fn(x, window, stride=self.stride, padding=self.padding,
                      dilation=self.dilation, ceil_mode=self.ceil_mode,
                      data_format=self.data_format, **extra)
        if x.ndim == rank:  # no batch axis
            return self._run(fn, x[None], **extra)[0]
        return fn(x, window, stride=self.stride, padding=self.padding,
                  dilation=self.dilation, ceil_mode=self.ceil_mode,
                  data_format=self.data_format, **extra)


@dataclasses.dataclass(frozen=True)
class MaxPool(_Pool):
    """Max pooling over :func:`jaxconv.max_pool` (``stride=None``: the window).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> params, out_shape = MaxPool((2, 2)).init(jax.random.key(0), (28, 28, 8))
      >>> params, out_shape
      ({}, (14, 14, 8))
      >>> MaxPool((2, 2)).apply(params, jnp.ones((3, 28, 28, 8))).shape
      (3, 14, 14, 8)
    """

    def apply(self, params, x, *, key=None, train=False):
        return self._run(_pooling.max_pool, x)


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
    """Average pooling over :func:`jaxconv.avg_pool`.

    Example:
      >>> import jax
      >>> AvgPool(3, stride=2, padding="SAME").init(jax.random.key(0), (9, 9, 4))[1]
      (5, 5, 4)
    """

    count_include_pad: bool = True

    def apply(self, params, x, *, key=None, train=False):
        return self._run(_pooling.avg_pool, x, count_include_pad=self.count_include_pad)


@dataclasses.dataclass(frozen=True)
class _GlobalPool(Layer):
    data_format: str = "channels_last"
    spatial_dims: int | None = None

    def info(self, input_shape):
        shape = check_shape(input_shape)
        fmt = check_data_format(self.data_format)
        if len(shape) < 2:
            raise ValueError(
                f"`input_shape` (={shape}) needs a spatial and a channel axis."
            )
        c = shape[-1] if fmt == "channels_last" else shape[0]
        return LayerInfo((c,), 0, math.prod(shape), "global")

    def _rank(self, params):
        return None if self.spatial_dims is None else self.spatial_dims + 1

    def _run(self, fn, x):
        if self.spatial_dims is None:
            return fn(x, data_format=self.data_format)
        return fn(x, data_format=self.data_format, spatial_dims=self.spatial_dims)


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool(_GlobalPool):
    """Mean over all spatial positions: ``(*spatial, C) -> (C,)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> GlobalAvgPool().init(jax.random.key(0), (7, 7, 64))[1]
      (64,)
      >>> GlobalAvgPool().apply({}, jnp.ones((2, 7, 7, 64))).shape
      (2, 64)
    """

    def apply(self, params, x, *, key=None, train=False):
        return self._run(_pooling.global_avg_pool, x)


@dataclasses.dataclass(frozen=True)
class GlobalMaxPool(_GlobalPool):
    """Maximum over all spatial positions: ``(*spatial, C) -> (C,)``.

    Example:
      >>> import jax
      >>> GlobalMaxPool().init(jax.random.key(0), (7, 7, 64))[1]
      (64,)
    """

    def apply(self, params, x, *, key=None, train=False):
        return self._run(_pooling.global_max_pool, x)
