"""``jax.export`` with a symbolic batch: every op and a ``jaxconv.nn`` model
export once and run at several batch sizes, equal to the direct call;
symbolic spatial sizes raise a clear error naming the limitation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import export

import jaxconv
from jaxconv import lax as jl

NHWC = ("NHWC", "HWIO", "NHWC")
W33 = (3, 3, 4, 6)

# (id, f(x, *params), per-example shape of x, parameter shapes)
OPS = [
    ("lax.conv_general_dilated", lambda x, w: jl.conv_general_dilated(
        x, w, (2, 1), "SAME", rhs_dilation=(1, 2), dimension_numbers=NHWC), (9, 8, 4),
     [W33]),
    ("lax.conv", lambda x, w: jl.conv(x, w, (1, 1), "VALID"), (4, 9, 8),
     [(6, 4, 3, 3)]),
    ("lax.conv_with_general_padding", lambda x, w: jl.conv_with_general_padding(
        x, w, (1, 1), ((1, 2), (0, 1)), (2, 1), None), (4, 9, 8), [(6, 4, 3, 3)]),
    ("lax.conv_transpose", lambda x, w: jl.conv_transpose(
        x, w, (2, 2), "SAME", dimension_numbers=NHWC), (5, 6, 4), [(4, 4, 4, 6)]),
    ("lax.conv_general_dilated_patches", lambda x: jl.conv_general_dilated_patches(
        x, (2, 3), (1, 1), "SAME"), (4, 7, 6), []),
    ("conv", lambda x, w: jaxconv.conv(x, w, padding="SAME", padding_mode="reflect"),
     (9, 8, 4), [W33]),
    ("conv1d", lambda x, w: jaxconv.conv1d(x, w, padding="CAUSAL"), (20, 4),
     [(3, 4, 6)]),
    ("conv3d", lambda x, w: jaxconv.conv3d(x, w, padding=1), (4, 5, 6, 4),
     [(3, 3, 3, 4, 6)]),
    ("conv_transpose", lambda x, w: jaxconv.conv_transpose(
        x, w, stride=2, padding=1, output_padding=1), (5, 6, 4), [(3, 3, 4, 6)]),
    ("depthwise_conv", lambda x, w: jaxconv.depthwise_conv(x, w, padding="SAME"),
     (9, 8, 4), [(5, 5, 1, 8)]),
    ("separable_conv", lambda x, wd, wp: jaxconv.separable_conv(
        x, wd, wp, padding="SAME", stride=2), (9, 8, 4), [(3, 3, 1, 4), (1, 1, 4, 6)]),
    ("long depthwise", lambda x, w: jaxconv.depthwise_conv(x, w, padding="SAME"),
     (300, 4), [(70, 1, 4)]),
    ("grouped", lambda x, w: jaxconv.conv(x, w, groups=2, padding="SAME"), (9, 8, 4),
     [(3, 3, 2, 6)]),
    ("max_pool", lambda x: jaxconv.max_pool(x, (3, 3), stride=2, ceil_mode=True),
     (9, 8, 4), []),
    ("avg_pool", lambda x: jaxconv.avg_pool(x, (2, 2), padding=1,
                                            count_include_pad=False), (9, 8, 4), []),
    ("min_pool", lambda x: jaxconv.min_pool(x, (2, 3)), (9, 8, 4), []),
    ("sum_pool", lambda x: jaxconv.sum_pool(x, (2, 2)), (9, 8, 4), []),
    ("lp_pool", lambda x: jaxconv.lp_pool(x, 2.0, (2, 2)), (9, 8, 4), []),
    ("global_avg_pool", lambda x: jaxconv.global_avg_pool(x), (9, 8, 4), []),
    ("global_max_pool", lambda x: jaxconv.global_max_pool(x), (9, 8, 4), []),
    ("adaptive_avg_pool", lambda x: jaxconv.adaptive_avg_pool(x, (3, 2)), (9, 8, 4),
     []),
    ("adaptive_max_pool", lambda x: jaxconv.adaptive_max_pool(x, (4, 3)), (9, 8, 4),
     []),
    ("unfold", lambda x: jaxconv.unfold(x, (2, 2), stride=2), (8, 8, 4), []),
    ("fold", lambda c: jaxconv.fold(c, (8, 8), (2, 2), stride=2), (4, 4, 16), []),
    ("pad", lambda x: jaxconv.pad(x, ((1, 2), (0, 3)), mode="symmetric",
                                  axes=(1, 2)), (9, 8, 4), []),
]


def _export_and_run(f, example_shape, param_shapes, rng, batches=(1, 3, 8)):
    params = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in param_shapes]
    spec = ", ".join(["b", *map(str, example_shape)])
    x = jax.ShapeDtypeStruct(export.symbolic_shape(spec), jnp.float32)
    exported = export.export(jax.jit(f))(x, *params)
    for b in batches:
        xb = jnp.asarray(rng.standard_normal((b, *example_shape)), jnp.float32)
        assert_close(exported.call(xb, *params), f(xb, *params))
    return exported


@pytest.mark.parametrize("op", OPS, ids=lambda op: op[0])
def test_ops_export_with_a_symbolic_batch(op, rng):
    _, f, shape, params = op
    _export_and_run(f, shape, params, rng)


def test_gradients_export_with_a_symbolic_batch(rng):
    def loss(x, w):
        return jnp.sum(jnp.sin(jaxconv.conv(x, w, padding="SAME")))

    def f(x, w):
        return jax.grad(loss, (0, 1))(x, w)

    w = jnp.asarray(rng.standard_normal(W33), jnp.float32)
    x = jax.ShapeDtypeStruct(export.symbolic_shape("b, 9, 8, 4"), jnp.float32)
    exported = export.export(jax.jit(f))(x, w)
    for b in (1, 4):
        xb = jnp.asarray(rng.standard_normal((b, 9, 8, 4)), jnp.float32)
        for got, want in zip(exported.call(xb, w), f(xb, w)):
            assert_close(got, want)


def test_nn_model_exports_with_a_symbolic_batch(rng):
    nn = jaxconv.nn
    model = nn.Sequential([
        nn.Conv(8, (3, 3), padding="SAME"), nn.Relu(), nn.MaxPool((2, 2)),
        nn.DepthwiseConv((3, 3), padding="SAME"), nn.ConvTranspose(4, (2, 2), stride=2),
        nn.GlobalAvgPool(), nn.Dense(3),
    ])
    params, _ = model.init(jax.random.key(0), (12, 12, 3))
    x = jax.ShapeDtypeStruct(export.symbolic_shape("b, 12, 12, 3"), jnp.float32)
    exported = export.export(jax.jit(model.apply))(params, x)
    for b in (1, 5):
        xb = jnp.asarray(rng.standard_normal((b, 12, 12, 3)), jnp.float32)
        assert_close(exported.call(params, xb), model.apply(params, xb))


def test_vmapped_per_example_model_exports(rng):
    # Equinox style: written for one example, vmapped over a symbolic batch.
    w = jnp.asarray(rng.standard_normal((6, 4, 3, 3)), jnp.float32)

    def one(x):  # (4, 9, 8) channels first, no batch
        return jaxconv.conv(x, w, padding="SAME", data_format="channels_first")

    _export_and_run(jax.vmap(one), (4, 9, 8), [], rng)


@pytest.mark.parametrize("f", [
    lambda x: jaxconv.conv(x, jnp.ones((3, 3, 4, 4), jnp.float32), padding="SAME"),
    lambda x: jl.conv_general_dilated(x, jnp.ones((3, 3, 4, 4), jnp.float32), (1, 1),
                                      "SAME", dimension_numbers=NHWC),
    lambda x: jaxconv.max_pool(x, (2, 2)),
], ids=["conv", "lax", "max_pool"])
def test_symbolic_spatial_sizes_are_a_clear_error(f):
    x = jax.ShapeDtypeStruct(export.symbolic_shape("b, h, w, 4"), jnp.float32)
    with pytest.raises(TypeError, match="symbolic dimension: jaxconv plans every "
                                        "convolution from static spatial"):
        export.export(jax.jit(f))(x)


def test_export_for_another_platform_uses_its_profile():
    x = jax.ShapeDtypeStruct(export.symbolic_shape("b, 16, 16, 8"), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 1, 8), jnp.float32)

    def f(x, w):
        return jaxconv.depthwise_conv(x, w, padding="SAME")

    texts = {}
    for profile, platform in (("cpu", "cpu"), ("gpu", "cuda")):
        with jaxconv.use_profile(profile):
            exp = export.export(jax.jit(lambda x, w: f(x, w)), platforms=[platform])
            texts[profile] = exp(x, w).mlir_module()
    # The cpu plan pads each tap's product (a bounds check in the fused loop)
    # and re-poisons the border strips for non-finite weights; the gpu plan
    # pads the input once.  Neither has a conditional.
    assert texts["cpu"].count("stablehlo.pad") == 9
    assert "stablehlo.dynamic_update_slice" in texts["cpu"]
    assert texts["gpu"].count("stablehlo.pad") == 1
    assert "stablehlo.dynamic_update_slice" not in texts["gpu"]
    assert not any("stablehlo.case" in t or "stablehlo.if" in t for t in texts.values())
    assert np.all([t.count("stablehlo.convolution") == 0 for t in texts.values()])
