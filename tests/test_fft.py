"""The FFT algorithm against jax.lax.conv_general_dilated (the oracle)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax

from jaxconv import lax as jl
from jaxconv.algorithms.fft import conv_fft, next_fast_len

HI = lax.Precision.HIGHEST


def _rand(rng, shape, dtype=np.float64):
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-8, 8, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        re, im = rng.standard_normal((2, *shape))
        return (re + 1j * im).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# (lhs shape NC..., rhs shape OI..., strides, padding, lhs_dil, rhs_dil, fgc, bgc)
GRID = [
    ((3, 4), (6, 2), (), (), None, None, 2, 1),  # 0-D: a grouped matmul
    ((2, 3, 11), (4, 3, 3), (1,), "VALID", None, None, 1, 1),
    ((2, 3, 12), (4, 3, 4), (2,), "SAME", None, None, 1, 1),
    ((1, 2, 10), (2, 2, 4), (3,), "SAME_LOWER", None, (2,), 1, 1),
    ((2, 4, 9), (6, 2, 3), (1,), [(2, -1)], (2,), None, 2, 1),
    ((4, 2, 7), (6, 2, 2), (1,), [(1, 1)], None, (3,), 1, 2),
    ((1, 4, 12), (4, 1, 5), (2,), [(-2, 3)], None, None, 4, 1),  # depthwise
    ((1, 1, 40), (1, 1, 33), (1,), "VALID", None, None, 1, 1),  # long kernel
    ((2, 3, 7, 6), (5, 3, 3, 3), (1, 1), "VALID", None, None, 1, 1),
    ((1, 4, 8, 9), (6, 2, 3, 2), (2, 1), "SAME", None, (1, 2), 2, 1),
    ((2, 2, 6, 5), (3, 2, 2, 3), (1, 2), [(1, 2), (0, -1)], (2, 1), (1, 1), 1, 1),
    ((6, 2, 5, 5), (6, 2, 3, 3), (1, 1), [(1, 1), (1, 1)], None, None, 1, 3),
    ((1, 3, 5, 5), (2, 3, 7, 7), (1, 1), "SAME", None, None, 1, 1),  # kernel > input
    ((2, 2, 4, 4), (3, 2, 2, 2), (3, 3), [(-1, 2), (2, -1)], (3, 2), (2, 1), 1, 1),
    ((1, 2, 5, 4, 6), (4, 2, 2, 3, 2), (1, 2, 1), "SAME", None, (1, 1, 2), 1, 1),
    ((2, 4, 4, 5, 3), (4, 2, 3, 2, 2), (2, 1, 1), [(1, 0), (0, 1), (1, 1)],
     (1, 2, 1), None, 2, 1),
    ((2, 2, 3, 4, 4), (4, 2, 2, 2, 2), (1, 1, 1), "VALID", None, None, 1, 2),
]


def _fft(**kw):
    """jaxconv's FFT conv with static arguments, jitted (one compile per test)."""
    return jax.jit(functools.partial(jl.conv_general_dilated, algorithm="fft", **kw))


def _lax(**kw):
    return jax.jit(functools.partial(lax.conv_general_dilated, **kw))


def _grid_id(case):
    lhs, rhs, s, p, ld, rd, g, b = case
    return f"{len(lhs) - 2}d-s{s}-p{p}-ld{ld}-rd{rd}-g{g}-b{b}".replace(" ", "")


def _kwargs(case):
    _, _, s, p, ld, rd, g, b = case
    return dict(window_strides=s, padding=p, lhs_dilation=ld, rhs_dilation=rd,
                feature_group_count=g, batch_group_count=b, precision=HI)


@pytest.mark.parametrize("case", GRID, ids=_grid_id)
def test_matches_lax_float64(case, rng):
    x = _rand(rng, case[0])
    w = _rand(rng, case[1])
    expected = _lax(**_kwargs(case))(x, w)
    actual = _fft(**_kwargs(case))(x, w)
    assert actual.dtype == expected.dtype
    assert_close(actual, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.complex128])
@pytest.mark.parametrize("case", GRID[1::3], ids=_grid_id)
def test_matches_lax_dtypes(case, dtype, rng):
    x = _rand(rng, case[0], dtype)
    w = _rand(rng, case[1], dtype)
    expected = _lax(**_kwargs(case))(x, w)
    actual = _fft(**_kwargs(case))(x, w)
    assert actual.dtype == expected.dtype
    assert_close(actual, expected)


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_low_precision_accumulates_in_float32(dtype, rng):
    x = _rand(rng, (2, 3, 9, 8)).astype(dtype)
    w = _rand(rng, (4, 3, 3, 2)).astype(dtype)
    kw = dict(window_strides=(1, 1), padding="SAME")
    expected = _lax(**kw, preferred_element_type=jnp.float32)(x, w)
    actual = _fft(**kw)(x, w)
    assert actual.dtype == np.dtype(dtype)
    assert_close(actual, expected.astype(dtype), dtype=dtype)


@pytest.mark.parametrize(
    "dtype, pref", [(np.int32, None), (np.int8, np.int32), (np.int16, np.int64)]
)
def test_integers_are_rounded_exactly(dtype, pref, rng):
    x = _rand(rng, (2, 4, 10, 9), dtype)
    w = _rand(rng, (6, 2, 3, 4), dtype)
    kw = dict(window_strides=(2, 1), padding="SAME", feature_group_count=2,
              preferred_element_type=pref)
    expected = _lax(**kw)(x, w)
    actual = _fft(**kw)(x, w)
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


def test_integer_overflow_wraps_like_lax():
    x = jnp.full((1, 1, 8), 100, jnp.int8)
    w = jnp.full((1, 1, 3), 100, jnp.int8)
    kw = dict(window_strides=(1,), padding="VALID")
    expected = _lax(**kw)(x, w)
    actual = _fft(**kw)(x, w)
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("case", [GRID[0], GRID[4], GRID[10], GRID[11], GRID[15]],
                         ids=_grid_id)
def test_gradients_match_lax(case, rng):
    x = _rand(rng, case[0])
    w = _rand(rng, case[1])
    kw = _kwargs(case)
    out_shape = lax.conv_general_dilated(x, w, **kw).shape
    ct = _rand(rng, out_shape)

    def grads(f):
        return jax.jit(jax.grad(lambda a, b: jnp.sum(f(a, b) * ct), argnums=(0, 1)))

    expected = grads(_lax(**kw))(x, w)
    actual = grads(_fft(**kw))(x, w)
    for a, e in zip(actual, expected):
        assert_close(a, e)


def test_complex_gradient_matches_lax(rng):
    case = GRID[9]
    x = _rand(rng, case[0], np.complex128)
    w = _rand(rng, case[1], np.complex128)
    kw = _kwargs(case)

    def grads(f):
        loss = lambda a, b: jnp.sum(jnp.abs(f(a, b)) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1)))

    expected = grads(_lax(**kw))(x, w)
    actual = grads(_fft(**kw))(x, w)
    for a, e in zip(actual, expected):
        assert_close(a, e)


def test_jit_and_vmap(rng):
    x = _rand(rng, (3, 2, 2, 11, 10))  # vmapped axis first
    w = _rand(rng, (4, 2, 3, 3))
    kw = dict(window_strides=(2, 1), padding="SAME", precision=HI)

    def f(a):
        return jl.conv_general_dilated(a, w, algorithm="fft", **kw)

    actual = jax.jit(jax.vmap(f))(x)
    expected = jax.vmap(lambda a: lax.conv_general_dilated(a, w, **kw))(x)
    assert_close(actual, expected)


def test_direct_call_on_canonical_problem(rng):
    x = _rand(rng, (2, 9, 8, 4))
    w = _rand(rng, (3, 3, 2, 6))
    actual = jax.jit(functools.partial(
        conv_fft, stride=(1, 2), dilation=(2, 1), groups=2, precision=None,
        acc_dtype=np.float64))(x, w)
    expected = lax.conv_general_dilated(
        x, w, (1, 2), "VALID", rhs_dilation=(2, 1), feature_group_count=2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HI)
    assert actual.dtype == np.float64
    assert_close(actual, expected)


def test_nan_spreads_everywhere():
    # The documented reason "auto" never picks FFT.
    x = jnp.ones((1, 1, 16)).at[0, 0, 3].set(jnp.nan)
    w = jnp.ones((1, 1, 3))
    out = _fft(window_strides=(1,), padding="VALID")(x, w)
    assert bool(jnp.all(jnp.isnan(out)))
    exact = _lax(window_strides=(1,), padding="VALID")(x, w)
    assert int(jnp.sum(jnp.isnan(exact))) == 3


@pytest.mark.parametrize(
    "n, expected", [(1, 1), (7, 7), (11, 12), (13, 14), (97, 98), (121, 125),
                    (1000, 1000), (1031, 1050)]
)
def test_next_fast_len(n, expected):
    assert next_fast_len(n) == expected
