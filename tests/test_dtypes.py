"""``preferred_element_type``: jaxconv.lax accepts exactly what jax.lax accepts.

Over the product of operand dtypes and preferred types (``None`` included),
with jax.lax as the oracle:

* acceptance (abstract evaluation, nothing compiled): a combination jax.lax
  rejects raises the same exception type from every ``jaxconv.lax`` entry
  point, before tracing; one it accepts gives the same output dtype and
  shape from every entry point and algorithm;
* values: every accepted combination, with the default algorithm, on three
  problems that take different paths (grouped 3x3, lhs-dilated i.e.
  sub-pixel phases, batch-grouped strided and dilated) and
  ``conv_general_dilated_patches``, one jitted call per combination; every
  other algorithm on a cut of the product (integer inputs into floats,
  narrow floats, bool, complex).

Operands are small integers (|v| <= 2) so that every sum is exact in every
accumulation type, bfloat16 and int8 included: exact algorithms must give
equal results, the FFT results within its dtype's tolerance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax

import jaxconv
from jaxconv import lax as jl

DTYPES = [
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
    np.uint32, np.uint64, jnp.bfloat16, np.float16, np.float32, np.float64,
    np.complex64, np.complex128,
]  # fmt: skip
DTYPES = [np.dtype(d) for d in DTYPES]
PREFERRED = [None, *DTYPES]
ALGORITHMS = ("auto", "direct", "patches", "taps", "fft", "winograd", "xla")

# (lhs NCHW, rhs OIHW, strides, padding, lhs_dilation, rhs_dilation, fgc, bgc)
PROBLEMS = (
    ((2, 4, 5, 5), (4, 2, 3, 3), (1, 1), "SAME", None, None, 2, 1),
    ((2, 4, 5, 4), (3, 4, 2, 2), (1, 1), ((1, 2), (0, 1)), (2, 1), (1, 2), 1, 1),
    ((4, 3, 5, 5), (4, 3, 2, 2), (2, 1), ((1, 0), (0, 1)), None, (2, 1), 1, 2),
)


def _name(d):
    return "none" if d is None else d.name


def _operands(dtype):
    rng = np.random.default_rng(0)
    out = []
    for lhs, rhs, *_ in PROBLEMS:
        for shape in (lhs, rhs):
            if dtype == np.bool_:
                v = rng.integers(0, 2, shape)
            elif jnp.issubdtype(dtype, jnp.unsignedinteger):
                v = rng.integers(0, 3, shape)
            elif jnp.issubdtype(dtype, jnp.complexfloating):
                v = rng.integers(-2, 3, shape) + 1j * rng.integers(-2, 3, shape)
            else:
                v = rng.integers(-2, 3, shape)
            out.append(np.asarray(v).astype(dtype))
    return out


def _convs(mod, operands, pref, count=len(PROBLEMS), **kw):
    """The first ``count`` problems, then the patches."""
    outs = []
    for (x, w), (_, _, s, p, ld, rd, fgc, bgc) in zip(
        zip(operands[::2], operands[1::2]), PROBLEMS[:count]
    ):
        outs.append(mod.conv_general_dilated(
            x, w, s, p, ld, rd, feature_group_count=fgc, batch_group_count=bgc,
            preferred_element_type=pref, **kw))
    outs.append(mod.conv_general_dilated_patches(
        operands[0], (2, 3), (1, 2), "SAME", preferred_element_type=pref))
    return outs


def _dtype(name):
    return None if name is None else jnp.dtype(name)


# Static arguments hold dtype names: ``np.dtype("float64") == None`` is True.
@functools.partial(jax.jit, static_argnames=("pref", "count"))
def _lax_outputs(operands, pref, count):
    return _convs(lax, operands, _dtype(pref), count)


@functools.partial(jax.jit, static_argnames=("pref", "count", "algorithm"))
def _jaxconv_outputs(operands, pref, count, algorithm):
    return _convs(jl, operands, _dtype(pref), count, algorithm=algorithm)


@functools.cache
def _lax_rejects(dtype, pref):
    """The exception type jax.lax raises for the pair, or None."""
    try:
        jax.eval_shape(functools.partial(_convs, lax, pref=pref), _operands(dtype))
    except TypeError as err:
        return type(err)
    return None


def _entry_point_calls(operands, pref, algorithm):
    """Every jaxconv.lax entry point once, on valid shapes (as thunks)."""
    x, w = operands[:2]  # (2, 4, 5, 5), (4, 2, 3, 3)
    kw = dict(preferred_element_type=pref)
    return [
        lambda: jl.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=2,
                                        algorithm=algorithm, **kw),
        lambda: jl.conv(x[:, :2], w, (1, 1), "VALID", algorithm=algorithm, **kw),
        lambda: jl.conv_with_general_padding(x[:, :2], w, (1, 1), [(1, 0)] * 2,
                                             (2, 1), None, algorithm=algorithm,
                                             **kw),
        lambda: jl.conv_transpose(x, w, (2, 2), "SAME",
                                  dimension_numbers=("NCHW", "IOHW", "NCHW"),
                                  algorithm=algorithm, **kw),
        lambda: jl.conv_general_dilated_patches(x, (2, 2), (1, 1), "VALID", **kw),
    ]


def _entry_points(operands, pref, algorithm):
    return [call() for call in _entry_point_calls(operands, pref, algorithm)]


def _oracle_entry_points(operands, pref):
    x, w = operands[:2]
    kw = dict(preferred_element_type=pref)
    return [
        lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=2, **kw),
        lax.conv(x[:, :2], w, (1, 1), "VALID", **kw),
        lax.conv_with_general_padding(x[:, :2], w, (1, 1), [(1, 0)] * 2, (2, 1),
                                      None, **kw),
        lax.conv_transpose(x, w, (2, 2), "SAME",
                           dimension_numbers=("NCHW", "IOHW", "NCHW"), **kw),
        lax.conv_general_dilated_patches(x, (2, 2), (1, 1), "VALID", **kw),
    ]


@pytest.mark.parametrize("pref", PREFERRED, ids=_name)
@pytest.mark.parametrize("dtype", DTYPES, ids=_name)
def test_acceptance_matches_lax(dtype, pref):
    operands = _operands(dtype)
    error = _lax_rejects(dtype, pref)
    if error is not None:
        for algorithm in ALGORITHMS:
            for call in _entry_point_calls(operands, pref, algorithm):
                with pytest.raises(error):  # before tracing: called directly
                    call()
        return
    want = jax.eval_shape(functools.partial(_oracle_entry_points, pref=pref),
                          operands)
    for algorithm in ALGORITHMS:
        got = jax.eval_shape(
            functools.partial(_entry_points, pref=pref, algorithm=algorithm),
            operands)
        for i, (g, e) in enumerate(zip(got, want)):
            assert (g.dtype, g.shape) == (e.dtype, e.shape), (algorithm, i)


def _check_values(dtype, pref, algorithm, count=len(PROBLEMS)):
    operands = _operands(dtype)
    name = None if pref is None else pref.name
    expected = _lax_outputs(operands, name, count)
    actual = _jaxconv_outputs(operands, name, count, algorithm)
    for i, (got, want) in enumerate(zip(actual, expected)):
        assert got.dtype == want.dtype, (algorithm, i)
        assert got.shape == want.shape, (algorithm, i)
        assert_close(got, want, dtype=want.dtype)


ACCEPTED = [(d, p) for d in DTYPES for p in PREFERRED if _lax_rejects(d, p) is None]


@pytest.mark.parametrize("dtype,pref", ACCEPTED,
                         ids=[f"{_name(d)}-{_name(p)}" for d, p in ACCEPTED])
def test_values_match_lax(dtype, pref):
    # The batch-grouped problem is left to the cut below (compile time).
    _check_values(dtype, pref, "auto", count=2)


CUT = [
    (np.bool_, None), (np.bool_, np.float32), (np.int8, jnp.bfloat16),
    (np.uint8, np.int8), (np.int16, np.float16), (np.int32, None),
    (jnp.bfloat16, np.float32), (np.float16, jnp.bfloat16), (np.float32, np.float64),
    (np.complex64, np.complex128),
]
CUT = [(np.dtype(d), None if p is None else np.dtype(p)) for d, p in CUT]
@pytest.mark.parametrize("algorithm,dtype,pref", [
    pytest.param(a, d, p, id=f"{a}-{_name(d)}-{_name(p)}")
    for a in ALGORITHMS for d, p in CUT
])
def test_values_match_lax_every_algorithm(algorithm, dtype, pref):
    _check_values(dtype, pref, algorithm)


@pytest.mark.parametrize("dtype", [np.int8, np.float16], ids=str)
def test_fft_float16_accumulation(dtype):
    x = np.ones((1, 2, 5, 5), dtype)
    w = np.ones((3, 2, 3, 3), dtype)
    want = lax.conv(x, w, (1, 1), "SAME", preferred_element_type=np.float16)
    got = jl.conv(x, w, (1, 1), "SAME", preferred_element_type=np.float16,
                  algorithm="fft")
    assert got.dtype == want.dtype
    assert_close(got, want, dtype=np.float16)


def test_fft_bfloat16_accumulation():
    # The transform runs in float32 (a bfloat16 accumulation type was once
    # taken for an integer one, and the result rounded to integers).
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((1, 2, 6, 6)) * 0.3).astype(jnp.bfloat16)
    w = (rng.standard_normal((3, 2, 3, 3)) * 0.3).astype(jnp.bfloat16)
    kw = dict(preferred_element_type=jnp.bfloat16)
    want = lax.conv(x, w, (1, 1), "SAME", **kw)
    got = jl.conv(x, w, (1, 1), "SAME", algorithm="fft", **kw)
    assert got.dtype == want.dtype
    assert_close(got, want, dtype=jnp.bfloat16)


def test_reported_int8_to_bfloat16():
    """An int8 x int8 conv accumulated into bfloat16, as jax.lax allows."""
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, (3, 3, 9, 10)).astype(np.int8)
    w = rng.integers(-3, 4, (2, 3, 4, 5)).astype(np.int8)
    want = lax.conv(x, w, (1, 1), "SAME", preferred_element_type=jnp.bfloat16)
    got = jl.conv(x, w, (1, 1), "SAME", preferred_element_type=jnp.bfloat16)
    assert got.dtype == want.dtype == jnp.bfloat16
    assert_close(got, want, dtype=jnp.bfloat16)


@pytest.mark.parametrize(
    "dtype,pref,match",
    [
        (np.float32, np.int32, r"`preferred_element_type` \(=int32\) is incompatible "
                               r"with the input type \(=float32\)"),
        (np.int8, np.uint16, r"`preferred_element_type` \(=uint16\) must have the "
                             r"same signedness as the input type \(=int8\)"),
        (np.int32, jnp.bfloat16, r"`preferred_element_type` \(=bfloat16\) must not "
                                 r"be narrower than the input type \(=int32\)"),
    ],
)
def test_rejection_messages(dtype, pref, match):
    x = np.ones((1, 2, 5), dtype)
    with pytest.raises(TypeError, match=match):
        jl.conv(x, x[:1], (1,), "VALID", preferred_element_type=pref)


def test_none_then_float64_is_a_new_plan():
    """``np.dtype("float64") == None`` is True in NumPy: a call asking for
    float64 after one asking for nothing must not reuse the cached program.
    """
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    xl, wl = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))
    calls = {
        "conv_general_dilated": lambda p: jl.conv_general_dilated(
            x, w, (1, 1), "SAME", preferred_element_type=p),
        "conv_transpose": lambda p: jl.conv_transpose(
            xl, wl, (2, 2), "SAME", preferred_element_type=p),
        "conv_general_dilated_patches": lambda p: jl.conv_general_dilated_patches(
            x, (2, 2), (1, 1), "SAME", preferred_element_type=p),
        "jaxconv.conv": lambda p: jaxconv.conv(xl, wl, preferred_element_type=p),
        "jaxconv.conv_transpose": lambda p: jaxconv.conv_transpose(
            xl, wl, stride=2, preferred_element_type=p),
    }
    for name, call in calls.items():
        assert call(None).dtype == np.float32, name
        assert call(np.float64).dtype == np.float64, name
