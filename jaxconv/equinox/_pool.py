"""Pooling layers, as ``eqx.nn.MaxPool*`` and ``eqx.nn.AvgPool*``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax

from .. import pooling, shapes
from .._args import check_positive, positive_tuple
from ._common import CONV_PADDINGS, IntOrSeq, PaddingArg, check_input, padding_arg


class _Pool(eqx.Module):
    """Fields, padding rule and call of both pooling layers."""

    num_spatial_dims: int = eqx.field(static=True)
    kernel_size: tuple[int, ...] = eqx.field(static=True)
    stride: tuple[int, ...] = eqx.field(static=True)
    padding: str | tuple[tuple[int, int], ...] = eqx.field(static=True)
    use_ceil: bool = eqx.field(static=True)
    dilation: tuple[int, ...] = eqx.field(static=True)

    def _setup(self, nd, kernel_size, stride, padding, use_ceil, dilation) -> None:
        nd = check_positive(nd, "num_spatial_dims")
        self.num_spatial_dims = nd
        self.kernel_size = positive_tuple(kernel_size, nd, "kernel_size")
        self.stride = positive_tuple(stride, nd, "stride")
        self.dilation = positive_tuple(dilation, nd, "dilation")
        self.padding = padding_arg(padding, nd, CONV_PADDINGS)
        self.use_ceil = bool(use_ceil)

    def _pads(self, spatial) -> tuple[tuple[int, int], ...]:
        pads = shapes.resolve_padding(self.padding, spatial, self.kernel_size,
                                      stride=self.stride, dilation=self.dilation)
        if not self.use_ceil:
            return pads
        # eqx.nn's ceil rule: one more stride of padding at the end of each
        # axis whose windows do not tile the padded input exactly.
        out = []
        for n, (lo, hi), k, s, d in zip(spatial, pads, self.kernel_size,
                                        self.stride, self.dilation):
            span = d * (k - 1) + 1
            out.append((lo, hi) if (n + lo + hi - span) % s == 0 else (lo, hi + s))
        return tuple(out)

    def _run(self, x: Any, fn: Callable, **kwargs: Any) -> jax.Array:
        x = check_input(x, self.num_spatial_dims, type(self).__name__)
        with jax.named_scope(f"jaxconv.equinox.{type(self).__name__}"):
            return fn(x, self.kernel_size, stride=self.stride,
                      padding=self._pads(x.shape[1:]), dilation=self.dilation,
                      data_format="channels_first", **kwargs)


class MaxPool(_Pool):
    """N-d max pooling of one example, by :func:`jaxconv.max_pool`.

    The N-d form of ``eqx.nn.MaxPool1d/2d/3d`` (which ``eqx.nn`` builds on
    its generic ``Pool``): the maximum over each window; padded cells never
    win (a window of padding only gives ``-inf``).

    Args:
      num_spatial_dims: number of spatial axes ``D``.
      kernel_size: the window, an int or ``D`` ints.
      stride: an int or ``D`` ints (default 1, as ``eqx.nn``).
      padding: an int, ``D`` ints, ``D`` ``(lo, hi)`` pairs, or a string
        (``"VALID"``, ``"SAME"``, ...; :func:`jaxconv.shapes.resolve_padding`).
        Unlike ``eqx.nn``, a padding wider than the window is allowed.
      use_ceil: ``eqx.nn``'s rule: one more ``stride`` of padding at the end
        of each axis whose windows do not tile the padded input exactly.
      dilation: window dilation, an int or ``D`` ints.

    Raises:
      ValueError: for a bad window, stride, dilation or padding.
      TypeError: for non-integer sizes.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> jqx.MaxPool(2, 3, stride=2, padding="SAME")(jnp.ones((3, 9, 9))).shape
      (3, 5, 5)
    """

    def __init__(self, num_spatial_dims: int, kernel_size: IntOrSeq,
                 stride: IntOrSeq = 1, padding: PaddingArg = 0,
                 use_ceil: bool = False, *, dilation: IntOrSeq = 1):
        self._setup(num_spatial_dims, kernel_size, stride, padding, use_ceil,
                    dilation)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Max-pool one example ``(channels, *spatial)`` to ``(channels, *out)``.

        ``key`` is ignored (the Equinox calling convention).
        """
        del key
        return self._run(x, pooling.max_pool)


class AvgPool(_Pool):
    """N-d average pooling of one example, by :func:`jaxconv.avg_pool`.

    The N-d form of ``eqx.nn.AvgPool1d/2d/3d``.  Arguments as
    :class:`MaxPool`, plus:

    Args:
      count_include_pad: divide by the window size (``True``, the default,
        as ``eqx.nn``) or by the number of input cells in the window.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> pool = jqx.AvgPool(1, 2, stride=2, padding=1, count_include_pad=False)
      >>> pool(jnp.ones((1, 4))).tolist()  # edge windows: 1 input cell of 2
      [[1.0, 1.0, 1.0]]
    """

    count_include_pad: bool = eqx.field(static=True)

    def __init__(self, num_spatial_dims: int, kernel_size: IntOrSeq,
                 stride: IntOrSeq = 1, padding: PaddingArg = 0,
                 use_ceil: bool = False, *, dilation: IntOrSeq = 1,
                 count_include_pad: bool = True):
        self._setup(num_spatial_dims, kernel_size, stride, padding, use_ceil,
                    dilation)
        self.count_include_pad = bool(count_include_pad)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Average-pool one example ``(channels, *spatial)`` to ``(channels, *out)``.

        ``key`` is ignored (the Equinox calling convention).
        """
        del key
        return self._run(x, pooling.avg_pool, count_include_pad=self.count_include_pad)


class MaxPool1d(MaxPool):
    """:class:`MaxPool` with ``num_spatial_dims=1``, as ``eqx.nn.MaxPool1d``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> jqx.MaxPool1d(2, stride=2)(jnp.ones((3, 8))).shape
      (3, 4)
    """

    def __init__(self, kernel_size: IntOrSeq, stride: IntOrSeq = 1,
                 padding: PaddingArg = 0, use_ceil: bool = False, *,
                 dilation: IntOrSeq = 1):
        super().__init__(1, kernel_size, stride, padding, use_ceil, dilation=dilation)


class MaxPool2d(MaxPool):
    """:class:`MaxPool` with ``num_spatial_dims=2``, as ``eqx.nn.MaxPool2d``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> jqx.MaxPool2d(3, stride=2, padding=1, use_ceil=True)(
      ...     jnp.ones((3, 8, 8))).shape
      (3, 5, 5)
    """

    def __init__(self, kernel_size: IntOrSeq, stride: IntOrSeq = 1,
                 padding: PaddingArg = 0, use_ceil: bool = False, *,
                 dilation: IntOrSeq = 1):
        super().__init__(2, kernel_size, stride, padding, use_ceil, dilation=dilation)


class MaxPool3d(MaxPool):
    """:class:`MaxPool` with ``num_spatial_dims=3``, as ``eqx.nn.MaxPool3d``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> jqx.MaxPool3d(2, stride=2)(jnp.ones((3, 8, 8, 8))).shape
      (3, 4, 4, 4)
    """

    def __init__(self, kernel_size: IntOrSeq, stride: IntOrSeq = 1,
                 padding: PaddingArg = 0, use_ceil: bool = False, *,
                 dilation: IntOrSeq = 1):
        super().__init__(3, kernel_size, stride, padding, use_ceil, dilation=dilation)


class AvgPool1d(AvgPool):
    """:class:`AvgPool` with ``num_spatial_dims=1``, as ``eqx.nn.AvgPool1d``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> jqx.AvgPool1d(2, stride=2)(jnp.ones((3, 8))).shape
      (3, 4)
    """

    def __init__(self, kernel_size: IntOrSeq, stride: IntOrSeq = 1,
                 padding: PaddingArg = 0, use_ceil: bool = False, *,
                 dilation: IntOrSeq = 1, count_include_pad: bool = True):
        super().__init__(1, kernel_size, stride, padding, use_ceil, dilation=dilation,
                         count_include_pad=count_include_pad)


class AvgPool2d(AvgPool):
    """:class:`AvgPool` with ``num_spatial_dims=2``, as ``eqx.nn.AvgPool2d``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> jqx.AvgPool2d(2, stride=2)(jnp.ones((3, 8, 8))).shape
      (3, 4, 4)
    """

    def __init__(self, kernel_size: IntOrSeq, stride: IntOrSeq = 1,
                 padding: PaddingArg = 0, use_ceil: bool = False, *,
                 dilation: IntOrSeq = 1, count_include_pad: bool = True):
        super().__init__(2, kernel_size, stride, padding, use_ceil, dilation=dilation,
                         count_include_pad=count_include_pad)


class AvgPool3d(AvgPool):
    """:class:`AvgPool` with ``num_spatial_dims=3``, as ``eqx.nn.AvgPool3d``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> jqx.AvgPool3d(2, stride=2)(jnp.ones((3, 8, 8, 8))).shape
      (3, 4, 4, 4)
    """

    def __init__(self, kernel_size: IntOrSeq, stride: IntOrSeq = 1,
                 padding: PaddingArg = 0, use_ceil: bool = False, *,
                 dilation: IntOrSeq = 1, count_include_pad: bool = True):
        super().__init__(3, kernel_size, stride, padding, use_ceil, dilation=dilation,
                         count_include_pad=count_include_pad)
