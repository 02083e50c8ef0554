"""Tests for jaxconv.patches: unfold/fold against NumPy loops, lax, torch and vjp."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import ref_pooling as ref
from conftest import assert_close
from jax import lax

import jaxconv
from jaxconv import patches

# (spatial, kernel, stride, padding, dilation); padding an int, ints per axis or
# (lo, hi) pairs.
CASES = [
    ((9,), (3,), 2, 1, 1),
    ((7, 8), (3, 2), 1, 0, 1),
    ((7, 8), (3, 3), (2, 3), 1, (1, 2)),  # odd/even sizes, dilation
    ((6, 5), (2, 2), 3, ((1, 0), (0, 2)), 1),  # stride > kernel, asymmetric pads
    ((5, 6, 4), (2, 3, 2), (1, 2, 1), (1, 0, 1), (2, 1, 1)),
]
IDS = [f"{len(c[0])}d-{i}" for i, c in enumerate(CASES)]
FORMATS = ["channels_last", "channels_first"]


def _args(case):
    spatial, kernel, stride, padding, dilation = case
    n = len(spatial)
    per_axis = lambda v: (v,) * n if isinstance(v, int) else tuple(v)  # noqa: E731
    pads = (
        ((padding, padding),) * n
        if isinstance(padding, int)
        else tuple(p if isinstance(p, tuple) else (p, p) for p in padding)
    )
    out = tuple(
        (s_ + lo + hi - d * (k - 1) - 1) // st + 1
        for s_, k, st, (lo, hi), d in zip(
            spatial, kernel, per_axis(stride), pads, per_axis(dilation)
        )
    )
    return kernel, per_axis(stride), pads, per_axis(dilation), out


def _kw(case, data_format):
    _, _, stride, padding, dilation = case
    return dict(
        stride=stride, padding=padding, dilation=dilation, data_format=data_format
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unfold_and_fold_match_numpy_reference(rng, case):
    spatial, kernel = case[:2]
    c = 3
    x = rng.standard_normal((2, c) + spatial)
    kernel, stride, pads, dilation, out = _args(case)
    expected = ref.unfold(x, kernel, stride, pads, dilation)
    actual = patches.unfold(x, kernel, **_kw(case, "channels_first"))
    assert_close(actual, expected)
    actual = patches.unfold(np.moveaxis(x, 1, -1), kernel, **_kw(case, "channels_last"))
    assert_close(actual, ref.to_channels_last_cols(expected, out, c))

    cols = rng.standard_normal(expected.shape)
    expected = ref.fold(cols, spatial, kernel, stride, pads, dilation)
    actual = patches.fold(cols, spatial, kernel, **_kw(case, "channels_first"))
    assert_close(actual, expected)
    cols_last = ref.to_channels_last_cols(cols, out, c)
    actual = patches.fold(cols_last, spatial, kernel, **_kw(case, "channels_last"))
    assert_close(np.moveaxis(np.asarray(actual), -1, 1), expected)


def test_hand_computed():
    x = jnp.arange(9.0).reshape(1, 1, 3, 3)
    cols = patches.unfold(x, (2, 2), data_format="channels_first")
    assert cols[0, :, 0].tolist() == [0.0, 1.0, 3.0, 4.0]
    assert cols[0, :, 3].tolist() == [4.0, 5.0, 7.0, 8.0]
    counts = patches.fold(jnp.ones((1, 4, 4)), (3, 3), 2, data_format="channels_first")
    assert counts[0, 0].tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]


TORCH_CASES = [c for c in CASES if len(c[0]) == 2 and not isinstance(c[3], tuple)]


@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_matches_torch(rng, case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    spatial, kernel, stride, padding, dilation = case
    x = rng.standard_normal((2, 3) + spatial)
    expected = F.unfold(torch.tensor(x), kernel, dilation, padding, stride)
    actual = patches.unfold(x, kernel, **_kw(case, "channels_first"))
    assert_close(actual, expected.numpy())
    cols = rng.standard_normal(expected.shape)
    expected = F.fold(torch.tensor(cols), spatial, kernel, dilation, padding, stride)
    actual = patches.fold(cols, spatial, kernel, **_kw(case, "channels_first"))
    assert_close(actual, expected.numpy())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unfold_matches_lax_patches(rng, case):
    spatial, kernel = case[:2]
    kernel, stride, pads, dilation, out = _args(case)
    x = rng.standard_normal((2, 3) + spatial)
    expected = lax.conv_general_dilated_patches(
        x, kernel, stride, pads, rhs_dilation=dilation
    )  # (N, C * T, *out), channel-major like torch
    actual = patches.unfold(x, kernel, **_kw(case, "channels_first"))
    assert_close(actual, expected.reshape(2, -1, math.prod(out)))


VJP_CASES = [
    (case, data_format, batch)
    for case, batch in zip([CASES[0], CASES[3], CASES[4]], [(), (2,), (2, 3)])
    for data_format in FORMATS
]


@pytest.mark.parametrize(("case", "data_format", "batch"), VJP_CASES, ids=str)
def test_fold_is_vjp_of_unfold(rng, case, data_format, batch):
    spatial, kernel = case[:2]
    shape = batch + (
        (2,) + spatial if data_format == "channels_first" else spatial + (2,)
    )
    x = rng.standard_normal(shape)
    kw = _kw(case, data_format)
    cols, vjp = jax.vjp(lambda x: patches.unfold(x, kernel, **kw), x)
    ct = rng.standard_normal(cols.shape)
    (expected,) = vjp(ct)
    assert_close(patches.fold(ct, spatial, kernel, **kw), expected)
    # and the adjoint identity <unfold(x), ct> == <x, fold(ct)>
    lhs = jnp.vdot(cols, ct)
    rhs = jnp.vdot(x, patches.fold(ct, spatial, kernel, **kw))
    assert_close(lhs, rhs)


def test_unfold_is_im2col_for_conv(rng):
    x = rng.standard_normal((2, 9, 8, 3))
    w = rng.standard_normal((3, 2, 3, 4))  # HWIO
    expected = lax.conv_general_dilated(
        x, w, (2, 1), ((1, 1), (0, 0)), rhs_dilation=(1, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    cols = patches.unfold(x, (3, 2), stride=(2, 1), padding=[1, 0], dilation=(1, 2))
    assert_close(cols @ w.reshape(-1, 4), expected)


def test_string_padding_and_int_kernel(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    same = patches.unfold(
        x, (3, 3), stride=2, padding="same", data_format="channels_first"
    )
    explicit = patches.unfold(
        x, (3, 3), stride=2, padding=[1, (0, 1)], data_format="channels_first"
    )  # lax's SAME: ceil(7 / 2) = 4 and ceil(6 / 2) = 3 windows
    assert_close(same, explicit)
    assert_close(patches.unfold(x, 3, data_format="channels_first"),
                 patches.unfold(x, (3, 3), data_format="channels_first"))  # fmt: skip
    cols = patches.unfold(x, 3, data_format="channels_first")
    assert patches.fold(cols, (7, 6), 3, data_format="channels_first").shape == x.shape
    square = rng.standard_normal((2, 3, 7, 7))
    cols = patches.unfold(square, 3, data_format="channels_first")
    # both sizes ints: 2-D, as torch's fold
    assert patches.fold(cols, 7, 3, data_format="channels_first").shape == square.shape
    cols = patches.unfold(square, 3)  # channels-last: spatial (3, 7), 7 channels
    assert cols.shape == (2, 1, 5, 63)
    assert patches.fold(cols, (3, 7), 3).shape == square.shape
    x = rng.standard_normal((2, 5, 5, 2))  # both ints: cols.ndim - 2 spatial axes
    assert patches.fold(patches.unfold(x, 3), 5, 3).shape == x.shape


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.complex64, np.float32])
def test_dtypes(rng, dtype):
    x = (rng.standard_normal((1, 6, 5, 2)) * 4).astype(dtype)
    cols = patches.unfold(x, (2, 3), padding=1)
    assert cols.dtype == dtype
    expected = ref.to_channels_last_cols(
        ref.unfold(np.moveaxis(x, -1, 1), (2, 3), (1, 1), ((1, 1),) * 2, (1, 1)),
        cols.shape[1:3], 2,
    )  # fmt: skip
    np.testing.assert_array_equal(cols, expected)
    if dtype != np.bool_:
        y = patches.fold(cols, (6, 5), (2, 3), padding=1)
        assert y.dtype == dtype and y.shape == x.shape


def test_jit_vmap_grad(rng):
    x = rng.standard_normal((4, 2, 7, 8, 3))
    f = lambda x: patches.unfold(x, (3, 2), stride=2, padding=1)  # noqa: E731
    assert_close(jax.jit(f)(x), f(x))
    assert_close(jax.vmap(f)(x), f(x))
    cols = f(x)
    g = lambda c: patches.fold(c, (7, 8), (3, 2), stride=2, padding=1)  # noqa: E731
    assert_close(jax.jit(jax.vmap(g))(cols), g(cols))
    grad = jax.jit(jax.grad(lambda x: jnp.sum(f(x) ** 2)))(x)
    # d/dx sum(unfold(x)^2) = 2 * x * (number of windows covering each cell)
    cover = g(jnp.ones_like(cols))
    assert_close(grad, 2 * x * cover)


def test_errors():
    x = jnp.ones((1, 3, 5, 5))
    with pytest.raises(ValueError, match="empty"):
        patches.unfold(x, (6, 2), data_format="channels_first")
    with pytest.raises(ValueError, match="empty"):
        patches.unfold(x, (3, 3), dilation=3, data_format="channels_first")
    with pytest.raises(ValueError, match="`kernel_size`"):
        patches.unfold(x, (0, 2))
    with pytest.raises(ValueError, match="`stride`"):
        patches.unfold(x, (2, 2), stride=(1, 0))
    with pytest.raises(ValueError, match="`data_format`"):
        patches.unfold(x, (2, 2), data_format="NCHW")
    with pytest.raises(ValueError, match="`padding`"):
        patches.unfold(x, (2, 2), padding="reflect")
    with pytest.raises(ValueError, match="spatial axes"):
        patches.unfold(jnp.ones((5, 5)), (2, 2))
    with pytest.raises(ValueError, match="`cols`"):
        patches.fold(
            jnp.ones((1, 12, 15)), (5, 5), (2, 2), data_format="channels_first"
        )
    with pytest.raises(ValueError, match="`cols`"):
        patches.fold(jnp.ones((1, 4, 4, 7)), (5, 5), (2, 2))
    with pytest.raises(ValueError, match="`output_size`"):
        patches.fold(jnp.ones((1, 4, 4, 8)), (0, 5), (2, 2))


def test_public_exports():
    assert jaxconv.unfold is patches.unfold and jaxconv.fold is patches.fold
