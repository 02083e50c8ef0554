"""Plug jaxconv into Flax: convolutions, transposed convolutions and pooling.

Recipes (each one below is compared with Flax's default, outputs and
gradients, when the script runs; ``tests/test_flax_recipes.py`` tests them):

* ``flax.linen.Conv`` / ``flax.nnx.Conv``: pass
  ``conv_general_dilated=jaxconv.lax.conv_general_dilated`` (it has
  ``jax.lax``'s signature, so it drops in); to pin a formulation, pass
  ``functools.partial(jaxconv.lax.conv_general_dilated, algorithm="taps")``.
* ``flax.linen.ConvTranspose`` / ``flax.nnx.ConvTranspose`` have no such
  argument: they call ``jax.lax.conv_transpose`` directly.  Subclass them
  and call ``jaxconv.lax.conv_transpose`` (``jax.lax.conv_transpose``'s
  signature) in ``__call__``: :class:`ConvTranspose` (linen; keep that class
  name and the parameter paths stay ``ConvTranspose_0/kernel``...) and
  :class:`NnxConvTranspose`.  Same constructor, same parameters, same
  outputs, except ``padding="CIRCULAR"``, which they refuse.
* ``flax.linen.max_pool`` / ``avg_pool`` / ``pooling.min_pool`` (and
  ``flax.nnx.max_pool``...): call ``jaxconv.max_pool(x, window_shape,
  stride=strides or 1, padding=padding)``.  The one difference to mind:
  Flax's ``strides`` default to 1, jaxconv's ``stride`` to the window (as in
  PyTorch).  Padding strings and ``(lo, hi)`` pairs, ``count_include_pad``
  and the batch axes (every axis before the window's) match.

    python examples/flax_plugin.py
"""

from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import QUICK  # noqa: E402
from flax import linen, nnx  # noqa: E402

import jaxconv  # noqa: E402


def _per_axis(value, n: int) -> tuple[int, ...]:
    value = 1 if value is None else value  # Flax's None means 1
    return (value,) * n if isinstance(value, int) else tuple(value)


def _conv_transpose(layer, inputs, kernel, bias):
    """What Flax's ``ConvTranspose.__call__`` computes, by jaxconv."""
    if isinstance(layer.padding, str) and layer.padding.upper() == "CIRCULAR":
        raise ValueError('`padding` (="CIRCULAR") is not covered by this recipe.')
    nd = kernel.ndim - 2
    if layer.mask is not None:
        kernel = kernel * layer.mask
    # Flax's default promotion: every array to `dtype`, else their common type.
    arrays = [a for a in (inputs, kernel, bias) if a is not None]
    dtype = layer.dtype or jnp.result_type(*arrays)
    batch = inputs.shape[: inputs.ndim - nd - 1]  # zero or more batch axes
    x = inputs.reshape((-1, *inputs.shape[len(batch):])).astype(dtype)
    y = jaxconv.lax.conv_transpose(
        x, kernel.astype(dtype), _per_axis(layer.strides, nd),
        linen.linear.canonicalize_padding(layer.padding, nd),
        rhs_dilation=_per_axis(layer.kernel_dilation, nd),
        transpose_kernel=layer.transpose_kernel, precision=layer.precision,
        preferred_element_type=layer.preferred_element_type,
    )
    if bias is not None:
        y = y + bias.astype(dtype).reshape((1,) * (y.ndim - 1) + (-1,))
    return y.reshape(batch + y.shape[1:])


class ConvTranspose(linen.ConvTranspose):
    """``flax.linen.ConvTranspose`` computed by ``jaxconv.lax.conv_transpose``."""

    @linen.compact
    def __call__(self, inputs):
        k = self.kernel_size
        k = (k,) if isinstance(k, int) else tuple(k)  # an int: one spatial axis
        io = (self.features, inputs.shape[-1]) if self.transpose_kernel else (
            inputs.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, k + io, self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        return _conv_transpose(self, inputs, kernel, bias)


class NnxConvTranspose(nnx.ConvTranspose):
    """``flax.nnx.ConvTranspose`` computed by ``jaxconv.lax.conv_transpose``."""

    def __call__(self, inputs):
        bias = self.bias[...] if self.bias is not None else None
        return _conv_transpose(self, inputs, self.kernel[...], bias)


def max_pool(inputs, window_shape, strides=None, padding="VALID"):
    """``flax.linen.max_pool`` computed by ``jaxconv.max_pool``."""
    return jaxconv.max_pool(inputs, window_shape, stride=strides or 1,
                            padding=padding)


def min_pool(inputs, window_shape, strides=None, padding="VALID"):
    """``flax.linen.pooling.min_pool`` computed by ``jaxconv.min_pool``."""
    return jaxconv.min_pool(inputs, window_shape, stride=strides or 1,
                            padding=padding)


def avg_pool(inputs, window_shape, strides=None, padding="VALID",
             count_include_pad=True):
    """``flax.linen.avg_pool`` computed by ``jaxconv.avg_pool``."""
    return jaxconv.avg_pool(inputs, window_shape, stride=strides or 1,
                            padding=padding, count_include_pad=count_include_pad)


CASES = [  # (name, kwargs shared by nnx.Conv and linen.Conv)
    ("3x3 SAME", dict(kernel_size=(3, 3), padding="SAME")),
    ("5x5 stride 2", dict(kernel_size=(5, 5), strides=2, padding="VALID")),
    ("3x3 dilation 2, 4 groups", dict(kernel_size=(3, 3), kernel_dilation=2,
                                      feature_group_count=4, padding="SAME")),
]


def _max_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(u - v)))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def compare_nnx(x, name, kwargs) -> None:
    c_in = x.shape[-1]
    default = nnx.Conv(c_in, 8, rngs=nnx.Rngs(0), **kwargs)
    ours = nnx.Conv(c_in, 8, rngs=nnx.Rngs(0),
                    conv_general_dilated=jaxconv.lax.conv_general_dilated, **kwargs)

    def loss(model, x):
        return jnp.sum(jnp.tanh(model(x)))

    y0, y1 = default(x), ours(x)
    g0 = nnx.grad(loss)(default, x)
    g1 = nnx.grad(loss)(ours, x)
    dk = jnp.max(jnp.abs(g0.kernel[...] - g1.kernel[...]))
    print(f"nnx.Conv   {name:<26} out {tuple(y1.shape)}  max |diff| "
          f"{float(jnp.max(jnp.abs(y0 - y1))):.1e}  kernel grad {float(dk):.1e}")


def compare_linen(x, name, kwargs, algorithm="auto") -> None:
    default = linen.Conv(8, **kwargs)
    conv = functools.partial(jaxconv.lax.conv_general_dilated, algorithm=algorithm)
    ours = linen.Conv(8, conv_general_dilated=conv, **kwargs)
    params = default.init(jax.random.key(0), x)  # the same params for both

    def loss(params, model, x):
        return jnp.sum(jnp.tanh(model.apply(params, x)))

    y0, y1 = default.apply(params, x), ours.apply(params, x)
    g0 = jax.grad(loss, argnums=(0, 2))(params, default, x)
    g1 = jax.grad(loss, argnums=(0, 2))(params, ours, x)
    print(f"linen.Conv {name:<26} out {tuple(y1.shape)}  max |diff| "
          f"{_max_diff(y0, y1):.1e}  grads {_max_diff(g0, g1):.1e}"
          f"  (algorithm={algorithm!r})")


def compare_transpose(x) -> None:
    kwargs = dict(kernel_size=(4, 4), strides=(2, 2), padding="SAME")
    default, ours = linen.ConvTranspose(8, **kwargs), ConvTranspose(8, **kwargs)
    params = default.init(jax.random.key(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(
        ours.init(jax.random.key(0), x))  # the same parameter paths

    def loss(params, model, x):
        return jnp.sum(jnp.tanh(model.apply(params, x)))

    y0, y1 = default.apply(params, x), ours.apply(params, x)
    g0 = jax.grad(loss, argnums=(0, 2))(params, default, x)
    g1 = jax.grad(loss, argnums=(0, 2))(params, ours, x)
    print(f"linen.ConvTranspose 4x4 stride 2 SAME  out {tuple(y1.shape)}  max |diff| "
          f"{_max_diff(y0, y1):.1e}  grads {_max_diff(g0, g1):.1e}")
    default = nnx.ConvTranspose(x.shape[-1], 8, rngs=nnx.Rngs(0), **kwargs)
    ours = NnxConvTranspose(x.shape[-1], 8, rngs=nnx.Rngs(0), **kwargs)
    print(f"nnx.ConvTranspose   4x4 stride 2 SAME  out {tuple(ours(x).shape)}  "
          f"max |diff| {_max_diff(default(x), ours(x)):.1e}")


def compare_pools(x) -> None:
    for name, flax_pool, ours in (("max_pool", linen.max_pool, max_pool),
                                  ("avg_pool", linen.avg_pool, avg_pool)):
        for padding in ("VALID", "SAME", ((1, 1), (0, 1))):
            y0 = flax_pool(x, (3, 3), strides=(2, 2), padding=padding)
            y1 = ours(x, (3, 3), strides=(2, 2), padding=padding)
            g0 = jax.grad(lambda x: jnp.sum(jnp.sin(flax_pool(
                x, (3, 3), strides=(2, 2), padding=padding))))(x)
            g1 = jax.grad(lambda x: jnp.sum(jnp.sin(ours(
                x, (3, 3), strides=(2, 2), padding=padding))))(x)
            print(f"linen.{name} 3x3 stride 2 {str(padding):<18} out "
                  f"{tuple(y1.shape)}  max |diff| {_max_diff(y0, y1):.1e}  "
                  f"input grad {_max_diff(g0, g1):.1e}")


def main() -> None:
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 8))
    cases = CASES[:1] if QUICK else CASES
    for name, kwargs in cases:
        compare_nnx(x, name, kwargs)
        compare_linen(x, name, kwargs)
    compare_linen(x, CASES[0][0], CASES[0][1], algorithm="taps")
    compare_transpose(x)
    compare_pools(x)
    print("jaxconv matches Flax's default convolution, transposed convolution "
          "and pooling")


if __name__ == "__main__":
    main()
