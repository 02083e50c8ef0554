"""Plug jaxconv into Flax: ``conv_general_dilated=jaxconv.lax.conv_general_dilated``.

``flax.nnx.Conv`` and ``flax.linen.Conv`` take the convolution primitive as an
argument; ``jaxconv.lax.conv_general_dilated`` has ``jax.lax``'s signature, so
it drops in.  The script builds each layer twice, once with the default
(XLA's convolution) and once with jaxconv, from the same parameters, and
compares outputs and gradients (strided, dilated and grouped cases).

    python examples/flax_plugin.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import QUICK  # noqa: E402
from flax import linen, nnx  # noqa: E402

import jaxconv  # noqa: E402

CASES = [  # (name, kwargs shared by nnx.Conv and linen.Conv)
    ("3x3 SAME", dict(kernel_size=(3, 3), padding="SAME")),
    ("5x5 stride 2", dict(kernel_size=(5, 5), strides=2, padding="VALID")),
    ("3x3 dilation 2, 4 groups", dict(kernel_size=(3, 3), kernel_dilation=2,
                                      feature_group_count=4, padding="SAME")),
]


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


def compare_linen(x, name, kwargs) -> None:
    default = linen.Conv(8, **kwargs)
    ours = linen.Conv(8, conv_general_dilated=jaxconv.lax.conv_general_dilated,
                      **kwargs)
    params = default.init(jax.random.key(0), x)  # the same params for both

    def loss(params, model, x):
        return jnp.sum(jnp.tanh(model.apply(params, x)))

    y0, y1 = default.apply(params, x), ours.apply(params, x)
    g0 = jax.grad(loss, argnums=(0, 2))(params, default, x)
    g1 = jax.grad(loss, argnums=(0, 2))(params, ours, x)
    diff = max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)))
    print(f"linen.Conv {name:<26} out {tuple(y1.shape)}  max |diff| "
          f"{float(jnp.max(jnp.abs(y0 - y1))):.1e}  grads {diff:.1e}")


def main() -> None:
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 8))
    cases = CASES[:1] if QUICK else CASES
    for name, kwargs in cases:
        compare_nnx(x, name, kwargs)
        compare_linen(x, name, kwargs)
    print("jaxconv.lax.conv_general_dilated matches Flax's default convolution")


if __name__ == "__main__":
    main()
