"""jaxconv.correlate / convolve against scipy.signal."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax.test_util import check_grads

import jaxconv
from jaxconv import convolve, correlate

ss = pytest.importorskip("scipy.signal")

OPS = {"correlate": (correlate, ss.correlate), "convolve": (convolve, ss.convolve)}


def _jit(op, **static):
    """``op`` with its static arguments bound, jitted: one compile per call site."""
    return jax.jit(functools.partial(op, **static))

# (in1 shape, in2 shape): 1-3 D, odd/even, in2 larger, in2 larger in "valid".
SHAPES = [
    ((7,), (3,)),
    ((8,), (4,)),
    ((3,), (8,)),
    ((5,), (5,)),
    ((6, 5), (3, 2)),
    ((4, 5), (2, 2)),
    ((3, 4), (3, 6)),
    ((2, 3), (5, 4)),
    ((5, 4, 3), (2, 3, 2)),
    ((2, 2, 3), (3, 4, 3)),
]


def _rand(rng, shape, dtype=np.float64):
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-9, 9, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        re, im = rng.standard_normal((2, *shape))
        return (re + 1j * im).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _id(case):
    return "x".join(map(str, case[0])) + "-" + "x".join(map(str, case[1]))


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("shapes", SHAPES, ids=_id)
def test_matches_scipy_complex(shapes, op, mode, method, rng):
    ours, theirs = OPS[op]
    a = _rand(rng, shapes[0], np.complex128)
    v = _rand(rng, shapes[1], np.complex128)
    expected = theirs(a, v, mode, method="direct")
    actual = _jit(ours, mode=mode, method=method)(a, v)
    assert actual.dtype == expected.dtype
    assert_close(actual, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("shapes", SHAPES[1::3], ids=_id)
def test_matches_scipy_real(shapes, op, mode, dtype, rng):
    ours, theirs = OPS[op]
    a = _rand(rng, shapes[0], dtype)
    v = _rand(rng, shapes[1], dtype)
    expected = theirs(a, v, mode, method="direct")
    for method in ("auto", "fft"):
        actual = _jit(ours, mode=mode, method=method)(a, v)
        assert actual.dtype == np.dtype(dtype)
        assert_close(actual, expected, dtype=dtype)


def test_correlate_conjugates_in2(rng):
    a = _rand(rng, (6, 5), np.complex128)
    v = _rand(rng, (3, 2), np.complex128)
    assert_close(correlate(a, v), convolve(a, np.conj(v[::-1, ::-1])))
    # "valid" with swapped inputs is the conjugate reverse of the other order.
    swapped = np.conj(correlate(a, v, "valid"))[::-1, ::-1]
    assert_close(correlate(v, a, "valid"), swapped)


def test_same_placement_for_even_kernels():
    # scipy.signal.correlate's "same" starts at (k - 1) // 2 of "full".
    a = jnp.arange(6.0)
    v = jnp.array([1.0, 0.0, 0.0, 0.0])  # picks a[i + j - 3] at lag j
    full = correlate(a, v)
    assert_close(correlate(a, v, "same"), full[1:7])
    assert correlate(a, v, "same").tolist() == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]


def test_zero_d_and_mixed_dtypes():
    assert complex(correlate(jnp.array(2 + 1j), jnp.array(1j))) == (2 + 1j) * -1j
    assert complex(convolve(jnp.array(2 + 1j), jnp.array(1j))) == (2 + 1j) * 1j
    out = correlate(jnp.arange(5, dtype=jnp.int32), jnp.ones(2, jnp.float32))
    assert out.dtype == jnp.float32  # JAX's promotion (NumPy would give float64)


# --- boundary: scipy.signal.correlate2d / convolve2d in 2-D -------------------

BOUNDARY_SHAPES = [
    ((5, 6), (3, 3)), ((4, 5), (2, 4)), ((3, 4), (4, 6)), ((2, 3), (5, 7)),
]  # fmt: skip


@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("shapes", BOUNDARY_SHAPES, ids=_id)
def test_boundary_matches_scipy_2d(shapes, boundary, rng):
    a = _rand(rng, shapes[0], np.complex128)
    v = _rand(rng, shapes[1], np.complex128)
    fill = 1.5 - 0.5j
    kw = dict(boundary=boundary, fillvalue=fill)
    k = np.array(shapes[1])
    for mode in ("full", "same", "valid"):
        if mode == "valid" and not all(np.array(shapes[0]) >= k):
            continue
        expected = ss.convolve2d(a, v, mode, **kw)
        assert_close(_jit(convolve, mode=mode, **kw)(a, v), expected)
    full = ss.correlate2d(a, v, "full", **kw)
    assert_close(_jit(correlate, **kw)(a, v), full)
    # correlate2d's "same" starts at k // 2; ours at (k - 1) // 2 (as correlate).
    start = (k - 1) // 2
    crop = full[start[0]:start[0] + shapes[0][0], start[1]:start[1] + shapes[0][1]]
    same = _jit(correlate, mode="same", **kw)(a, v)
    assert_close(same, crop)
    if all(k % 2 == 1):
        assert_close(same, ss.correlate2d(a, v, "same", **kw))


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_boundary_nd_is_numpy_pad(boundary, method, rng):
    # The N-d extension: extend in1 with numpy.pad's constant/wrap/symmetric.
    a = _rand(rng, (4, 3, 5))
    v = _rand(rng, (3, 4, 2))
    np_mode = {"fill": "constant", "wrap": "wrap", "symm": "symmetric"}[boundary]
    extra = {"constant_values": 2.0} if boundary == "fill" else {}
    widths = [(k - 1, k - 1) for k in v.shape]
    big = np.pad(a, widths, mode=np_mode, **extra)
    expected = ss.correlate(big, v, "valid")
    kw = dict(boundary=boundary, fillvalue=2.0, method=method)
    assert_close(_jit(correlate, **kw)(a, v), expected)
    start = [(k - 1) // 2 for k in v.shape]
    same = expected[tuple(slice(s, s + n) for s, n in zip(start, a.shape))]
    assert_close(_jit(correlate, mode="same", **kw)(a, v), same)


def test_boundary_is_ignored_in_valid_mode(rng):
    a, v = _rand(rng, (6, 5)), _rand(rng, (3, 2))
    expected = correlate(a, v, "valid")
    for boundary in ("wrap", "symm"):
        assert_close(correlate(a, v, "valid", boundary=boundary), expected)
    assert_close(correlate(v, a, "valid", fillvalue=3.0), correlate(v, a, "valid"))


def test_fillvalue_is_cast_like_scipy():
    a = np.arange(4).reshape(2, 2)
    v = np.ones((2, 2), int)
    expected = ss.correlate2d(a, v, "full", fillvalue=1)
    np.testing.assert_array_equal(correlate(a, v, fillvalue=1), expected)
    np.testing.assert_array_equal(correlate(a, v, fillvalue=np.array([1])), expected)


# --- transformations ------------------------------------------------------------


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_jit_vmap(method, rng):
    a = _rand(rng, (3, 9, 8))
    v = _rand(rng, (4, 3))

    @jax.jit
    def f(x):
        return correlate(x, v, "same", boundary="symm", method=method)

    expected = np.stack([ss.convolve2d(x, v[::-1, ::-1], "same", boundary="symm")
                         for x in a])
    assert_close(jax.vmap(f)(a), expected)


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_grad(mode, method, rng):
    a = _rand(rng, (6, 5))
    v = _rand(rng, (3, 4))

    def f(x, y):
        return convolve(x, y, mode, boundary="wrap", method=method)

    check_grads(jax.jit(f), (a, v), order=1, modes=["rev"])


def test_second_order_grad(rng):
    a, v = _rand(rng, (7,)), _rand(rng, (3,))
    check_grads(jax.jit(lambda x, y: correlate(x, y, "same", boundary="symm")),
                (a, v), order=2, modes=["fwd", "rev"])


def test_grad_of_traced_fillvalue(rng):
    a, v = _rand(rng, (5,)), _rand(rng, (3,))

    def f(fill):
        return jnp.sum(correlate(a, v, fillvalue=fill) ** 2)

    check_grads(f, (1.5,), order=1, modes=["rev"])
    assert_close(jax.jit(f)(1.5), f(1.5))


def test_auto_uses_fft_only_for_large_float_problems():
    # FFT spreads a NaN everywhere; the exact path keeps it local.
    small = jnp.ones(50).at[10].set(jnp.nan)
    assert int(jnp.sum(jnp.isnan(correlate(small, jnp.ones(3), "valid")))) == 3
    big = jnp.ones(4000).at[10].set(jnp.nan)
    out = correlate(big, jnp.ones(1100), "valid")
    assert bool(jnp.all(jnp.isnan(out)))
    local = correlate(big, jnp.ones(1100), "valid", method="direct")
    assert int(jnp.sum(jnp.isnan(local))) == 11


def test_direct_keeps_exact_sums_where_auto_takes_guarded_fft_products():
    # 600 taps: the conv core's "auto" runs FFT products on finite inputs
    # (the exact loop otherwise); method="direct" never does.
    a = jnp.asarray(np.random.default_rng(0).standard_normal(3000), jnp.float32)
    v = jnp.asarray(np.random.default_rng(1).standard_normal(600), jnp.float32)
    forms = {m: [r.plan.formulation for r in jaxconv.explain(
        lambda a, v, m=m: correlate(a, v, "valid", method=m), a, v)]
        for m in ("auto", "direct")}
    assert forms == {"auto": ["spectral"], "direct": ["toeplitz"]}
    want = np.correlate(np.asarray(a, np.float64), np.asarray(v, np.float64), "valid")
    for m in ("auto", "direct"):
        assert_close(correlate(a, v, "valid", method=m), want.astype(np.float32))
    nan = correlate(a.at[100].set(jnp.nan), v, "valid", method="auto")
    assert int(jnp.sum(jnp.isnan(nan))) == 101


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="middle"), r"`mode` \(='middle'\) must be one of"),
        (dict(boundary="zero"), r"`boundary` \(='zero'\) must be one of"),
        (dict(method="fast"), r"`method` \(='fast'\) must be one of"),
        (dict(fillvalue=[1.0, 2.0]), r"`fillvalue` .* must be a scalar"),
        (dict(fillvalue=1j), r"`fillvalue` .* is complex"),
    ],
)
def test_argument_errors(kwargs, match):
    mode = kwargs.pop("mode", "full")
    with pytest.raises(ValueError, match=match):
        correlate(jnp.ones((4, 4)), jnp.ones((2, 2)), mode, **kwargs)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"same number of dimensions"):
        convolve(jnp.ones((4, 4)), jnp.ones(2))
    with pytest.raises(ValueError, match=r"must not be empty"):
        convolve(jnp.ones((0, 4)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"`mode` \(='valid'\) needs one input"):
        correlate(jnp.ones((4, 2)), jnp.ones((2, 4)), "valid")
