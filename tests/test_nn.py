"""jaxconv.nn: shapes against jax.eval_shape, hand-counted summaries, training."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_close

from jaxconv import nn

KEY = jax.random.key(0)

# (layer, one example's input shape)
SHAPE_CASES = [
    (nn.Conv(8, (3, 3)), (10, 10, 3)),
    (nn.Conv(8, (3, 3), padding="SAME", stride=2), (11, 9, 3)),
    (nn.Conv(8, 3, padding="FULL", dilation=2), (10, 10, 4)),
    (nn.Conv(6, (3,), padding="CAUSAL", dilation=3), (20, 2)),
    (nn.Conv(8, (2, 3, 3), padding=1, groups=2), (5, 6, 7, 4)),
    (nn.Conv(8, (3, 3), padding="SAME", padding_mode="reflect"), (7, 7, 2)),
    (nn.Conv(8, (3, 3), padding=[(1, 0), (2, 1)], use_bias=False), (7, 7, 2)),
    (nn.Conv(8, (3, 3), data_format="channels_first"), (3, 10, 10)),
    (nn.DepthwiseConv((3, 3), channel_multiplier=2, padding="SAME"), (9, 9, 4)),
    (nn.ConvTranspose(5, (4, 4), stride=2, padding=1), (6, 6, 3)),
    (nn.ConvTranspose(4, (3,), stride=2, padding="SAME", groups=2), (7, 2)),
    (nn.ConvTranspose(5, (3, 3), stride=2, data_format="channels_first"), (3, 6, 6)),
    (nn.ConvTranspose(4, (3, 3), stride=2, padding=1, output_shape=(12, 11)),
     (6, 6, 2)),
    (nn.MaxPool((2, 2)), (9, 9, 3)),
    (nn.MaxPool((3, 3), stride=2, padding="SAME"), (9, 9, 3)),
    (nn.AvgPool((2,), ceil_mode=True), (9, 3)),
    (nn.AvgPool((2, 2), data_format="channels_first"), (3, 8, 8)),
    (nn.GlobalAvgPool(), (5, 5, 7)),
    (nn.GlobalMaxPool(), (5, 5, 7)),
    (nn.Flatten(), (4, 5, 6)),
    (nn.Dense(7), (12,)),
    (nn.Relu(), (3, 4)),
    (nn.Gelu(), (3, 4)),
    (nn.Dropout(0.5), (3, 4)),
]


def _ids(case):
    return f"{type(case[0]).__name__}-{'x'.join(map(str, case[1]))}"


def _init_shapes(layer, shape):
    """Params as ShapeDtypeStructs (no compute) and the output shape."""
    params = jax.eval_shape(lambda k: layer.init(k, shape)[0], KEY)
    return params, layer.init.__self__.info(shape).output_shape


@pytest.mark.parametrize("layer,shape", SHAPE_CASES, ids=[_ids(c) for c in SHAPE_CASES])
def test_output_shape_matches_eval_shape(layer, shape):
    params, out_shape = _init_shapes(layer, shape)
    # Batch axes: the ops' convention (one batch axis) for every layer.
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    y = jax.eval_shape(lambda p, x: layer.apply(p, x), params, x)
    assert y.shape == (2, *out_shape)
    n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    assert n_params == layer.info(shape).params


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_sequential_any_number_of_batch_axes(batch):
    model = nn.Sequential([
        nn.MaxPool(2), nn.Conv(4, (3, 3), padding="SAME"), nn.Relu(),
        nn.GlobalAvgPool(), nn.Dense(5),
    ])
    params, out_shape = _init_shapes(model, (8, 8, 2))
    x = jax.ShapeDtypeStruct((*batch, 8, 8, 2), jnp.float32)
    y = jax.eval_shape(lambda p, x: model.apply(p, x), params, x)
    assert y.shape == (*batch, *out_shape) == (*batch, 5)


def test_flatten_inside_sequential_keeps_batch_axes():
    model = nn.Sequential([nn.Conv(3, (3, 3)), nn.Flatten(), nn.Dense(2)])
    params, _ = _init_shapes(model, (5, 5, 1))
    for batch in [(), (4,), (2, 2)]:
        x = jax.ShapeDtypeStruct((*batch, 5, 5, 1), jnp.float32)
        assert jax.eval_shape(model.apply, params, x).shape == (*batch, 2)


def test_summary_hand_counts():
    model = nn.Sequential([
        nn.Conv(32, (3, 3), padding="SAME"), nn.Relu(), nn.MaxPool((2, 2)),
        nn.Conv(64, (3, 3)), nn.Relu(), nn.GlobalAvgPool(), nn.Dense(10),
    ])
    s = model.summary((28, 28, 1))
    conv1, relu, pool, conv2, _, gap, dense = s.rows
    assert conv1.params == 3 * 3 * 1 * 32 + 32 == 320
    assert conv1.flops == 2 * 28 * 28 * 32 * (3 * 3 * 1)
    assert conv1.output_shape == (28, 28, 32)
    assert relu.params == relu.flops == 0
    assert pool.output_shape == (14, 14, 32) and pool.flops == 14 * 14 * 32 * 4
    assert conv2.params == 3 * 3 * 32 * 64 + 64 == 18496
    assert conv2.output_shape == (12, 12, 64)
    assert conv2.flops == 2 * 12 * 12 * 64 * (3 * 3 * 32)
    assert gap.output_shape == (64,) and gap.flops == 12 * 12 * 64
    assert dense.params == 64 * 10 + 10 and dense.flops == 2 * 64 * 10
    assert s.total_params == 320 + 18496 + 650
    # Receptive fields by hand: 3, then pool 2 -> 3 + 1 = 4 (jump 2), then
    # 3x3 at jump 2 -> 4 + 2 * 2 = 8.
    assert conv1.receptive_field == (3, 3) and pool.receptive_field == (4, 4)
    assert pool.jump == (2, 2)
    assert conv2.receptive_field == (8, 8)
    assert gap.receptive_field == dense.receptive_field == "global"
    table = str(s)
    assert "Conv(32, 3x3, SAME)" in table and "19,466" in table
    # The summary agrees with the parameters init makes.
    params, _ = _init_shapes(model, (28, 28, 1))
    assert sum(math.prod(p.shape) for p in jax.tree.leaves(params)) == 19466


def test_summary_grouped_strided_dilated():
    layer = nn.Conv(16, (3, 3), stride=2, dilation=2, groups=4, padding="SAME")
    row = nn.summary(layer, (32, 32, 8)).rows[0]
    assert row.params == 3 * 3 * (8 // 4) * 16 + 16
    assert row.output_shape == (16, 16, 16)
    assert row.flops == 2 * 16 * 16 * 16 * 3 * 3 * 2
    assert row.receptive_field == (5, 5) and row.jump == (2, 2)


def test_summary_transposed_conv_has_unknown_receptive_field():
    s = nn.Sequential([nn.Conv(4, 3), nn.ConvTranspose(2, 4, stride=2, padding=1)])
    rows = s.summary((8, 8, 3)).rows
    assert rows[1].output_shape == (12, 12, 2)
    assert rows[1].params == 4 * 4 * 4 * 2 + 2
    assert rows[1].flops == 2 * 6 * 6 * 4 * 16 * 2
    assert rows[1].receptive_field is None


def test_conv_values_match_lax_with_bias():
    x = jax.random.normal(jax.random.key(1), (2, 9, 9, 4))
    layer = nn.Conv(6, (3, 3), stride=2, padding="SAME", groups=2)
    params, _ = layer.init(KEY, (9, 9, 4))
    params["bias"] = jnp.arange(6.0)
    expected = jax.lax.conv_general_dilated(
        x, params["kernel"].astype(x.dtype), (2, 2), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2,
    ) + jnp.arange(6.0).reshape(1, 1, 1, 6)
    assert_close(layer.apply(params, x), expected, dtype=np.float32)


def test_channels_first_matches_channels_last():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    last = nn.Conv(4, (3, 3), padding="SAME")
    first = nn.Conv(4, (3, 3), padding="SAME", data_format="channels_first")
    p_last, _ = last.init(KEY, (8, 8, 3))
    p_first, shape = first.init(KEY, (3, 8, 8))
    assert shape == (4, 8, 8) and p_first["kernel"].shape == (4, 3, 3, 3)
    # Same init values, PyTorch layout.
    assert_close(jnp.transpose(p_first["kernel"], (2, 3, 1, 0)), p_last["kernel"])
    y_first = first.apply(p_first, jnp.moveaxis(x, -1, 1))
    assert_close(jnp.moveaxis(y_first, 1, -1), last.apply(p_last, x), dtype=np.float32)


def test_init_is_lecun_normal_and_float32():
    params, _ = nn.Conv(64, (3, 3)).init(KEY, (8, 8, 32))
    w = params["kernel"]
    assert w.dtype == jnp.float32 and params["bias"].dtype == jnp.float32
    assert float(jnp.max(jnp.abs(params["bias"]))) == 0.0
    fan_in = 3 * 3 * 32
    assert abs(float(jnp.std(w)) * math.sqrt(fan_in) - 1.0) < 0.1
    he = nn.Dense(256, kernel_init=jax.nn.initializers.he_normal())
    p, _ = he.init(KEY, (512,))
    assert abs(float(jnp.std(p["kernel"])) * math.sqrt(512 / 2) - 1.0) < 0.1


def test_dropout():
    layer = nn.Dropout(0.25)
    x = jnp.ones((4000,))
    assert layer.apply({}, x) is x
    with pytest.raises(ValueError, match="key"):
        layer.apply({}, x, train=True)
    y = layer.apply({}, x, key=jax.random.key(3), train=True)
    kept = np.asarray(y != 0)
    assert abs(kept.mean() - 0.75) < 0.05
    assert_close(y[kept], jnp.full(int(kept.sum()), 1 / 0.75))
    with pytest.raises(ValueError, match="rate"):
        nn.Dropout(1.0)
    model = nn.Sequential([nn.Dense(3), nn.Dropout(0.5)])
    params, _ = model.init(KEY, (2,))
    with pytest.raises(ValueError, match="key"):
        model.apply(params, jnp.ones((1, 2)), train=True)


def test_shape_errors_name_the_layer():
    with pytest.raises(ValueError, match="layer 1"):
        nn.Sequential([nn.Conv(4, 3), nn.Dense(2)]).summary((8, 8, 1))
    with pytest.raises(ValueError, match="layer 0"):
        nn.Sequential([nn.Conv(4, (5, 5))]).summary((3, 3, 1))
    with pytest.raises(TypeError):
        nn.Sequential([nn.Conv(4, 3), "relu"])


def test_optax_step_on_params_pytree():
    model = nn.Sequential([nn.Conv(4, (3, 3), padding="SAME"), nn.Relu(),
                           nn.GlobalAvgPool(), nn.Dense(3)])
    params, _ = model.init(KEY, (6, 6, 2))
    x = jax.random.normal(jax.random.key(1), (8, 6, 6, 2), jnp.float32)
    y = jnp.arange(8) % 3
    opt = optax.sgd(0.1)
    state = opt.init(params)

    def loss(p):
        logits = model.apply(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    l0, grads = jax.value_and_grad(loss)(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    updates, state = opt.update(grads, state)
    new = optax.apply_updates(params, updates)
    assert float(loss(new)) < float(l0)
