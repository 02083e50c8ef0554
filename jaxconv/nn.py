"""Pure-functional layers with shape inference, in the spirit of ``stax``.

A layer is an immutable (frozen dataclass) configuration with two methods::

    params, out_shape = layer.init(key, input_shape)
    y = layer.apply(params, x, *, key=None, train=False)

``input_shape`` is the shape of *one example* (no batch axes), e.g.
``(28, 28, 1)`` for a channels-last image; ``x`` may carry zero or more
leading batch axes, as the ops do.  ``params`` are plain pytrees (dicts of
arrays, empty dicts for parameter-free layers) that ``optax`` and ``jax.tree``
handle directly.

Shapes, parameter counts, FLOPs and receptive fields come from
:mod:`jaxconv.shapes` only, never from running the model, so
``Sequential.summary`` is instant for any input size.

Conventions where the spec is silent:

* Initialisation follows Flax's defaults: kernels LeCun-normal
  (``jax.nn.initializers.lecun_normal``, fan-in = ``prod(kernel) * C_in /
  groups``), biases zero; pass ``kernel_init=jax.nn.initializers.he_normal()``
  for He initialisation.  Parameters are float32 unless ``param_dtype`` says
  otherwise.
* Defaults follow :func:`jaxconv.conv` (``padding="VALID"``, channels-last).
* A layer whose rank cannot be read from its parameters or configuration
  (``Flatten``, ``GlobalAvgPool``, pools with an int window) assumes one
  batch axis when used on its own, as the pooling ops do; pass
  ``spatial_dims`` (or use it inside a :class:`Sequential`, which works out
  the batch axes from the layers that know their rank) for other cases.
* FLOPs count a multiply-add as 2 (as :func:`jaxconv.shapes.conv_flops`);
  pools count one operation per window element, global pools one per input
  element; activations, dropout and flatten count 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import pooling as _pooling
from . import shapes as _shapes
from ._args import check_positive, shape_tuple

__all__ = [
    "AvgPool",
    "Conv",
    "ConvTranspose",
    "Dense",
    "DepthwiseConv",
    "Dropout",
    "Elu",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "Identity",
    "Layer",
    "LayerInfo",
    "LeakyRelu",
    "LogSoftmax",
    "MaxPool",
    "Relu",
    "Sequential",
    "Sigmoid",
    "Silu",
    "Softmax",
    "Summary",
    "SummaryRow",
    "Tanh",
    "summary",
]

Shape = tuple[int, ...]
Initializer = Callable[..., jax.Array]


#: Flax's defaults; one shared object each, so equal configs compare equal.
LECUN_NORMAL = jax.nn.initializers.lecun_normal()
ZEROS = jax.nn.initializers.zeros


def _kernel_init_field():
    return dataclasses.field(default=LECUN_NORMAL, repr=False)


def _bias_init_field():
    return dataclasses.field(default=ZEROS, repr=False)


# --------------------------------------------------------------------------
# The friendly ops (jaxconv.conv), with a local fallback while conv.py lands.
# --------------------------------------------------------------------------


def _ops():
    """``(jaxconv.conv, jaxconv.conv_transpose)`` (lazy: avoids an import cycle)."""
    from ._conv import conv, conv_transpose

    return conv, conv_transpose


# --------------------------------------------------------------------------
# Shape information shared by init and summary.
# --------------------------------------------------------------------------


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


def _check_shape(input_shape, name="input_shape") -> Shape:
    return shape_tuple(input_shape, name, positive=True)


def _ntuple(value, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def _spatial_split(shape: Shape, nd: int, data_format: str):
    """``(spatial, channels)`` of one example's shape."""
    if len(shape) != nd + 1:
        raise ValueError(
            f"`input_shape` (={shape}) must have {nd} spatial axes and a channel "
            f"axis ({data_format}), i.e. {nd + 1} entries (no batch axes)."
        )
    if data_format == "channels_last":
        return shape[:-1], shape[-1]
    return shape[1:], shape[0]


def _join(spatial: Shape, channels: int, data_format: str) -> Shape:
    if data_format == "channels_last":
        return (*spatial, channels)
    return (channels, *spatial)


def _check_format(data_format: str) -> str:
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f'`data_format` (={data_format!r}) must be "channels_last" or '
            f'"channels_first".'
        )
    return data_format


def _flatten_batch(x, rank: int):
    """``x (*batch, *example)`` as ``(B, *example)`` plus the batch shape."""
    if x.ndim < rank:
        raise ValueError(
            f"x (shape {x.shape}) has fewer axes than one example needs ({rank})."
        )
    batch = x.shape[: x.ndim - rank]
    return x.reshape((math.prod(batch), *x.shape[x.ndim - rank :])), batch


class Layer:
    """Base class: ``init``, ``apply`` and ``info`` (shape inference)."""

    def info(self, input_shape: Sequence[int]) -> LayerInfo:  # pragma: no cover
        raise NotImplementedError

    def init(self, key: jax.Array, input_shape: Sequence[int]):
        """Parameters and output shape for one example of ``input_shape``."""
        info = self.info(input_shape)
        shape = _check_shape(input_shape)
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


# --------------------------------------------------------------------------
# Convolutions
# --------------------------------------------------------------------------


def _conv_kernel_shape(kernel, c_in, c_out, groups, data_format):
    if data_format == "channels_last":
        return (*kernel, c_in // groups, c_out)
    return (c_out, c_in // groups, *kernel)


def _init_kernel(key, init, kernel, fan_in_ch, out_ch, data_format, dtype):
    """Initialise in ``(*k, I, O)`` layout (fan-in = prod(k) * I), then relayout."""
    w = init(key, (*kernel, fan_in_ch, out_ch), dtype)
    if data_format == "channels_first":
        w = jnp.moveaxis(w, (-1, -2), (0, 1))
    return w


def _promote(x, w):
    """``x`` and ``w`` in their common dtype (as Flax's ``promote_dtype``)."""
    x = jnp.asarray(x)
    dtype = jnp.promote_types(x.dtype, w.dtype)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = w.dtype
    return x.astype(dtype), w.astype(dtype)


def _bias(y, b, nd, data_format):
    if b is None:
        return y
    b = b.astype(y.dtype)  # explicit broadcasting (rank promotion may raise)
    if data_format == "channels_last":
        return y + b.reshape((1,) * (y.ndim - 1) + (-1,))
    return y + b.reshape((1,) * (y.ndim - nd - 1) + (-1,) + (1,) * nd)


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
      stride, padding, dilation, groups, padding_mode, data_format, algorithm,
        precision, preferred_element_type: as in :func:`jaxconv.conv`.
      use_bias: add a bias per output channel.
      kernel_init, bias_init: ``jax.nn.initializers``-style functions.
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
    padding: Any = "VALID"
    dilation: int | Sequence[int] = 1
    groups: int = 1
    padding_mode: Any = "zeros"
    data_format: str = "channels_last"
    algorithm: str = "auto"
    precision: Any = None
    preferred_element_type: Any = None
    use_bias: bool = True
    kernel_init: Initializer = _kernel_init_field()
    bias_init: Initializer = _bias_init_field()
    param_dtype: Any = jnp.float32

    def _geometry(self, input_shape):
        shape = _check_shape(input_shape)
        fmt = _check_format(self.data_format)
        nd = len(self.kernel_size) if not isinstance(self.kernel_size, int) else (
            len(shape) - 1
        )
        spatial, c_in = _spatial_split(shape, nd, fmt)
        kernel = _ntuple(self.kernel_size, nd)
        return spatial, c_in, kernel, nd

    def info(self, input_shape):
        spatial, c_in, kernel, nd = self._geometry(input_shape)
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
        rf = (kernel, _ntuple(self.stride, nd), _ntuple(self.dilation, nd),
              tuple(lo for lo, _ in pads))
        return LayerInfo(_join(out, c_out, self.data_format), params, flops, rf)

    def _init_params(self, key, input_shape):
        _, c_in, kernel, _ = self._geometry(input_shape)
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
        conv, _ = _ops()
        x, w = _promote(x, params["kernel"])
        y = conv(
            x, w, stride=self.stride, padding=self.padding, dilation=self.dilation,
            groups=self.groups, padding_mode=self.padding_mode,
            data_format=self.data_format, algorithm=self.algorithm,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        return _bias(y, params.get("bias"), w.ndim - 2, self.data_format)


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
    padding: Any = "VALID"
    dilation: int | Sequence[int] = 1
    padding_mode: Any = "zeros"
    data_format: str = "channels_last"
    algorithm: str = "auto"
    precision: Any = None
    use_bias: bool = True
    kernel_init: Initializer = _kernel_init_field()
    bias_init: Initializer = _bias_init_field()
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
        shape = _check_shape(input_shape)
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
    padding: Any = 0
    output_padding: int | Sequence[int] = 0
    dilation: int | Sequence[int] = 1
    groups: int = 1
    output_shape: Sequence[int] | None = None
    data_format: str = "channels_last"
    algorithm: str = "auto"
    precision: Any = None
    preferred_element_type: Any = None
    use_bias: bool = True
    kernel_init: Initializer = _kernel_init_field()
    bias_init: Initializer = _bias_init_field()
    param_dtype: Any = jnp.float32

    def _geometry(self, input_shape):
        shape = _check_shape(input_shape)
        fmt = _check_format(self.data_format)
        nd = len(self.kernel_size) if not isinstance(self.kernel_size, int) else (
            len(shape) - 1
        )
        spatial, c_in = _spatial_split(shape, nd, fmt)
        return spatial, c_in, _ntuple(self.kernel_size, nd), nd

    def info(self, input_shape):
        spatial, c_in, kernel, nd = self._geometry(input_shape)
        c_out = check_positive(self.features, "features")
        output_padding = self.output_padding
        if self.output_shape is not None:  # solve for output_padding, as the op
            target = tuple(self.output_shape)
            if len(target) != nd:
                raise ValueError(
                    f"`output_shape` (={self.output_shape!r}) must have {nd} "
                    f"entries (spatial sizes)."
                )
            strides, dils = _ntuple(self.stride, nd), _ntuple(self.dilation, nd)
            pads = ((self.padding,) * nd if isinstance(self.padding, (str, int))
                    else tuple(self.padding))
            output_padding = tuple(
                _shapes.solve_output_padding(n, k, t, stride=st, padding=p,
                                             dilation=d)
                for n, k, t, st, p, d in zip(spatial, kernel, target, strides,
                                             pads, dils)
            )
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
        return LayerInfo(_join(out, c_out, self.data_format), params, flops,
                         "unknown")

    def _init_params(self, key, input_shape):
        _, c_in, kernel, _ = self._geometry(input_shape)
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
        _, conv_transpose = _ops()
        x, w = _promote(x, params["kernel"])
        y = conv_transpose(
            x, w, stride=self.stride, padding=self.padding,
            output_padding=self.output_padding, dilation=self.dilation,
            groups=self.groups, output_shape=self.output_shape,
            data_format=self.data_format, algorithm=self.algorithm,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        return _bias(y, params.get("bias"), w.ndim - 2, self.data_format)


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------


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
        shape = _check_shape(input_shape)
        fmt = _check_format(self.data_format)
        nd = self._nd(shape)
        spatial, c = _spatial_split(shape, nd, fmt)
        window = _ntuple(self.window_shape, nd)
        stride = window if self.stride is None else _ntuple(self.stride, nd)
        out = _shapes.pool_output_shape(
            spatial, window, stride=stride, padding=self.padding,
            dilation=self.dilation, ceil_mode=self.ceil_mode,
        )
        pads = _shapes.resolve_padding(
            self.padding, spatial, window, stride=stride, dilation=self.dilation
        )
        rf = (window, stride, _ntuple(self.dilation, nd), tuple(lo for lo, _ in pads))
        flops = math.prod(out) * c * math.prod(window)
        return LayerInfo(_join(out, c, fmt), 0, flops, rf)

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
        shape = _check_shape(input_shape)
        fmt = _check_format(self.data_format)
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


# --------------------------------------------------------------------------
# Dense, Flatten
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """Flatten one example to a vector: ``(*shape) -> (prod(shape),)``.

    ``ndim`` is the number of per-example axes; ``None`` means all axes but
    the first (one batch axis) when used alone; a :class:`Sequential` works
    the batch axes out itself.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> Flatten().init(jax.random.key(0), (7, 7, 64))[1]
      (3136,)
      >>> Flatten().apply({}, jnp.ones((2, 7, 7, 64))).shape
      (2, 3136)
    """

    ndim: int | None = None

    def info(self, input_shape):
        shape = _check_shape(input_shape)
        return LayerInfo((math.prod(shape),), 0, 0, None)

    def _rank(self, params):
        return self.ndim

    def apply(self, params, x, *, key=None, train=False):
        ndim = x.ndim - 1 if self.ndim is None else self.ndim
        return x.reshape((*x.shape[: x.ndim - ndim], -1))


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer ``x @ kernel + bias`` on the last axis.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> params, out_shape = Dense(10).init(jax.random.key(0), (64,))
      >>> out_shape, params["kernel"].shape
      ((10,), (64, 10))
      >>> Dense(10).apply(params, jnp.ones((4, 64))).shape
      (4, 10)
    """

    features: int
    use_bias: bool = True
    kernel_init: Initializer = _kernel_init_field()
    bias_init: Initializer = _bias_init_field()
    param_dtype: Any = jnp.float32
    precision: Any = None

    def info(self, input_shape):
        shape = _check_shape(input_shape)
        if len(shape) != 1:
            raise ValueError(
                f"`input_shape` (={shape}) of Dense must be a vector (n,); put a "
                f"Flatten or GlobalAvgPool before it."
            )
        out = check_positive(self.features, "features")
        params = shape[0] * out + (out if self.use_bias else 0)
        return LayerInfo((out,), params, 2 * shape[0] * out, "global")

    def _init_params(self, key, input_shape):
        k1, k2 = jax.random.split(key)
        params = {"kernel": self.kernel_init(
            k1, (input_shape[-1], self.features), self.param_dtype)}
        if self.use_bias:
            params["bias"] = self.bias_init(k2, (self.features,), self.param_dtype)
        return params

    def _rank(self, params):
        return 1

    def apply(self, params, x, *, key=None, train=False):
        x, w = _promote(x, params["kernel"])
        y = jnp.matmul(x, w, precision=self.precision)
        if "bias" in params:
            y = _bias(y, params["bias"], 0, "channels_last")
        return y


# --------------------------------------------------------------------------
# Activations and Dropout
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Elementwise(Layer):
    _keeps_rank = True

    def info(self, input_shape):
        return LayerInfo(_check_shape(input_shape), 0, 0, None)

    def _fn(self, x):  # pragma: no cover
        raise NotImplementedError

    def apply(self, params, x, *, key=None, train=False):
        return self._fn(x)


def _activation(name: str, fn, doc: str):
    def _fn(self, x):
        return fn(x)

    cls = dataclasses.dataclass(frozen=True)(
        type(name, (_Elementwise,), {"_fn": _fn, "__doc__": doc,
                                     "__module__": __name__, "__qualname__": name})
    )
    return cls


Relu = _activation("Relu", jax.nn.relu, """ReLU, ``max(x, 0)``.

    Example:
      >>> import jax.numpy as jnp
      >>> Relu().apply({}, jnp.array([-1.0, 2.0])).tolist()
      [0.0, 2.0]
    """)
Gelu = _activation("Gelu", jax.nn.gelu, """GELU (tanh approximation, as Flax).

    Example:
      >>> import jax
      >>> Gelu().init(jax.random.key(0), (10,))
      ({}, (10,))
    """)
Tanh = _activation("Tanh", jnp.tanh, """Hyperbolic tangent.

    Example:
      >>> import jax.numpy as jnp
      >>> Tanh().apply({}, jnp.zeros(2)).tolist()
      [0.0, 0.0]
    """)
Sigmoid = _activation("Sigmoid", jax.nn.sigmoid, """Logistic sigmoid.

    Example:
      >>> import jax.numpy as jnp
      >>> Sigmoid().apply({}, jnp.zeros(2)).tolist()
      [0.5, 0.5]
    """)
Silu = _activation("Silu", jax.nn.silu, """SiLU / swish, ``x * sigmoid(x)``.

    Example:
      >>> import jax.numpy as jnp
      >>> Silu().apply({}, jnp.zeros(2)).tolist()
      [0.0, 0.0]
    """)
Elu = _activation("Elu", jax.nn.elu, """ELU.

    Example:
      >>> import jax.numpy as jnp
      >>> Elu().apply({}, jnp.zeros(2)).tolist()
      [0.0, 0.0]
    """)
Identity = _activation("Identity", lambda x: x, """Returns its input.

    Example:
      >>> import jax.numpy as jnp
      >>> Identity().apply({}, jnp.ones(2)).tolist()
      [1.0, 1.0]
    """)


@dataclasses.dataclass(frozen=True)
class LeakyRelu(_Elementwise):
    """Leaky ReLU with slope ``negative_slope`` below 0.

    Example:
      >>> import jax.numpy as jnp
      >>> y = LeakyRelu(0.1).apply({}, jnp.array([-1.0, 1.0]))
      >>> [round(v, 3) for v in y.tolist()]
      [-0.1, 1.0]
    """

    negative_slope: float = 0.01

    def _fn(self, x):
        return jax.nn.leaky_relu(x, self.negative_slope)


@dataclasses.dataclass(frozen=True)
class Softmax(_Elementwise):
    """Softmax over the last axis.

    Example:
      >>> import jax.numpy as jnp
      >>> Softmax().apply({}, jnp.zeros(4)).tolist()
      [0.25, 0.25, 0.25, 0.25]
    """

    def _fn(self, x):
        return jax.nn.softmax(x, axis=-1)


@dataclasses.dataclass(frozen=True)
class LogSoftmax(_Elementwise):
    """Log-softmax over the last axis.

    Example:
      >>> import jax.numpy as jnp
      >>> [round(v, 4) for v in LogSoftmax().apply({}, jnp.zeros(2)).tolist()]
      [-0.6931, -0.6931]
    """

    def _fn(self, x):
        return jax.nn.log_softmax(x, axis=-1)


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: zero each entry with probability ``rate`` in training.

    With ``train=False`` (the default) it returns its input.  With
    ``train=True`` it needs a PRNG ``key`` and rescales the kept entries by
    ``1 / (1 - rate)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = Dropout(0.5)
      >>> layer.apply({}, jnp.ones(4)).tolist()
      [1.0, 1.0, 1.0, 1.0]
      >>> y = layer.apply({}, jnp.ones(1000), key=jax.random.key(0), train=True)
      >>> sorted(set(y.tolist()))
      [0.0, 2.0]
    """

    rate: float

    _keeps_rank = True

    def __post_init__(self):
        if not 0.0 <= float(self.rate) < 1.0:
            raise ValueError(f"`rate` (={self.rate!r}) must be in [0, 1).")

    def info(self, input_shape):
        return LayerInfo(_check_shape(input_shape), 0, 0, None)

    def apply(self, params, x, *, key=None, train=False):
        if not train or self.rate == 0.0:
            return x
        if key is None:
            raise ValueError(
                "Dropout with `train=True` needs a PRNG `key` (e.g. "
                "`key=jax.random.key(0)`); pass `train=False` for inference."
            )
        keep = jax.random.bernoulli(key, 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))


# --------------------------------------------------------------------------
# Sequential and summary
# --------------------------------------------------------------------------


class SummaryRow(NamedTuple):
    """One row of :class:`Summary`.

    Attributes:
      name: the layer, e.g. ``"Conv(32, 3x3, SAME)"``.
      output_shape: one example's output shape.
      params: trainable parameters.
      flops: forward FLOPs for one example.
      receptive_field: per-axis receptive-field size (tuple), ``"global"`` or
        ``None`` (unknown, e.g. after a transposed conv).
      jump: input distance between neighbouring outputs (tuple) or ``None``.
    """

    name: str
    output_shape: Shape
    params: int
    flops: int
    receptive_field: Any
    jump: Any


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _fmt_rf(rf) -> str:
    if rf is None:
        return "?"
    if isinstance(rf, str):
        return rf
    return "x".join(str(s) for s in rf)


@dataclasses.dataclass(frozen=True)
class Summary:
    """Table of a model's layers: output shape, params, FLOPs, receptive field.

    ``str(summary)`` (and ``repr``) is the formatted table; the numbers are in
    ``rows``, ``total_params`` and ``total_flops``.  FLOPs are per example.
    """

    input_shape: Shape
    rows: tuple[SummaryRow, ...]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_flops(self) -> int:
        return sum(r.flops for r in self.rows)

    @property
    def output_shape(self) -> Shape:
        return self.rows[-1].output_shape if self.rows else self.input_shape

    def __str__(self) -> str:
        head = ("layer", "output shape", "params", "FLOPs", "receptive field")
        nd = max(len(self.input_shape) - 1, 1)
        body = [("input", _fmt_shape(self.input_shape), "", "", "x".join("1" * nd))]
        for r in self.rows:
            rf = _fmt_rf(r.receptive_field)
            if r.jump is not None and not isinstance(r.receptive_field, str):
                rf += f" (jump {'x'.join(str(j) for j in r.jump)})"
            body.append((r.name, _fmt_shape(r.output_shape), _fmt_int(r.params),
                         _fmt_int(r.flops), rf))
        body.append(("total", "", _fmt_int(self.total_params),
                     _fmt_int(self.total_flops), ""))
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(5)]

        def line(row):
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [row[i].rjust(widths[i]) for i in (2, 3)]
            cells.append(row[4].ljust(widths[4]))
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(tuple("-" * w for w in widths)))
        lines = [line(head), rule, *(line(r) for r in body[:-1]), rule,
                 line(body[-1])]
        return "\n".join(lines)

    __repr__ = __str__


def _not_one(v) -> bool:
    return any(int(e) != 1 for e in ((v,) if isinstance(v, int) else v))


def _describe(layer: Layer) -> str:
    """A short name for the summary table."""
    name = layer._name()
    if isinstance(layer, (Conv, ConvTranspose, DepthwiseConv)):
        k = layer.kernel_size
        k = "x".join(map(str, k)) if not isinstance(k, int) else str(k)
        parts = [str(layer.features)] if not isinstance(layer, DepthwiseConv) else []
        if isinstance(layer, DepthwiseConv) and layer.channel_multiplier != 1:
            parts.append(f"x{layer.channel_multiplier}")
        parts.append(k)
        pad = layer.padding
        parts.append(pad.upper() if isinstance(pad, str) else f"pad={pad}")
        for field in ("stride", "dilation", "groups"):
            v = getattr(layer, field, 1)
            if _not_one(v):
                parts.append(f"{field}={v}")
        return f"{name}({', '.join(parts)})"
    if isinstance(layer, _Pool):
        w = layer.window_shape
        w = "x".join(map(str, w)) if not isinstance(w, int) else str(w)
        extra = "" if layer.stride is None else f", stride={layer.stride}"
        return f"{name}({w}{extra})"
    if isinstance(layer, Dense):
        return f"Dense({layer.features})"
    if isinstance(layer, Dropout):
        return f"Dropout({layer.rate})"
    return name


@dataclasses.dataclass(frozen=True, init=False)
class Sequential(Layer):
    """Layers applied one after the other; params are a tuple, one per layer.

    Inside ``apply`` the batch axes are worked out once (from the first layer
    whose parameters or configuration fix its input rank), flattened into one
    axis for the layers and restored at the end, so any number of batch axes
    works.  With ``train=True`` the ``key`` is split among the layers.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = Sequential([Conv(8, (3, 3), padding="SAME"), Relu(),
      ...                     MaxPool((2, 2)), Flatten(), Dense(10)])
      >>> params, out_shape = model.init(jax.random.key(0), (28, 28, 1))
      >>> out_shape
      (10,)
      >>> model.apply(params, jnp.ones((2, 3, 28, 28, 1))).shape
      (2, 3, 10)
      >>> model.summary((28, 28, 1)).total_params
      15770
    """

    layers: tuple[Layer, ...]

    def __init__(self, layers: Sequence[Layer]):
        layers = tuple(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"`layers[{i}]` (={layer!r}) is not a jaxconv.nn layer."
                )
        object.__setattr__(self, "layers", layers)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def _infos(self, input_shape):
        shape = _check_shape(input_shape)
        infos = []
        for i, layer in enumerate(self.layers):
            try:
                info = layer.info(shape)
            except (ValueError, TypeError) as err:
                raise type(err)(
                    f"layer {i} ({_describe(layer)}) on input {shape}: {err}"
                ) from None
            infos.append(info)
            shape = info.output_shape
        return infos

    def info(self, input_shape):
        infos = self._infos(input_shape)
        if not infos:
            return LayerInfo(_check_shape(input_shape), 0, 0, None)
        rfs = [i.rf for i in infos]
        rf = "global" if "global" in rfs else "unknown" if "unknown" in rfs else (
            _compose_rf([r for r in rfs if r is not None])
        )
        return LayerInfo(infos[-1].output_shape, sum(i.params for i in infos),
                         sum(i.flops for i in infos), rf)

    def _init_params(self, key, input_shape):
        infos = self._infos(input_shape)  # shape errors first, layer named
        shapes = [_check_shape(input_shape)] + [i.output_shape for i in infos]
        keys = jax.random.split(key, max(len(self), 1))
        return tuple(layer._init_params(k, shape)
                     for layer, k, shape in zip(self.layers, keys, shapes))

    def _rank(self, params):
        for layer, p in zip(self.layers, params):
            rank = layer._rank(p)
            if rank is not None:
                return rank
            if not layer._keeps_rank:
                return None
        return None

    def apply(self, params, x, *, key=None, train=False):
        if len(params) != len(self.layers):
            raise ValueError(
                f"`params` has {len(params)} entries for {len(self.layers)} layers."
            )
        x = jnp.asarray(x)
        rank = self._rank(params)
        batch = None
        if rank is not None:
            x, batch = _flatten_batch(x, rank)
        keys = (jax.random.split(key, len(self.layers)) if key is not None
                else [None] * len(self.layers))
        for layer, p, k in zip(self.layers, params, keys):
            x = layer.apply(p, x, key=k, train=train)
        if batch is not None:
            x = x.reshape((*batch, *x.shape[1:]))
        return x

    def summary(self, input_shape: Sequence[int]) -> Summary:
        """The layer table for one example of ``input_shape``, without running.

        Args:
          input_shape: one example's shape (no batch axes).

        Returns:
          A :class:`Summary`; ``print`` it for the table.

        Raises:
          ValueError: naming the first layer whose input does not fit.

        Example:
          >>> s = Sequential([Conv(32, (3, 3)), Relu()]).summary((28, 28, 1))
          >>> s.rows[0].params, s.rows[0].flops, s.rows[0].receptive_field
          (320, 389376, (3, 3))
          >>> print(s)  # doctest: +ELLIPSIS
          layer                 output shape  params    FLOPs  receptive field
          ---...
          input                 (28, 28, 1)                    1x1
          Conv(32, 3x3, VALID)  (26, 26, 32)     320  389,376  3x3 (jump 1x1)
          Relu                  (26, 26, 32)       0        0  3x3 (jump 1x1)
          ---...
          total                                  320  389,376
        """
        return summary(self, input_shape)


def _flat_layers(layer: Layer):
    if isinstance(layer, Sequential):
        for sub in layer.layers:
            yield from _flat_layers(sub)
    else:
        yield layer


def _compose_rf(steps):
    if not steps:
        return None
    return _shapes.receptive_field(steps)[-1]


def summary(layer: Layer, input_shape: Sequence[int]) -> Summary:
    """Summary table of a layer or model (nested Sequentials are flattened).

    Everything comes from :mod:`jaxconv.shapes`; nothing is run.  The
    receptive field is the per-axis size (and jump) from
    :func:`jaxconv.shapes.receptive_field` over the spatial layers so far;
    ``"global"`` once every output sees the whole input (global pools,
    dense layers), ``"?"`` after a transposed convolution.

    Args:
      layer: any layer, usually a :class:`Sequential`.
      input_shape: one example's shape (no batch axes).

    Returns:
      A :class:`Summary`.

    Example:
      >>> s = summary(Conv(64, (3, 3), padding="SAME"), (56, 56, 64))
      >>> s.total_params, s.total_flops
      (36928, 231211008)
    """
    shape = _check_shape(input_shape)
    flat = Sequential(list(_flat_layers(layer)))
    infos = flat._infos(shape)
    rows = []
    steps: list = []
    state: Any = ()  # () nothing spatial yet; "global"; "unknown"
    nd = max(len(shape) - 1, 1)
    for sub, info in zip(flat.layers, infos):
        if isinstance(state, tuple):
            if info.rf in ("global", "unknown"):
                state = info.rf
            elif info.rf is not None:
                steps.append(info.rf)
        if state == "global":
            rf, jump = "global", None
        elif state == "unknown":
            rf, jump = None, None
        elif steps:
            last = _shapes.receptive_field(steps)[-1]
            rf, jump = tuple(last.size), tuple(last.jump)
        else:
            rf, jump = (1,) * nd, (1,) * nd
        rows.append(SummaryRow(_describe(sub), info.output_shape, info.params,
                               info.flops, rf, jump))
    return Summary(shape, tuple(rows))
