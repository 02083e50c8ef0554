"""Convolution layers over the friendly ops :func:`jaxconv.conv` and
:func:`jaxconv.conv_transpose`: :class:`Conv`, :class:`DepthwiseConv`,
:class:`ConvTranspose`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .. import shapes as _shapes
from .._args import (
    check_bool,
    check_data_format,
    check_positive,
    ntuple,
    positive_tuple,
)
from .._conv import conv, conv_transpose
from .._typing import Padding
from ..algorithms.plan import check_algorithm
from ..padding import normalize_padding_mode
from ._base import (
    Initializer,
    Layer,
    LayerInfo,
    add_bias,
    bias_init_field,
    check_shape,
    join,
    kernel_init_field,
    promote,
    spatial_split,
)


def _geometry(layer, input_shape):
    """``(spatial, c_in, kernel, nd)`` of a conv layer on one example."""
    shape = check_shape(input_shape)
    fmt = check_data_format(layer.data_format)
    nd = len(layer.kernel_size) if not isinstance(layer.kernel_size, int) else (
        len(shape) - 1
    )
    if isinstance(layer.kernel_size, int) and nd < 1:
        # An int kernel size means "every spatial axis": an input with none
        # (e.g. after Flatten) is a mistake, not a 0-D convolution (pass
        # kernel_size=() for that).
        raise ValueError(f"`kernel_size` (={layer.kernel_size}) needs spatial axes, "
                         f"but `input_shape` (={tuple(shape)}) has none; pass "
                         "kernel_size=() for a 0-D convolution.")
    spatial, c_in = spatial_split(shape, nd, fmt)
    kernel = positive_tuple(layer.kernel_size, nd, "kernel_size")
    # Options the shapes alone do not check, so that `init` (not the first
    # `apply`) reports them.
    check_algorithm(layer.algorithm)
    check_bool(getattr(layer, "use_bias", True), "use_bias")
    for name in ("kernel_init", "bias_init"):
        init = getattr(layer, name, None)
        if init is not None and not callable(init):
            raise TypeError(f"`{name}` (={init!r}) must be a callable "
                            "(key, shape, dtype) -> array, e.g. "
                            "jax.nn.initializers.lecun_normal().")
    mode = getattr(layer, "padding_mode", "zeros")
    normalize_padding_mode(mode, nd)
    return spatial, c_in, kernel, nd


def _init_kernel(key, init, kernel, fan_in_ch, out_ch, data_format, dtype):
    """Initialise in ``(*k, I, O)`` layout (fan-in = prod(k) * I), then relayout."""
    w = init(key, (*kernel, fan_in_ch, out_ch), dtype)
    if data_format == "channels_first":
        w = jnp.moveaxis(w, (-1, -2), (0, 1))
    return w


@dataclasses.dataclass(frozen=True)
class Conv(Layer):
    """N-d convolution layer over :func:`jaxconv.conv`, with a bias.

    The kernel is ``(*kernel_size, C_in // groups, features)`` for
    ``channels_last`` (Flax / lax ``HWIO``) and ``(features, C_in // groups,
    *kernel_size)`` for ``channels_first`` (PyTorch).  Every option of
    :func:`jaxconv.conv` is a field with the same default.

    Attributes:
      features: output channels.
      kernel_size: an int (as many spatial axes as the input has) or one int
        per spatial axis.
      stride: as in :func:`jaxconv.conv`.
      padding: as in :func:`jaxconv.conv`.
      dilation: as in :func:`jaxconv.conv`.
      groups: as in :func:`jaxconv.conv`.
      padding_mode: as in :func:`jaxconv.conv`.
      data_format: as in :func:`jaxconv.conv`.
      algorithm: as in :func:`jaxconv.conv`.
      precision: as in :func:`jaxconv.conv`.
      preferred_element_type: as in :func:`jaxconv.conv`.
      use_bias: add a bias per output channel.
      kernel_init: a ``jax.nn.initializers``-style function for the kernel.
      bias_init: a ``jax.nn.initializers``-style function for the bias.
      param_dtype: dtype of the parameters.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = Conv(32, (3, 3), padding="SAME")
      >>> params, out_shape = layer.init(jax.random.key(0), (28, 28, 1))
      >>> out_shape, params["kernel"].shape, params["bias"].shape
      ((28, 28, 32), (3, 3, 1, 32), (32,))
      >>> layer.apply(params, jnp.ones((5, 28, 28, 1))).shape
      (5, 28, 28, 32)
    """

    features: int
    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] = 1
    padding: Padding = "VALID"
    dilation: int | Sequence[int] = 1
    groups: int = 1
    padding_mode: Any = "zeros"
    data_format: str = "channels_last"
    algorithm: str = "auto"
    precision: Any = None
    preferred_element_type: Any = None
    use_bias: bool = True
    kernel_init: Initializer = kernel_init_field()
    bias_init: Initializer = bias_init_field()
    param_dtype: Any = jnp.float32

    def info(self, input_shape):
        spatial, c_in, kernel, nd = _geometry(self, input_shape)
        c_out = check_positive(self.features, "features")
        out = _shapes.conv_output_shape(
            spatial, kernel, stride=self.stride, padding=self.padding,
            dilation=self.dilation,
        )
        params = _shapes.conv_params(
            kernel, c_in, c_out, groups=self.groups, bias=self.use_bias
        )
        flops = _shapes.conv_flops(
            spatial, kernel, c_in, c_out, stride=self.stride, padding=self.padding,
            dilation=self.dilation, groups=self.groups,
        )
        pads = _shapes.resolve_padding(
            self.padding, spatial, kernel, stride=self.stride, dilation=self.dilation
        )
        rf = (kernel, ntuple(self.stride, nd, "stride"),
              ntuple(self.dilation, nd, "dilation"), tuple(lo for lo, _ in pads))
        return LayerInfo(join(out, c_out, self.data_format), params, flops, rf)

    def _init_params(self, key, input_shape):
        _, c_in, kernel, _ = _geometry(self, input_shape)
        k1, k2 = jax.random.split(key)
        params = {
            "kernel": _init_kernel(
                k1, self.kernel_init, kernel, c_in // self.groups, self.features,
                self.data_format, self.param_dtype,
            )
        }
        if self.use_bias:
            params["bias"] = self.bias_init(k2, (self.features,), self.param_dtype)
        return params

    def _rank(self, params):
        return params["kernel"].ndim - 1

    def apply(self, params, x, *, key=None, train=False):
        x, w = promote(x, params["kernel"])
        y = conv(
            x, w, stride=self.stride, padding=self.padding, dilation=self.dilation,
            groups=self.groups, padding_mode=self.padding_mode,
            data_format=self.data_format, algorithm=self.algorithm,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        return add_bias(y, params.get("bias"), w.ndim - 2, self.data_format)


@dataclasses.dataclass(frozen=True)
class DepthwiseConv(Layer):
    """Depthwise convolution: every input channel gets its own filters.

    A grouped :class:`Conv` with ``groups = C_in`` and ``C_in *
    channel_multiplier`` outputs; the kernel is ``(*kernel_size, 1, C_in *
    channel_multiplier)`` (channels_last) or ``(C_in * channel_multiplier, 1,
    *kernel_size)`` (channels_first).

    Example:
      >>> import jax
      >>> layer = DepthwiseConv((3, 3), channel_multiplier=2, padding="SAME")
      >>> params, out_shape = layer.init(jax.random.key(0), (16, 16, 8))
      >>> out_shape, params["kernel"].shape
      ((16, 16, 16), (3, 3, 1, 16))
    """

    kernel_size: int | Sequence[int]
    channel_multiplier: int = 1
    stride: int | Sequence[int] = 1
    padding: Padding = "VALID"
    dilation: int | Sequence[int] = 1
    padding_mode: Any = "zeros"
    data_format: str = "channels_last"
    algorithm: str = "auto"
    precision: Any = None
    use_bias: bool = True
    kernel_init: Initializer = kernel_init_field()
    bias_init: Initializer = bias_init_field()
    param_dtype: Any = jnp.float32

    def _conv(self, c_in: int) -> Conv:
        return Conv(
            c_in * check_positive(self.channel_multiplier, "channel_multiplier"),
            self.kernel_size, stride=self.stride, padding=self.padding,
            dilation=self.dilation, groups=c_in, padding_mode=self.padding_mode,
            data_format=self.data_format, algorithm=self.algorithm,
            precision=self.precision, use_bias=self.use_bias,
            kernel_init=self.kernel_init, bias_init=self.bias_init,
            param_dtype=self.param_dtype,
        )

    def _c_in(self, input_shape):
        shape = check_shape(input_shape)
        return shape[-1] if self.data_format == "channels_last" else shape[0]

    def info(self, input_shape):
        return self._conv(self._c_in(input_shape)).info(input_shape)

    def _init_params(self, key, input_shape):
        return self._conv(self._c_in(input_shape))._init_params(key, input_shape)

    def _rank(self, params):
        return params["kernel"].ndim - 1

    def apply(self, params, x, *, key=None, train=False):
        nd = params["kernel"].ndim - 2
        c_in = x.shape[-1] if self.data_format == "channels_last" else x.shape[-nd - 1]
        return self._conv(c_in).apply(params, x)


@dataclasses.dataclass(frozen=True)
class ConvTranspose(Layer):
    """Transposed convolution over :func:`jaxconv.conv_transpose`, with a bias.

    The kernel is ``(*kernel_size, C_in, features // groups)`` for
    ``channels_last`` and PyTorch's ``(C_in, features // groups,
    *kernel_size)`` for ``channels_first``.  Output size per axis:
    :func:`jaxconv.shapes.conv_transpose_output_size`.

    Example:
      >>> import jax
      >>> layer = ConvTranspose(16, (4, 4), stride=2, padding=1)
      >>> params, out_shape = layer.init(jax.random.key(0), (8, 8, 32))
      >>> out_shape, params["kernel"].shape
      ((16, 16, 16), (4, 4, 32, 16))
    """

    features: int
    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] = 1
    padding: Padding = 0
    output_padding: int | Sequence[int] = 0
    dilation: int | Sequence[int] = 1
    groups: int = 1
    output_shape: Sequence[int] | None = None
    data_format: str = "channels_last"
    algorithm: str = "auto"
    precision: Any = None
    preferred_element_type: Any = None
    use_bias: bool = True
    kernel_init: Initializer = kernel_init_field()
    bias_init: Initializer = bias_init_field()
    param_dtype: Any = jnp.float32

    def info(self, input_shape):
        spatial, c_in, kernel, nd = _geometry(self, input_shape)
        c_out = check_positive(self.features, "features")
        output_padding = self.output_padding
        if self.output_shape is not None:  # solve for output_padding, as the op
            target = tuple(self.output_shape)
            if len(target) != nd:
                raise ValueError(
                    f"`output_shape` (={self.output_shape!r}) must have {nd} "
                    f"entries (spatial sizes)."
                )
            strides = ntuple(self.stride, nd, "stride")
            dils = ntuple(self.dilation, nd, "dilation")
            pads = ((self.padding,) * nd if isinstance(self.padding, (str, int))
                    else tuple(self.padding))
            output_padding = []
            for i, (n, k, t, st, p, d) in enumerate(
                    zip(spatial, kernel, target, strides, pads, dils)):
                try:
                    output_padding.append(_shapes.solve_output_padding(
                        n, k, t, stride=st, padding=p, dilation=d))
                except ValueError as err:  # name the field, as the op does
                    raise ValueError(f"`output_shape` (={self.output_shape!r}) on "
                                     f"spatial axis {i}: {err}") from None
            output_padding = tuple(output_padding)
        out = _shapes.conv_transpose_output_shape(
            spatial, kernel, stride=self.stride, padding=self.padding,
            output_padding=output_padding, dilation=self.dilation,
        )
        # Same weights as the forward conv from `features` to `C_in` channels.
        params = _shapes.conv_params(
            kernel, c_out, c_in, groups=self.groups, bias=False
        ) + (c_out if self.use_bias else 0)
        # Every input cell scatters prod(kernel) taps into features // groups maps.
        flops = 2 * math.prod(spatial) * c_in * math.prod(kernel) * (
            c_out // self.groups
        )
        return LayerInfo(join(out, c_out, self.data_format), params, flops,
                         "unknown")

    def _init_params(self, key, input_shape):
        _, c_in, kernel, _ = _geometry(self, input_shape)
        k1, k2 = jax.random.split(key)
        c_out = self.features // self.groups
        w = self.kernel_init(k1, (*kernel, c_in, c_out), self.param_dtype)
        if self.data_format == "channels_first":
            w = jnp.moveaxis(w, (-2, -1), (0, 1))
        params = {"kernel": w}
        if self.use_bias:
            params["bias"] = self.bias_init(k2, (self.features,), self.param_dtype)
        return params

    def _rank(self, params):
        return params["kernel"].ndim - 1

    def apply(self, params, x, *, key=None, train=False):
        x, w = promote(x, params["kernel"])
        y = conv_transpose(
            x, w, stride=self.stride, padding=self.padding,
            output_padding=self.output_padding, dilation=self.dilation,
            groups=self.groups, output_shape=self.output_shape,
            data_format=self.data_format, algorithm=self.algorithm,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        return add_bias(y, params.get("bias"), w.ndim - 2, self.data_format)
