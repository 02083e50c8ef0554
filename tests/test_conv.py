"""jaxconv.conv / conv_transpose / depthwise / separable against independent oracles.

Oracles: ``jax.lax.conv_general_dilated`` (precision HIGHEST, float64), the
NumPy loop in ``tests/reference.py``, ``np.pad`` for boundary modes, PyTorch
(optional) and a few hand-computed values.
"""

from __future__ import annotations

import functools
import inspect
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax
from reference import conv_reference

import jaxconv

HI = lax.Precision.HIGHEST
SPATIAL = "HWD"


def _rand(rng, shape, dtype=np.float64):
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-8, 8, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _dn(nd):
    s = SPATIAL[:nd]
    return (f"N{s}C", f"{s}IO", f"N{s}C")


def _oracle_pads(padding, kernel, dilation):
    """Padding for lax written from the SPEC, independent of jaxconv.shapes."""
    nd = len(kernel)
    dilation = (dilation,) * nd if isinstance(dilation, int) else dilation
    reach = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if isinstance(padding, str):
        p = padding.upper()
        if p == "FULL":
            return [(r, r) for r in reach]
        if p == "CAUSAL":
            return [(r, 0) for r in reach]
        return p  # VALID / SAME / SAME_LOWER: lax's own rule
    if isinstance(padding, int):
        return [(padding, padding)] * nd
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def lax_conv(x, w, *, stride=1, padding="VALID", dilation=1, groups=1, **kw):
    """Oracle: channels_last conv via lax with any number of batch dims."""
    nd = w.ndim - 2
    batch = x.shape[: x.ndim - nd - 1]
    xf = jnp.reshape(x, (-1, *x.shape[len(batch):]))
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dil = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    out = lax.conv_general_dilated(
        xf, w, stride, _oracle_pads(padding, w.shape[:nd], dil), rhs_dilation=dil,
        dimension_numbers=_dn(nd), feature_group_count=groups, precision=HI, **kw,
    )
    return out.reshape(*batch, *out.shape[1:])


def to_cf(x, nd):
    """channels_last x -> channels_first."""
    return np.moveaxis(np.asarray(x), -1, x.ndim - nd - 1)


def from_cf(y, nd):
    return np.moveaxis(np.asarray(y), y.ndim - nd - 1, -1)


def kernel_to_cf(w):
    """(*K, I, O) -> (O, I, *K)."""
    nd = w.ndim - 2
    return np.transpose(w, (nd + 1, nd, *range(nd)))


# (batch, spatial, kernel, c_in, c_out, stride, padding, dilation, groups)
CONV_CASES = [
    ((2,), (11,), (3,), 3, 4, 1, "VALID", 1, 1),
    ((2,), (10,), (4,), 4, 6, 2, "SAME", 1, 2),
    ((1,), (12,), (3,), 2, 2, 1, "causal", 2, 1),
    ((3,), (7,), (2,), 2, 3, 5, "FULL", 1, 1),  # stride > kernel
    ((), (9,), (3,), 3, 3, 3, [(2, -1)], 1, 3),  # no batch, crop, depthwise
    ((2,), (7, 6), (3, 3), 3, 5, 1, 1, 1, 1),
    ((1,), (8, 9), (3, 2), 4, 6, (2, 1), "same_lower", (1, 2), 2),
    ((2, 2), (6, 5), (2, 3), 2, 3, (1, 2), [1, 2], 1, 1),  # two batch dims
    ((1,), (9, 9), (3, 3), 6, 12, 2, "SAME", 1, 6),
    ((1,), (10, 7), (2, 2), 2, 2, 4, [(1, 0), (0, 3)], (2, 1), 1),
    ((), (5, 6), (5, 5), 1, 2, 1, "Full", 1, 1),
    ((1,), (5, 4, 6), (2, 3, 2), 2, 4, (1, 2, 1), "SAME", (1, 1, 2), 1),
    ((2,), (4, 5, 3), (3, 2, 2), 4, 4, 1, 1, 1, 2),
    ((1,), (5, 5, 4), (3, 2, 2), 2, 2, 2, "CAUSAL", 1, 1),
]


def _case_id(case):
    batch, spatial, kernel, ci, co, s, p, d, g = case
    return f"b{batch}-S{spatial}-k{kernel}-{ci}to{co}-s{s}-p{p}-d{d}-g{g}"


@pytest.mark.parametrize(
    "case,data_format",
    [(c, ("channels_last", "channels_first")[i % 2]) for i, c in enumerate(CONV_CASES)]
    + [(CONV_CASES[i], "channels_first") for i in (0, 8)]
    + [(CONV_CASES[i], "channels_last") for i in (7,)],
    ids=lambda v: _case_id(v) if isinstance(v, tuple) else v,
)
def test_conv_matches_lax(case, data_format, rng):
    batch, spatial, kernel, ci, co, s, p, d, g = case
    nd = len(kernel)
    x = _rand(rng, (*batch, *spatial, ci))
    w = _rand(rng, (*kernel, ci // g, co))
    expected = lax_conv(x, w, stride=s, padding=p, dilation=d, groups=g)
    kw = dict(stride=s, padding=p, dilation=d, groups=g, data_format=data_format)
    if data_format == "channels_last":
        got = jaxconv.conv(x, w, **kw)
    else:
        got = from_cf(jaxconv.conv(to_cf(x, nd), kernel_to_cf(w), **kw), nd)
    assert_close(got, expected)


@pytest.mark.parametrize("algorithm", ["direct", "patches", "taps"])
def test_conv_algorithms(algorithm, rng):
    x = _rand(rng, (2, 7, 8, 4))
    w = _rand(rng, (3, 2, 2, 6))
    kw = dict(stride=(2, 1), padding="SAME", dilation=(1, 2), groups=2)
    assert_close(jaxconv.conv(x, w, algorithm=algorithm, **kw), lax_conv(x, w, **kw))


def test_conv_matches_numpy_loop_reference(rng):
    x = _rand(rng, (2, 4, 6, 5))  # channels_first
    w = _rand(rng, (6, 2, 3, 2))
    got = jaxconv.conv(
        x, w, stride=(2, 1), padding=[(1, 0), (2, 1)], dilation=(1, 2), groups=2,
        data_format="channels_first",
    )
    expected = conv_reference(x, w, (2, 1), [(1, 0), (2, 1)], None, (1, 2), 2)
    assert_close(got, expected)


def test_conv_hand_computed():
    x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1)
    w = jnp.array([1.0, 0.0, -1.0]).reshape(3, 1, 1)
    # Cross-correlation, not flipped: 1*1 + 2*0 + 3*(-1) = -2.
    assert jaxconv.conv(x, w)[:, 0].tolist() == [-2.0, -2.0]
    ones = jnp.ones((3, 1, 1))
    got = jaxconv.conv(x[:3], ones, padding=1, padding_mode="reflect")
    assert got[:, 0].tolist() == [5.0, 6.0, 7.0]  # [2, 1, 2, 3, 2]
    got = jaxconv.conv(x[:3], ones, padding="causal", padding_mode="circular")
    assert got[:, 0].tolist() == [6.0, 6.0, 6.0]  # [2, 3, 1, 2, 3]


# --- padding modes ----------------------------------------------------------


NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap",
           "symmetric": "symmetric", "zeros": "constant"}


def _np_pad(x, pairs, modes, first):
    """np.pad per axis (axes in increasing order, as np.pad does)."""
    for i, ((lo, hi), m) in enumerate(zip(pairs, modes)):
        widths = [(0, 0)] * x.ndim
        widths[first + i] = (lo, hi)
        x = np.pad(x, widths, mode=NP_MODE[m])
    return x


@pytest.mark.parametrize(
    "mode,padding",
    [
        ("reflect", 2),
        ("replicate", [(0, 3), (2, 1)]),
        ("circular", "SAME"),
        ("symmetric", [3, (1, 2)]),
        (("reflect", "circular"), "full"),
        (("zeros", "symmetric"), [(1, 1), (2, 0)]),
        ("Replicate", "causal"),
    ],
)
def test_padding_modes_match_np_pad(mode, padding, rng):
    x = _rand(rng, (2, 6, 5, 3))
    w = _rand(rng, (3, 2, 3, 4))
    modes = (mode.lower(),) * 2 if isinstance(mode, str) else mode
    pairs = _oracle_pads(padding, (3, 2), 1)
    if isinstance(pairs, str):  # SAME on 6x5 with a 3x2 kernel
        pairs = [(1, 1), (0, 1)]
    expected = lax_conv(_np_pad(x, pairs, modes, 1), w)
    assert_close(jaxconv.conv(x, w, padding=padding, padding_mode=mode), expected)


def test_padding_mode_crops_then_extends(rng):
    x = _rand(rng, (1, 9, 2))
    w = _rand(rng, (3, 2, 2))
    got = jaxconv.conv(x, w, padding=[(-2, 3)], padding_mode="reflect")
    expected = lax_conv(np.pad(x[:, 2:], [(0, 0), (0, 3), (0, 0)], mode="reflect"), w)
    assert_close(got, expected)


# --- batch dims and transformations -------------------------------------------


def test_batch_dims(rng):
    w = _rand(rng, (3, 3, 2, 4))
    x = _rand(rng, (2, 3, 6, 6, 2))
    full = jaxconv.conv(x, w, padding="SAME")
    assert full.shape == (2, 3, 6, 6, 4)
    assert_close(full[1, 2], jaxconv.conv(x[1, 2], w, padding="SAME"))
    assert_close(full, lax_conv(x, w, padding="SAME"))
    xcf = to_cf(x, 2)
    out = jaxconv.conv(
        xcf, kernel_to_cf(w), padding="SAME", data_format="channels_first"
    )
    assert out.shape == (2, 3, 4, 6, 6)
    # A zero-size batch gives an empty result, not an error.
    assert jaxconv.conv(x[:0], w).shape == (0, 3, 4, 4, 4)


def test_jit_vmap(rng):
    x = _rand(rng, (3, 8, 7, 4))
    w = _rand(rng, (3, 3, 2, 6))
    kw = dict(stride=2, padding="SAME", groups=2)
    expected = lax_conv(x, w, **kw)
    f = jax.jit(functools.partial(jaxconv.conv, **kw))
    assert_close(f(x, w), expected)
    assert_close(jax.vmap(lambda xi: jaxconv.conv(xi, w, **kw))(x), expected)
    ws = _rand(rng, (2, 3, 3, 2, 6))
    got = jax.vmap(lambda wi: jaxconv.conv(x, wi, **kw))(ws)
    assert_close(got, np.stack([lax_conv(x, wi, **kw) for wi in ws]))


@pytest.mark.parametrize(
    "kw,data_format",
    [
        (dict(stride=2, padding="SAME", groups=2), "channels_last"),
        (dict(padding=[(2, -1), (1, 1)], dilation=(2, 1)), "channels_first"),
    ],
)
def test_grad_matches_lax(kw, data_format, rng):
    x = _rand(rng, (2, 7, 6, 4))
    w = _rand(rng, (3, 2, 4 // kw.get("groups", 1), 4))
    ct = _rand(rng, lax_conv(x, w, **kw).shape)

    def loss_ours(x, w):
        if data_format == "channels_first":
            xcf, wcf = jnp.moveaxis(x, -1, 1), jnp.transpose(w, (3, 2, 0, 1))
            out = jaxconv.conv(xcf, wcf, data_format=data_format, **kw)
            out = jnp.moveaxis(out, 1, -1)
        else:
            out = jaxconv.conv(x, w, **kw)
        return jnp.sum(out * ct)

    def loss_lax(x, w):
        return jnp.sum(lax_conv(x, w, **kw) * ct)

    got = jax.grad(loss_ours, argnums=(0, 1))(x, w)
    expected = jax.grad(loss_lax, argnums=(0, 1))(x, w)
    assert_close(got[0], expected[0])
    assert_close(got[1], expected[1])


def test_grad_through_padding_mode(rng):
    x = _rand(rng, (1, 6, 5, 2))
    w = _rand(rng, (3, 3, 2, 2))
    pairs = [(2, 1), (1, 2)]

    def ours(x):
        return jnp.sum(jaxconv.conv(x, w, padding=pairs, padding_mode="reflect") ** 2)

    def oracle(x):
        xp = jnp.pad(x, [(0, 0), *pairs, (0, 0)], mode="reflect")
        return jnp.sum(lax_conv(xp, w) ** 2)

    assert_close(jax.grad(ours)(x), jax.grad(oracle)(x))


# --- dtypes -------------------------------------------------------------------


def test_dtypes(rng):
    x = _rand(rng, (1, 6, 6, 2), np.int8)
    w = _rand(rng, (3, 3, 2, 3), np.int8)
    got = jaxconv.conv(x, w, preferred_element_type=jnp.int32)
    assert got.dtype == jnp.int32
    expected = lax_conv(x, w, preferred_element_type=jnp.int32)
    np.testing.assert_array_equal(got, expected)
    xf = x.astype(np.float32)
    assert jaxconv.conv(xf, w.astype(np.float32)).dtype == jnp.float32
    # Mixed dtypes are promoted (as Flax does).
    assert jaxconv.conv(xf, w.astype(np.float64)).dtype == jnp.float64
    xc = _rand(rng, (2, 9, 2)) + 1j * _rand(rng, (2, 9, 2))
    wc = _rand(rng, (3, 2, 2)) - 1j * _rand(rng, (3, 2, 2))
    out = jaxconv.conv(xc, wc, padding="SAME", padding_mode="reflect")
    assert out.dtype == jnp.complex128
    xcp = np.pad(xc, [(0, 0), (1, 1), (0, 0)], mode="reflect")
    assert_close(out, lax_conv(xcp, wc))  # no conjugation, as lax
    xb = jnp.asarray(xf, jnp.bfloat16)
    wb = jnp.asarray(w, jnp.bfloat16)
    out = jaxconv.conv(xb, wb, preferred_element_type=jnp.float32)
    assert out.dtype == jnp.float32
    assert_close(out, lax_conv(xf, w.astype(np.float32)), dtype=jnp.bfloat16)


# --- PyTorch ------------------------------------------------------------------


# (spatial, kernel, c_in, c_out, stride, padding, dilation, groups)
TORCH_CASES = [
    ((11,), (3,), 4, 6, 2, 1, 1, 2),
    ((10,), (4,), 3, 3, 1, "same", 2, 3),
    ((8, 7), (3, 2), 4, 4, (2, 3), (1, 0), (1, 2), 2),
    ((9, 9), (5, 5), 2, 3, 4, 2, 1, 1),  # stride < kernel, odd sizes
    ((6, 5, 4), (2, 3, 2), 2, 4, 1, "valid", 1, 2),
    ((5, 6, 7), (3, 3, 3), 3, 2, 2, 1, (1, 2, 1), 1),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_conv_matches_torch(case, rng):
    torch = pytest.importorskip("torch")
    spatial, kernel, ci, co, s, p, d, g = case
    nd = len(kernel)
    x = _rand(rng, (2, ci, *spatial))
    w = _rand(rng, (co, ci // g, *kernel))
    fn = getattr(torch.nn.functional, f"conv{nd}d")
    expected = fn(torch.tensor(x), torch.tensor(w), stride=s, padding=p, dilation=d,
                  groups=g).numpy()
    got = getattr(jaxconv, f"conv{nd}d")(
        x, w, stride=s, padding=p, dilation=d, groups=g, data_format="channels_first"
    )
    assert_close(got, expected)


@pytest.mark.parametrize(
    "nd,mode", [(1, "circular"), (2, "replicate"), (2, "reflect"), (3, "reflect")]
)
def test_padding_mode_matches_torch(nd, mode, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    spatial = (7, 6, 5)[:nd]
    pairs = [(2, 1), (0, 3), (1, 1)][:nd]
    x = _rand(rng, (2, 4, *spatial))
    w = _rand(rng, (6, 2, *(3, 2, 3)[:nd]))
    torch_pad = tuple(v for lo_hi in reversed(pairs) for v in lo_hi)
    xp = F.pad(torch.tensor(x), torch_pad, mode=mode)
    expected = getattr(F, f"conv{nd}d")(xp, torch.tensor(w), stride=2, groups=2)
    got = jaxconv.conv(x, w, stride=2, groups=2, padding=pairs, padding_mode=mode,
                       data_format="channels_first")
    assert_close(got, expected.numpy())


# --- conv_transpose -------------------------------------------------------------


# (spatial, kernel, c_in, c_out, stride, padding, output_padding, dilation, groups)
TRANSPOSE_CASES = [
    ((7,), (3,), 4, 6, 2, 1, 1, 1, 2),
    ((5,), (2,), 2, 3, 3, 0, 2, 1, 1),  # stride > kernel
    ((6,), (3,), 3, 3, 1, 1, 1, 2, 3),  # output_padding < dilation
    ((5, 6), (3, 3), 4, 6, 2, 1, 1, 1, 2),
    ((4, 5), (4, 2), 2, 4, (2, 3), (1, 0), (0, 2), (1, 2), 1),
    ((6, 5), (3, 3), 2, 2, 1, 2, 0, 2, 2),
    ((3, 4, 3), (2, 3, 2), 2, 4, 2, (0, 1, 1), (1, 0, 1), 1, 2),
    ((4, 3, 3), (3, 3, 3), 3, 2, (1, 2, 2), 1, 0, (2, 1, 1), 1),
]


@pytest.mark.parametrize(
    "case,also_channels_last",
    [(c, i % 2 == 0) for i, c in enumerate(TRANSPOSE_CASES)],
    ids=str,
)
def test_conv_transpose_matches_torch(case, also_channels_last, rng):
    torch = pytest.importorskip("torch")
    spatial, kernel, ci, co, s, p, op, d, g = case
    nd = len(kernel)
    x = _rand(rng, (2, ci, *spatial))
    w = _rand(rng, (ci, co // g, *kernel))
    fn = getattr(torch.nn.functional, f"conv_transpose{nd}d")
    expected = fn(torch.tensor(x), torch.tensor(w), stride=s, padding=p,
                  output_padding=op, groups=g, dilation=d).numpy()
    kw = dict(stride=s, padding=p, output_padding=op, dilation=d, groups=g)
    got = jaxconv.conv_transpose(x, w, data_format="channels_first", **kw)
    assert_close(got, expected)
    if not also_channels_last:
        return
    # channels_last: x (N, *S, C_in), kernel (*K, C_in, C_out // g).
    w_cl = np.transpose(w, (*range(2, nd + 2), 0, 1))
    got_cl = jaxconv.conv_transpose(from_cf(x, nd), w_cl, **kw)
    assert_close(from_cf(expected, nd), got_cl)


# (batch, spatial in, kernel, c_in, c_out, stride, padding, dilation, groups)
# (batch, spatial in, kernel, c_in, c_out, stride, padding, dilation, groups,
#  also check jaxconv.conv's vjp, jit and vmap)
ADJOINT_CASES = [
    ((2,), (9,), (3,), 2, 4, 2, [(2, -1)], 1, 2, True),  # a cropping pair
    ((), (10,), (4,), 3, 2, 3, "VALID", 1, 1, False),
    ((1,), (8, 7), (3, 3), 4, 6, 2, [(1, 1), (1, 1)], 1, 2, False),
    ((2, 1), (7, 8), (3, 2), 2, 3, (2, 3), [(2, 0), (0, 1)], (1, 2), 1, True),
    ((1,), (8, 9), (3, 4), 2, 2, (2, 3), "SAME", (2, 1), 1, False),
    ((1,), (6, 4, 6), (2, 3, 2), 2, 4, (1, 2, 2), "SAME", 1, 2, False),
]


@pytest.mark.parametrize("case", ADJOINT_CASES, ids=str)
def test_conv_transpose_is_adjoint_of_conv(case, rng):
    """conv_transpose(ct, swap(w)) equals the vjp of conv(., w) at ct."""
    batch, spatial, kernel, ci, co, s, p, d, g, thorough = case
    x = _rand(rng, (*batch, *spatial, ci))
    w = _rand(rng, (*kernel, ci // g, co))
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    y, vjp = jax.vjp(lambda x: lax_conv(x, w, **kw), x)
    ct = _rand(rng, y.shape)
    (expected,) = vjp(ct)
    w_t = np.swapaxes(w, -1, -2)  # (*K, I, O) conv -> (*K, C_in=O, C_out/g=I)
    got = jaxconv.conv_transpose(ct, w_t, output_shape=spatial, **kw)
    assert_close(got, expected)
    if not thorough:
        return
    (ours,) = jax.vjp(lambda x: jaxconv.conv(x, w, **kw), x)[1](ct)
    assert_close(ours, expected)
    f = jax.jit(functools.partial(jaxconv.conv_transpose, output_shape=spatial, **kw))
    assert_close(f(ct, w_t), expected)
    got = jax.vmap(
        lambda c: jaxconv.conv_transpose(c, w_t, output_shape=spatial, **kw)
    )(ct)
    assert_close(got, expected)


@pytest.mark.parametrize(
    "spatial,kernel,stride,dilation",
    [((5, 6), (3, 4), (2, 1), 1), ((4,), (2,), (3,), 1), ((3, 4), (3, 3), 2, 2),
     ((5,), (1,), (4,), 1), ((4,), (5,), (2,), 1)],
)
def test_conv_transpose_same(spatial, kernel, stride, dilation, rng):
    nd = len(kernel)
    x = _rand(rng, (2, *spatial, 3))
    w = _rand(rng, (*kernel, 3, 2))  # (*K, C_in, C_out)
    got = jaxconv.conv_transpose(x, w, stride=stride, padding="same", dilation=dilation)
    strides = (stride,) * nd if isinstance(stride, int) else stride
    assert got.shape == (2, *(n * s for n, s in zip(spatial, strides)), 2)
    # The placement of lax.conv_transpose(..., "SAME", transpose_kernel=True),
    # whose rhs is the forward kernel (*K, I=C_out, O=C_in).
    expected = lax.conv_transpose(
        x, np.swapaxes(w, -1, -2), strides, "SAME", rhs_dilation=(dilation,) * nd,
        dimension_numbers=_dn(nd), transpose_kernel=True, precision=HI,
    )
    assert_close(got, expected)


def test_conv_transpose_grad(rng):
    x = _rand(rng, (2, 5, 4))
    w = _rand(rng, (3, 4, 3))
    kw = dict(stride=2, padding=1, output_padding=1)

    def ours(x, w):
        return jnp.sum(jaxconv.conv_transpose(x, w, **kw) ** 2)

    def oracle(x, w):
        # PyTorch's padding p with output_padding op pads the dilated input
        # by (k - 1 - p, k - 1 - p + op) = (1, 2).
        out = lax.conv_transpose(
            x, jnp.swapaxes(w, -1, -2), (2,), [(1, 2)],
            dimension_numbers=_dn(1), transpose_kernel=True, precision=HI,
        )
        return jnp.sum(out ** 2)

    assert jaxconv.conv_transpose(x, w, **kw).shape == (2, 10, 3)
    got = jax.grad(ours, argnums=(0, 1))(x, w)
    expected = jax.grad(oracle, argnums=(0, 1))(x, w)
    assert_close(got[0], expected[0])
    assert_close(got[1], expected[1])


def test_conv_transpose_output_shape(rng):
    x = _rand(rng, (1, 7, 2))
    w = _rand(rng, (3, 2, 1))
    for target, op in [(13, 0), (14, 1)]:
        a = jaxconv.conv_transpose(x, w, stride=2, padding=1, output_shape=(target,))
        b = jaxconv.conv_transpose(x, w, stride=2, padding=1, output_padding=op)
        assert a.shape == (1, target, 1)
        assert_close(a, b)
    with pytest.raises(ValueError, match=r"`output_shape` \(=\(15,\)\)"):
        jaxconv.conv_transpose(x, w, stride=2, padding=1, output_shape=(15,))
    with pytest.raises(ValueError, match="`output_padding`.*`output_shape`"):
        jaxconv.conv_transpose(x, w, stride=2, output_padding=1, output_shape=(15,))
    with pytest.raises(ValueError, match=r"`output_padding` \(=2\) must satisfy"):
        jaxconv.conv_transpose(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="`padding`"):
        jaxconv.conv_transpose(x, w, padding="FULL")
    with pytest.raises(ValueError, match="input channels"):
        jaxconv.conv_transpose(x, _rand(rng, (3, 3, 1)))


# --- depthwise and separable ----------------------------------------------------


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_matches_lax(multiplier, rng):
    x = _rand(rng, (2, 9, 8, 3))
    w = _rand(rng, (3, 3, 1, 3 * multiplier))
    kw = dict(stride=(2, 1), padding="SAME", dilation=(1, 2))
    got = jaxconv.depthwise_conv(x, w, **kw)
    assert_close(got, lax_conv(x, w, groups=3, **kw))


def test_depthwise_matches_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _rand(rng, (2, 4, 9))
    w = _rand(rng, (8, 1, 3))
    got = jaxconv.depthwise_conv(x, w, padding=2, padding_mode="circular",
                                 data_format="channels_first")
    xp = F.pad(torch.tensor(x), (2, 2), mode="circular")
    assert_close(got, F.conv1d(xp, torch.tensor(w), groups=4).numpy())


def test_separable(rng):
    x = _rand(rng, (2, 8, 7, 3))
    wd = _rand(rng, (3, 3, 1, 6))
    wp = _rand(rng, (1, 1, 6, 5))
    kw = dict(stride=2, padding="SAME", dilation=1)
    expected = lax_conv(lax_conv(x, wd, groups=3, **kw), wp)
    assert_close(jaxconv.separable_conv(x, wd, wp, **kw), expected)
    assert_close(jaxconv.separable_conv(x, wd, wp[0, 0], **kw), expected)
    got = jaxconv.separable_conv(
        to_cf(x, 2), kernel_to_cf(wd), kernel_to_cf(wp), data_format="channels_first",
        **kw,
    )
    assert_close(from_cf(got, 2), expected)
    got = jaxconv.separable_conv(
        to_cf(x, 2), kernel_to_cf(wd), kernel_to_cf(wp)[:, :, 0, 0],
        data_format="channels_first", **kw,
    )
    assert_close(from_cf(got, 2), expected)
    with pytest.raises(ValueError, match="`w_pointwise`.*1x1"):
        jaxconv.separable_conv(x, wd, _rand(rng, (3, 3, 6, 5)))
    with pytest.raises(ValueError, match="`w_pointwise`.*expects 4 input channels"):
        jaxconv.separable_conv(x, wd, _rand(rng, (1, 1, 4, 5)))


# --- errors ---------------------------------------------------------------------


ONES = np.ones


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: jaxconv.conv(ONES((1, 5, 5, 6)), ONES((3, 3, 2, 4)), groups=4),
         ValueError, r"`groups` \(=4\) must divide the input channels \(=6\)"),
        (lambda: jaxconv.conv(ONES((1, 5, 5, 6)), ONES((3, 3, 4, 4))),
         ValueError, r"input channels \(=6\) divided by `groups` \(=1\)"),
        (lambda: jaxconv.conv(ONES((1, 5, 5, 6)), ONES((3, 3, 3, 5)), groups=2),
         ValueError, r"`groups` \(=2\) must divide the output channels \(=5"),
        (lambda: jaxconv.conv(ONES((1, 5, 5, 6)), ONES((3, 3, 6, 4)), groups=0),
         ValueError, r"`groups` \(=0\)"),
        (lambda: jaxconv.conv(ONES((5, 5)), ONES((3, 3, 1, 1))),
         ValueError, r"`x` \(shape \(5, 5\)\) must have at least 3 axes"),
        (lambda: jaxconv.conv(ONES((5, 5)), ONES((3, 3))),
         ValueError, r"`w` \(shape \(3, 3\)\) must have at least 3 axes"),
        (lambda: jaxconv.conv2d(ONES((1, 5, 5)), ONES((3, 1, 1))),
         ValueError, r"must have 4 axes for conv2d"),
        (lambda: jaxconv.conv1d(ONES((1, 5, 5)), ONES((3, 3, 1, 1))),
         ValueError, r"must have 3 axes for conv1d"),
        (lambda: jaxconv.conv(ONES((1, 3, 3, 1)), ONES((5, 5, 1, 1))),
         ValueError, r"output would be empty"),
        (lambda: jaxconv.conv(ONES((1, 3, 1)), ONES((2, 1, 1)), dilation=3),
         ValueError, r"spans 4 cells"),
        (lambda: jaxconv.conv(ONES((1, 8, 1)), ONES((2, 1, 1)), padding="half"),
         ValueError, r"`padding` \(='half'\)"),
        (lambda: jaxconv.conv(ONES((1, 8, 1)), ONES((2, 1, 1)), padding=-1),
         ValueError, r"`padding` \(=-1\)"),
        (lambda: jaxconv.conv(ONES((1, 8, 1)), ONES((2, 1, 1)), padding=1.5),
         TypeError, r"`padding`"),
        (lambda: jaxconv.conv(ONES((1, 8, 1)), ONES((2, 1, 1)), padding_mode="mirror"),
         ValueError, r"`padding_mode` \(='mirror'\)"),
        (lambda: jaxconv.conv(ONES((1, 8, 8, 1)), ONES((2, 2, 1, 1)),
                         padding_mode=("reflect",)),
         ValueError, r"`padding_mode`"),
        (lambda: jaxconv.conv(ONES((1, 3, 1)), ONES((2, 1, 1)), padding=3,
                         padding_mode="reflect"),
         ValueError, r"reflect"),
        (lambda: jaxconv.conv(ONES((1, 8, 1)), ONES((2, 1, 1)), stride=0),
         ValueError, r"`stride` \(=0\)"),
        (lambda: jaxconv.conv(ONES((1, 8, 1)), ONES((2, 1, 1)), stride=(1, 2)),
         ValueError, r"`stride` \(=\(1, 2\)\)"),
        (lambda: jaxconv.conv(ONES((1, 8, 1)), ONES((2, 1, 1)), dilation=1.0),
         TypeError, r"`dilation`"),
        (lambda: jaxconv.conv(ONES((1, 8, 1)), ONES((2, 1, 1)), data_format="NHWC"),
         ValueError, r"`data_format` \(='NHWC'\)"),
        (lambda: jaxconv.conv(ONES((1, 8, 1)), ONES((2, 1, 1)), algorithm="magic"),
         ValueError, r"`algorithm` \(='magic'\)"),
        (lambda: jaxconv.conv(ONES((1, 8, 1), np.float32), ONES((2, 1, 1), np.float32),
                         preferred_element_type=np.int32),
         TypeError, r"`preferred_element_type`"),
        (lambda: jaxconv.depthwise_conv(ONES((1, 8, 3)), ONES((2, 2, 3))),
         ValueError, r"must be a depthwise kernel \(\*K, 1, C_in \* M\)"),
        (lambda: jaxconv.depthwise_conv(ONES((1, 8, 3)), ONES((2, 1, 4))),
         ValueError, r"depthwise kernel"),
        (lambda: jaxconv.conv_transpose(ONES((1, 0, 2)), ONES((2, 2, 1))),
         ValueError, r"empty spatial axis"),
        (lambda: jaxconv.conv_transpose(ONES((1, 4, 4)), ONES((2, 4, 1)), groups=3),
         ValueError, r"`groups` \(=3\) must divide the input channels \(=4\)"),
        (lambda: jaxconv.conv_transpose(ONES((1, 4, 2)), ONES((3, 2, 1)), padding=3),
         ValueError, r"spatial axis 0: `padding` \(=\(3, 3\)\) is too large"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_errors_raised_before_tracing():
    """Static checks fire at trace time with the same messages under jit."""
    f = jax.jit(lambda x, w: jaxconv.conv(x, w, groups=4))
    with pytest.raises(ValueError, match=r"`groups` \(=4\) must divide"):
        f(jnp.ones((1, 5, 5, 6)), jnp.ones((3, 3, 2, 4)))


def test_public_api():
    for name in ["conv", "conv1d", "conv2d", "conv3d", "conv_transpose",
                 "depthwise_conv", "separable_conv"]:
        assert name in jaxconv.__all__
        assert getattr(jaxconv, name) is getattr(sys.modules["jaxconv._conv"], name)
    assert "padding_mode" in str(inspect.signature(jaxconv.conv2d))
    # Everything but arrays is keyword-only.
    with pytest.raises(TypeError):
        jaxconv.conv(jnp.ones((1, 4, 1)), jnp.ones((2, 1, 1)), 2)
