"""Shape-simple layers: :class:`Flatten`, :class:`Dense`, the activations and
:class:`Dropout`."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._args import check_positive
from ._base import (
    Initializer,
    Layer,
    LayerInfo,
    add_bias,
    bias_init_field,
    check_shape,
    kernel_init_field,
    promote,
)


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
        shape = check_shape(input_shape)
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
    kernel_init: Initializer = kernel_init_field()
    bias_init: Initializer = bias_init_field()
    param_dtype: Any = jnp.float32
    precision: Any = None

    def info(self, input_shape):
        shape = check_shape(input_shape)
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
        x, w = promote(x, params["kernel"])
        y = jnp.matmul(x, w, precision=self.precision)
        if "bias" in params:
            y = add_bias(y, params["bias"], 0, "channels_last")
        return y


@dataclasses.dataclass(frozen=True)
class _Elementwise(Layer):
    _keeps_rank = True

    def info(self, input_shape):
        return LayerInfo(check_shape(input_shape), 0, 0, None)

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

    def __post_init__(self):
        if isinstance(self.negative_slope, bool) or not isinstance(
                self.negative_slope, (int, float, np.floating, np.integer)):
            raise TypeError(
                f"`negative_slope` (={self.negative_slope!r}) must be a real number."
            )

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
        if isinstance(self.rate, (str, bytes, bool)) or not isinstance(
                self.rate, numbers.Real):
            raise TypeError(f"`rate` (={self.rate!r}) must be a number in [0, 1).")
        if not 0.0 <= float(self.rate) < 1.0:
            raise ValueError(f"`rate` (={self.rate!r}) must be in [0, 1).")

    def info(self, input_shape):
        return LayerInfo(check_shape(input_shape), 0, 0, None)

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
