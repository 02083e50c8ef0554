"""The Flax recipes of examples/flax_plugin.py give Flax's outputs and gradients.

``flax.linen.Conv``/``flax.nnx.Conv`` with the ``conv_general_dilated``
argument are covered in ``tests/test_flax.py``; here: pinning an algorithm
that way, the ``ConvTranspose`` subclasses and the pooling functions.
"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import jaxconv

pytest.importorskip("flax")
from flax import linen, nnx  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "examples"))
import flax_plugin as recipes  # noqa: E402

F32 = np.float32


def _x(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _assert_trees_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert_close(u, v, dtype=F32)


def _check_linen(default, ours, x):
    """Same parameter tree from init; outputs and (param, input) grads agree."""
    params = default.init(jax.random.key(0), x)
    _assert_trees_close(ours.init(jax.random.key(0), x), params)

    def loss(params, model, x):
        return jnp.sum(jnp.sin(model.apply(params, x)))

    y, y_ref = ours.apply(params, x), default.apply(params, x)
    assert y.dtype == y_ref.dtype
    assert_close(y, y_ref, dtype=F32)
    grad = jax.grad(loss, argnums=(0, 2))
    _assert_trees_close(grad(params, ours, x), grad(params, default, x))


@pytest.mark.parametrize("algorithm", ["direct", "taps", "patches"])
def test_conv_with_a_pinned_algorithm(algorithm):
    conv = functools.partial(jaxconv.lax.conv_general_dilated, algorithm=algorithm)
    kwargs = dict(kernel_size=(3, 3), strides=2, padding="SAME",
                  feature_group_count=2)
    x = _x((2, 9, 8, 4))
    _check_linen(linen.Conv(6, **kwargs),
                 linen.Conv(6, conv_general_dilated=conv, **kwargs), x)
    default = nnx.Conv(4, 6, rngs=nnx.Rngs(0), **kwargs)
    ours = nnx.Conv(4, 6, rngs=nnx.Rngs(0), conv_general_dilated=conv, **kwargs)
    assert_close(ours(x), default(x), dtype=F32)


TRANSPOSE_CASES = [  # (input shape, kwargs of both ConvTranspose classes)
    ((2, 7, 6, 4), dict(kernel_size=(4, 4), strides=(2, 2), padding="SAME")),
    ((2, 7, 6, 4), dict(kernel_size=(3, 3), strides=2, padding="VALID",
                        kernel_dilation=2)),
    ((2, 7, 6, 4), dict(kernel_size=(3, 2), strides=(1, 3),
                        padding=((1, 2), (0, 1)), use_bias=False)),
    ((2, 7, 6, 4), dict(kernel_size=(3, 3), strides=2, padding="SAME",
                        transpose_kernel=True)),
    ((9, 4), dict(kernel_size=3, strides=2, padding="SAME")),  # no batch axis
    ((2, 3, 5, 5, 5, 4), dict(kernel_size=(2, 2, 2), strides=2)),  # 2 batch axes
    ((2, 8, 4), dict(kernel_size=(5,), strides=3, padding=2,
                     precision=jax.lax.Precision.HIGHEST)),
]


@pytest.mark.parametrize("shape, kwargs", TRANSPOSE_CASES, ids=str)
def test_linen_conv_transpose(shape, kwargs):
    _check_linen(linen.ConvTranspose(6, **kwargs),
                 recipes.ConvTranspose(6, **kwargs), _x(shape))


def test_linen_conv_transpose_keeps_parameter_paths():
    class Decoder(linen.Module):
        conv_transpose: type

        @linen.compact
        def __call__(self, x):
            x = self.conv_transpose(8, (3, 3), strides=2)(x)
            return self.conv_transpose(3, (3, 3), strides=2)(jax.nn.relu(x))

    x = _x((1, 5, 5, 4))
    _check_linen(Decoder(linen.ConvTranspose), Decoder(recipes.ConvTranspose), x)
    params = Decoder(recipes.ConvTranspose).init(jax.random.key(0), x)
    assert set(params["params"]) == {"ConvTranspose_0", "ConvTranspose_1"}


def test_linen_conv_transpose_mask_and_dtype():
    mask = jnp.tril(jnp.ones((3, 3)))[:, :, None, None] * jnp.ones((1, 1, 4, 6))
    kwargs = dict(kernel_size=(3, 3), strides=2, mask=mask, dtype=jnp.bfloat16)
    x = _x((2, 5, 5, 4))
    default, ours = linen.ConvTranspose(6, **kwargs), recipes.ConvTranspose(6, **kwargs)
    params = default.init(jax.random.key(0), x)
    y, y_ref = ours.apply(params, x), default.apply(params, x)
    assert y.dtype == y_ref.dtype == jnp.bfloat16
    assert_close(y, y_ref)  # the bfloat16 tolerance


@pytest.mark.parametrize("shape, kwargs", TRANSPOSE_CASES[::2], ids=str)
def test_nnx_conv_transpose(shape, kwargs):
    x = _x(shape)
    c_in = x.shape[-1]
    default = nnx.ConvTranspose(c_in, 6, rngs=nnx.Rngs(0), **kwargs)
    ours = recipes.NnxConvTranspose(c_in, 6, rngs=nnx.Rngs(0), **kwargs)
    _assert_trees_close(nnx.state(ours, nnx.Param), nnx.state(default, nnx.Param))

    def loss(model, x):
        return jnp.sum(jnp.sin(model(x)))

    assert_close(ours(x), default(x), dtype=F32)
    g_ours = nnx.grad(loss, argnums=(0, 1))(ours, x)
    g_default = nnx.grad(loss, argnums=(0, 1))(default, x)
    assert_close(g_ours[1], g_default[1], dtype=F32)
    _assert_trees_close(nnx.state(g_ours[0], nnx.Param),
                        nnx.state(g_default[0], nnx.Param))


def test_conv_transpose_refuses_circular():
    x = _x((1, 5, 5, 2))
    with pytest.raises(ValueError, match="CIRCULAR"):
        recipes.ConvTranspose(3, (3, 3), padding="CIRCULAR").init(
            jax.random.key(0), x)


POOL_CASES = [  # (input shape, window, strides, padding)
    ((2, 9, 8, 3), (3, 3), (2, 2), "VALID"),
    ((2, 9, 8, 3), (3, 2), None, "SAME"),  # Flax's default stride: 1
    ((2, 9, 8, 3), (2, 3), (1, 2), ((1, 0), (2, 2))),
    ((11, 3), (4,), (3,), "SAME"),  # no batch axis
    ((2, 2, 6, 7, 5, 3), (2, 3, 2), (2, 1, 2), "VALID"),  # 2 batch axes, 3-D
]
POOLS = [  # (recipe, flax pool, extra keyword arguments)
    (recipes.max_pool, linen.max_pool, {}),
    (recipes.min_pool, linen.pooling.min_pool, {}),
    (recipes.avg_pool, linen.avg_pool, {}),
    (recipes.avg_pool, linen.avg_pool, dict(count_include_pad=False)),
]


@pytest.mark.parametrize("ours, flax_pool, extra", POOLS,
                         ids=["max", "min", "avg", "avg_exclude_pad"])
@pytest.mark.parametrize("shape, window, strides, padding", POOL_CASES, ids=str)
def test_pooling(ours, flax_pool, extra, shape, window, strides, padding):
    x = _x(shape)

    def run(pool, x):
        return pool(x, window, strides=strides, padding=padding, **extra)

    y, y_ref = run(ours, x), run(flax_pool, x)
    assert y.shape == y_ref.shape
    assert_close(y, y_ref, dtype=F32)
    grad = jax.grad(lambda x, pool: jnp.sum(jnp.sin(run(pool, x))))
    assert_close(grad(x, ours), grad(x, flax_pool), dtype=F32)


def test_pooling_in_a_linen_model():
    class Net(linen.Module):
        max_pool: object
        avg_pool: object

        @linen.compact
        def __call__(self, x):
            x = jax.nn.relu(linen.Conv(4, (3, 3))(x))
            x = self.max_pool(x, (2, 2), strides=(2, 2))
            return self.avg_pool(x, (2, 2), padding="SAME")

    x = _x((2, 12, 12, 3))
    _check_linen(Net(linen.max_pool, linen.avg_pool),
                 Net(recipes.max_pool, recipes.avg_pool), x)
