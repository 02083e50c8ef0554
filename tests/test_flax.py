"""jaxconv.lax.conv_general_dilated as the conv of flax.linen.Conv and flax.nnx.Conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import jaxconv

flax = pytest.importorskip("flax")
from flax import linen, nnx  # noqa: E402

CASES = [  # kwargs shared by linen.Conv and nnx.Conv
    dict(kernel_size=(3, 3), padding="SAME"),
    dict(kernel_size=(3, 3), strides=2, kernel_dilation=2, feature_group_count=2,
         padding="CIRCULAR"),
    dict(kernel_size=(4,), padding="CAUSAL", input_dilation=1),
]


def _x(kwargs):
    shape = (2, 9, 4) if len(kwargs["kernel_size"]) == 1 else (2, 9, 8, 4)
    return jax.random.normal(jax.random.key(1), shape, jnp.float32)


@pytest.mark.parametrize("kwargs", CASES, ids=str)
def test_linen_conv(kwargs):
    x = _x(kwargs)
    default = linen.Conv(6, **kwargs)
    ours = linen.Conv(6, conv_general_dilated=jaxconv.lax.conv_general_dilated,
                      **kwargs)
    params = default.init(jax.random.key(0), x)

    def loss(params, model, x):
        return jnp.sum(jnp.sin(model.apply(params, x)))

    assert_close(ours.apply(params, x), default.apply(params, x), dtype=np.float32)
    g_ours = jax.grad(loss, argnums=(0, 2))(params, ours, x)
    g_default = jax.grad(loss, argnums=(0, 2))(params, default, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_default)):
        assert_close(a, b, dtype=np.float32)


@pytest.mark.parametrize("kwargs", CASES, ids=str)
def test_nnx_conv(kwargs):
    x = _x(kwargs)
    default = nnx.Conv(4, 6, rngs=nnx.Rngs(0), **kwargs)
    ours = nnx.Conv(4, 6, rngs=nnx.Rngs(0),
                    conv_general_dilated=jaxconv.lax.conv_general_dilated, **kwargs)
    assert_close(ours.kernel[...], default.kernel[...])

    def loss(model, x):
        return jnp.sum(jnp.sin(model(x)))

    assert_close(ours(x), default(x), dtype=np.float32)
    g_ours = nnx.grad(loss, argnums=(0, 1))(ours, x)
    g_default = nnx.grad(loss, argnums=(0, 1))(default, x)
    assert_close(g_ours[1], g_default[1], dtype=np.float32)
    assert_close(g_ours[0].kernel[...], g_default[0].kernel[...], dtype=np.float32)
    assert_close(g_ours[0].bias[...], g_default[0].bias[...], dtype=np.float32)
