"""Tests for jaxconv.pooling: NumPy loops, lax.reduce_window, Flax and PyTorch."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import ref_pooling as ref
from conftest import assert_close
from jax import lax
from jax.test_util import check_grads

import jaxconv
from jaxconv import pooling

# (spatial, window, stride, padding, dilation, ceil_mode); padding an int
# (PyTorch-style) or (lo, hi) pairs.
CASES = [
    ((9,), (3,), None, 0, 1, False),
    ((10,), (2,), (3,), 1, 1, False),  # stride larger than the window
    ((11,), (3,), (2,), 1, 2, True),  # dilation + ceil_mode
    ((7, 8), (2, 2), None, 0, 1, False),  # odd/even sizes
    ((7, 8), (3, 2), (2, 1), 1, 1, True),
    ((9, 6), (3, 3), (2, 3), ((1, 0), (2, 1)), (2, 1), False),  # asymmetric pads
    ((5, 5), (2, 3), (4, 4), 0, 1, True),  # stride > window with ceil_mode
    ((6, 7), (3, 3), (2, 2), 1, 1, True),
    ((5, 6, 4), (2, 3, 2), None, 0, 1, True),
    ((6, 5, 5), (3, 2, 2), (2, 1, 2), 1, (1, 2, 1), False),
]
CASE_IDS = [f"{len(c[0])}d-{i}" for i, c in enumerate(CASES)]
FORMATS = ["channels_last", "channels_first"]


def _pairs(padding, n):
    if isinstance(padding, int):
        return ((padding, padding),) * n
    return tuple(padding)


def _tuple(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def _layout(x_cf, data_format):
    """Channels-first array in ``data_format``."""
    return x_cf if data_format == "channels_first" else np.moveaxis(x_cf, 1, -1)


def _back(y, data_format):
    y = np.asarray(y)
    return y if data_format == "channels_first" else np.moveaxis(y, -1, 1)


def _input(rng, spatial, dtype=np.float64, n=2, c=3):
    return rng.standard_normal((n, c) + spatial).astype(dtype)


def _call(op, x, case, data_format, **kw):
    _, window, stride, padding, dilation, ceil_mode = case
    if op == "lp":
        return pooling.lp_pool(
            x, 3, window, stride=stride, padding=padding, dilation=dilation,
            ceil_mode=ceil_mode, data_format=data_format,
        )  # fmt: skip
    fn = {
        "max": pooling.max_pool,
        "min": pooling.min_pool,
        "sum": pooling.sum_pool,
        "avg": pooling.avg_pool,
        "avg_excl": functools.partial(pooling.avg_pool, count_include_pad=False),
    }[op]
    return fn(
        x, window, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=ceil_mode, data_format=data_format, **kw,
    )  # fmt: skip


def _ref(op, x_cf, case):
    spatial, window, stride, padding, dilation, ceil_mode = case
    n = len(spatial)
    stride = window if stride is None else _tuple(stride, n)
    args = (window, stride, _pairs(padding, n), _tuple(dilation, n), ceil_mode)
    if op == "avg_excl":
        return ref.pool(x_cf, *args, "avg", include_pad=False)
    return ref.pool(x_cf, *args, op, p=3)


# --- against the NumPy loop reference ---


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("op", ["max", "min", "sum", "avg", "avg_excl", "lp"])
def test_matches_numpy_reference(rng, op, case):
    data_format = FORMATS[CASES.index(case) % 2]  # both layouts, alternating
    x = _input(rng, case[0])
    if op == "lp":
        x = np.abs(x) + 0.1
    y = _call(op, _layout(x, data_format), case, data_format)
    assert_close(_back(y, data_format), _ref(op, x, case))


@pytest.mark.parametrize("case", [CASES[5], CASES[9]], ids=str)
def test_layouts_agree(rng, case):
    x = _input(rng, case[0], n=1) + 2.0
    for op in ["max", "min", "sum", "avg", "avg_excl", "lp"]:
        first = _call(op, x, case, "channels_first")
        last = _call(op, _layout(x, "channels_last"), case, "channels_last")
        assert_close(_back(last, "channels_last"), first)


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.uint8])
@pytest.mark.parametrize("op", ["max", "min", "sum"])
def test_integer_dtypes(rng, op, dtype):
    case = CASES[7]
    x = rng.integers(0, 100, (2, 3) + case[0]).astype(dtype)
    y = _call(op, x, case, "channels_first")
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, _ref(op, x, case).astype(dtype))


def test_bool_and_integer_average_dtypes():
    x = jnp.array([[True, False, True, True]]).T  # (4, 1) channels-last
    assert pooling.sum_pool(x, (2,)).tolist() == [[1], [2]]
    assert pooling.max_pool(x, (3,), stride=1).dtype == jnp.bool_
    y = pooling.avg_pool(jnp.arange(4).reshape(4, 1), (2,))
    assert jnp.issubdtype(y.dtype, jnp.floating)
    assert y.ravel().tolist() == [0.5, 2.5]


def test_complex_sum_and_avg(rng):
    x = rng.standard_normal((2, 7, 3)) + 1j * rng.standard_normal((2, 7, 3))
    case = ((7,), (3,), (2,), 1, 1, True)
    x_cf = np.moveaxis(x, -1, 1)
    assert_close(_back(_call("avg", x, case, "channels_last"), "channels_last"),
                 _ref("avg", x_cf, case))  # fmt: skip
    with pytest.raises(TypeError, match="complex"):
        pooling.max_pool(x, (3,))


def test_hand_computed():
    x = jnp.arange(16.0).reshape(1, 4, 4)  # channels_first, one channel
    y = pooling.max_pool(x, (2, 2), data_format="channels_first")
    assert y.tolist() == [[[5.0, 7.0], [13.0, 15.0]]]
    y = pooling.avg_pool(x, (3, 3), stride=2, padding=1, data_format="channels_first")
    # top-left window covers x[0:2, 0:2] = 0+1+4+5 over a 3x3 divisor
    assert y[0, 0, 0] == pytest.approx(10.0 / 9.0)
    y = pooling.avg_pool(
        x, (3, 3), stride=2, padding=1, count_include_pad=False,
        data_format="channels_first",
    )  # fmt: skip
    assert y[0, 0, 0] == pytest.approx(2.5)


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_batch_dims(rng, batch):
    x = rng.standard_normal(batch + (7, 6, 4))
    y = pooling.max_pool(x, (3, 2), stride=(2, 2), padding=1)
    flat = x.reshape((-1, 7, 6, 4))
    expected = np.moveaxis(
        ref.pool(np.moveaxis(flat, -1, 1), (3, 2), (2, 2), ((1, 1),) * 2, (1, 1),
                 False, "max"), 1, -1,
    )  # fmt: skip
    assert_close(y, expected.reshape(batch + expected.shape[1:]))


# --- against lax.reduce_window (oracle) and Flax for string paddings ---


def _reduce_window(x, init, op, window, stride, padding, dilation):
    n = len(window)
    lead = x.ndim - n - 1
    if not isinstance(padding, str):
        padding = ((0, 0),) * lead + tuple(padding) + ((0, 0),)
    return lax.reduce_window(
        x, init, op, (1,) * lead + window + (1,), (1,) * lead + stride + (1,),
        padding, window_dilation=(1,) * lead + dilation + (1,),
    )  # fmt: skip


STRING_CASES = [
    ((9, 8), (3, 3), (2, 2), "SAME", (1, 1)),
    ((9, 8), (3, 2), (1, 3), "same", (2, 1)),
    ((5, 6, 7), (2, 3, 2), (2, 2, 3), "SAME", (1, 1, 1)),
    ((7, 7), (3, 3), (2, 1), ((2, 1), (0, 2)), (1, 2)),
    ((8,), (3,), (1,), ((-1, 2),), (1,)),  # negative padding crops
]


@pytest.mark.parametrize("case", STRING_CASES)
def test_reduce_window_oracle(rng, case):
    spatial, window, stride, padding, dilation = case
    x = rng.standard_normal((2,) + spatial + (3,))
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    for fn, init, op in [
        (pooling.max_pool, -jnp.inf, lax.max),
        (pooling.min_pool, jnp.inf, lax.min),
        (pooling.sum_pool, 0.0, lax.add),
    ]:
        expected = _reduce_window(x, init, op, window, stride, padding, dilation)
        assert_close(fn(x, window, **kw), expected)
    if isinstance(padding, str):  # Flax's avg_pool: the full window divides
        expected = _reduce_window(x, 0.0, lax.add, window, stride, padding, dilation)
        assert_close(pooling.avg_pool(x, window, **kw), expected / math.prod(window))


@pytest.mark.parametrize("padding", ["SAME", ((1, 2), (0, 1))])
def test_flax_avg_and_max(rng, padding):
    nn = pytest.importorskip("flax.linen")
    x = jnp.asarray(rng.standard_normal((2, 9, 8, 3)))
    for include in (True, False):
        expected = nn.avg_pool(x, (3, 2), (2, 2), padding, count_include_pad=include)
        actual = pooling.avg_pool(
            x, (3, 2), stride=(2, 2), padding=padding, count_include_pad=include
        )
        assert_close(actual, expected)
    expected = nn.max_pool(x, (3, 2), (2, 2), padding)
    assert_close(pooling.max_pool(x, (3, 2), stride=(2, 2), padding=padding), expected)


# --- against PyTorch ---


def _torch_ok(op, case):
    spatial, window, stride, padding, dilation, ceil_mode = case
    if not isinstance(padding, int):
        return False
    dil = _tuple(dilation, len(spatial))
    if op in ("avg", "avg_excl", "lp") and any(d != 1 for d in dil):
        return False
    return not (op == "lp" and padding)


def _torch_call(torch, op, x, case):
    spatial, window, stride, padding, dilation, ceil_mode = case
    F = torch.nn.functional
    n = len(spatial)
    t = torch.as_tensor(x)
    if op == "max":
        f = getattr(F, f"max_pool{n}d")
        return f(t, window, stride, padding, dilation, ceil_mode=ceil_mode)
    if op == "lp":
        f = getattr(F, f"lp_pool{n}d")
        k = window[0] if n == 1 else window  # lp_pool1d wants an int
        return f(t, 3.0, k, stride, ceil_mode=ceil_mode)
    f = getattr(F, f"avg_pool{n}d")
    return f(t, window, stride, padding, ceil_mode, count_include_pad=op == "avg")


# every case PyTorch accepts (no dilation for avg/lp, no padding for lp)
TORCH = [
    pytest.param(op, case, id=f"{op}-{name}")
    for op in ["max", "avg", "avg_excl", "lp"]
    for case, name in zip(CASES, CASE_IDS)
    if _torch_ok(op, case)
]
TORCH_GRAD = [
    p for p in TORCH if p.id in ("max-1d-2", "max-2d-4", "max-3d-9", "avg-2d-7",
                                 "avg_excl-2d-4", "lp-2d-6", "lp-3d-8")
]  # fmt: skip


@pytest.mark.parametrize(("op", "case"), TORCH)
def test_matches_torch(rng, op, case):
    torch = pytest.importorskip("torch")
    x = _input(rng, case[0])
    if op == "lp":
        x = np.abs(x) + 0.1
    expected = _torch_call(torch, op, x, case).numpy()
    assert_close(_call(op, x, case, "channels_first"), expected)


@pytest.mark.parametrize(("op", "case"), TORCH_GRAD)
def test_grad_matches_torch(rng, op, case):
    torch = pytest.importorskip("torch")
    x = np.abs(_input(rng, case[0])) + 0.1
    out = _call(op, x, case, "channels_first")
    cot = rng.standard_normal(out.shape)
    t = torch.tensor(x, requires_grad=True)
    (_torch_call(torch, op, t, case) * torch.tensor(cot)).sum().backward()

    def f(x):
        return jnp.sum(_call(op, x, case, "channels_first") * cot)

    assert_close(jax.jit(jax.grad(f))(x), t.grad.numpy())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_max_grad_ties_go_to_first_like_torch(n):
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 2) + (5,) * n)  # every window is one big tie
    x[..., 0] = 1.0  # some ties among the maxima too
    window = (3,) * n
    t = torch.tensor(x, requires_grad=True)
    getattr(torch.nn.functional, f"max_pool{n}d")(t, 3, 1, 1).sum().backward()

    def f(x):
        return pooling.max_pool(
            x, window, stride=1, padding=1, data_format="channels_first"
        ).sum()

    np.testing.assert_array_equal(jax.jit(jax.grad(f))(x), t.grad.numpy())


# --- adaptive and global pools ---

ADAPTIVE = [((10,), (3,)), ((7, 9), (3, 4)), ((5, 6), (5, 2)), ((6, 5, 7), (4, 2, 3))]


@pytest.mark.parametrize(
    ("spatial", "size", "data_format"),
    [case + (FORMATS[i % 2],) for i, case in enumerate(ADAPTIVE)],
)
def test_adaptive_reference(rng, spatial, size, data_format):
    x = _input(rng, spatial)
    xl = _layout(x, data_format)
    for fn, op in [
        (pooling.adaptive_avg_pool, "avg"),
        (pooling.adaptive_max_pool, "max"),
    ]:
        y = fn(xl, size, data_format=data_format)
        assert_close(_back(y, data_format), ref.adaptive_pool(x, size, op))


@pytest.mark.parametrize(("spatial", "size"), ADAPTIVE)
def test_adaptive_matches_torch(rng, spatial, size):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    n = len(spatial)
    x = _input(rng, spatial)
    t = torch.tensor(x, requires_grad=True)
    cot = rng.standard_normal((2, 3) + size)
    for name, fn in [
        ("avg", pooling.adaptive_avg_pool),
        ("max", pooling.adaptive_max_pool),
    ]:
        tf = getattr(F, f"adaptive_{name}_pool{n}d")
        expected = tf(t, size)
        assert_close(
            fn(x, size, data_format="channels_first"), expected.detach().numpy()
        )
        t.grad = None
        (expected * torch.tensor(cot)).sum().backward()
        g = jax.grad(lambda x: jnp.sum(fn(x, size, data_format="channels_first") * cot))
        assert_close(jax.jit(g)(x), t.grad.numpy())


def test_adaptive_int_and_none_sizes(rng):
    x = rng.standard_normal((2, 9, 7, 3))
    assert pooling.adaptive_avg_pool(x, 2).shape == (2, 2, 2, 3)
    y = pooling.adaptive_max_pool(x, (None, 3))
    assert_close(y, pooling.adaptive_max_pool(x, (9, 3)))
    y = pooling.adaptive_avg_pool(x.astype(np.int32), (3, 1))
    assert jnp.issubdtype(y.dtype, jnp.floating)


@pytest.mark.parametrize("data_format", FORMATS)
def test_global_pools(rng, data_format):
    x = rng.standard_normal((2, 3, 5, 6))
    axes = (2, 3) if data_format == "channels_first" else (1, 2)
    for fn, npf in [
        (pooling.global_max_pool, np.max),
        (pooling.global_avg_pool, np.mean),
    ]:
        assert_close(fn(x, data_format=data_format), npf(x, axis=axes))
        y = fn(x, data_format=data_format, keepdims=True)
        assert_close(y, npf(x, axis=axes, keepdims=True))
    y = pooling.global_avg_pool(x, spatial_dims=1)  # (2, 3, 5 | 6)
    assert_close(y, x.mean(axis=2))


def test_global_max_grad_first_tie():
    x = jnp.zeros((1, 3, 3, 1)).at[0, 1, 0, 0].set(2.0).at[0, 2, 2, 0].set(2.0)
    g = jax.jit(jax.grad(lambda x: pooling.global_max_pool(x).sum()))(x)
    assert g[0, 1, 0, 0] == 1.0 and g.sum() == 1.0


# --- transformations ---


def test_jit_vmap_grad(rng):
    x = rng.standard_normal((3, 2, 9, 8, 3))
    f = functools.partial(pooling.avg_pool, window_shape=(3, 3), stride=2, padding=1)
    y = jax.jit(lambda x: pooling.max_pool(x, (3, 3), stride=2, ceil_mode=True))(x)
    assert_close(y, pooling.max_pool(x, (3, 3), stride=2, ceil_mode=True))
    assert_close(jax.vmap(f)(x), f(x))
    assert_close(jax.vmap(f, in_axes=4, out_axes=4)(x[..., None]), f(x)[..., None])
    g = jax.grad(lambda x: jnp.sum(f(x) ** 2))
    assert_close(jax.jit(jax.vmap(g))(x), g(x))
    ad = jax.vmap(lambda v: pooling.adaptive_max_pool(v, (3, 2)))(x)
    assert_close(ad, pooling.adaptive_max_pool(x, (3, 2)))
    check_grads(
        jax.jit(lambda x: pooling.lp_pool(x, 2.5, (2, 2))),
        (np.abs(x[0, 0, :4, :4]) + 1,), order=1, modes=["rev"],
    )  # fmt: skip


# --- errors ---


def test_errors():
    x = jnp.ones((1, 6, 6, 2))
    with pytest.raises(ValueError, match="`window_shape`"):
        pooling.max_pool(x, (0, 2))
    with pytest.raises(ValueError, match="`stride`"):
        pooling.avg_pool(x, (2, 2), stride=0)
    with pytest.raises(ValueError, match="`stride`"):
        pooling.avg_pool(x, (2, 2), stride=(1, 2, 3))
    with pytest.raises(ValueError, match="empty"):
        pooling.max_pool(x, (7, 2))
    with pytest.raises(ValueError, match="empty"):
        pooling.avg_pool(x, (3, 3), dilation=3)
    with pytest.raises(ValueError, match="`data_format`"):
        pooling.max_pool(x, (2, 2), data_format="NHWC")
    with pytest.raises(ValueError, match="`padding`"):
        pooling.max_pool(x, (2, 2), padding="REFLECT")
    with pytest.raises(ValueError, match="at least"):
        pooling.max_pool(jnp.ones((6, 6)), (2, 2))
    with pytest.raises(ValueError, match="`p`"):
        pooling.lp_pool(x, 0, (2, 2))
    with pytest.raises(ValueError, match="`output_size`"):
        pooling.adaptive_avg_pool(x, (0, 2))
    with pytest.raises(ValueError, match="empty spatial"):
        pooling.global_avg_pool(jnp.ones((1, 0, 3)))


def test_public_exports():
    for name in pooling.__all__:
        assert getattr(jaxconv, name) is getattr(pooling, name)
