"""Dtypes and accuracy: every algorithm's error is within a small factor of lax's.

Errors are normwise relative errors against an extended-precision NumPy
result on the same (already rounded) inputs (see ``tests/accuracy_table.py``,
which also prints the table in ``docs/guarantees.md``).  The bound for an
exact algorithm is

    err(algorithm) <= FACTOR * max(err(lax), sqrt(K) * u_acc + u_out)

lax and the exact algorithms sum the same K products (K = kernel taps x input
channels per group) in different orders.  Any order's error is, with high
probability, within ``sqrt(K) * u_acc`` of the sum's magnitude (probabilistic
rounding error analysis, Higham & Mary, SIAM J. Sci. Comput. 2019), plus the
final rounding ``u_out`` to the output dtype; so two orders' errors agree up to
a small factor, and the floor covers the case where lax's own error happens to
be tiny.  ``u`` is the unit roundoff (eps / 2) of the accumulation dtype
(float32 for 16-bit inputs) and of the output dtype.  FFT is not exact; its
bound grows with ``log2`` of the transform length (asserted separately).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from accuracy_table import CASES, DTYPES, algorithms, inputs, reference, relative_error
from conftest import assert_close
from jax import lax

from jaxconv import lax as jl

FACTOR = 2.0
EXACT = ["direct", "patches", "taps", "auto"]
FLOAT_LABELS = [k for k in DTYPES if k != "int8->int32"]


def _unit_roundoff(dtype) -> float:
    return float(jnp.finfo(np.dtype(dtype)).eps) / 2


def _roundoffs(label):
    """(u of the accumulation dtype, u of the output dtype)."""
    dtype, pref = DTYPES[label]
    out = np.dtype(pref or dtype)
    acc = np.float32 if np.dtype(dtype).itemsize == 2 else out
    return _unit_roundoff(acc), _unit_roundoff(out)


def _reduction_length(case):
    _, rhs_shape, *_ = CASES[case]
    return int(np.prod(rhs_shape[:-1]))  # taps x input channels per group


EXTENDED = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps


def _check_exact(case, label, algorithm):
    if label in ("float64", "complex128") and not EXTENDED:
        pytest.skip("np.longdouble is float64 here: no reference finer than float64")
    err = relative_error(case, label, algorithm)
    err_lax = relative_error(case, label, "lax")
    u_acc, u_out = _roundoffs(label)
    floor = np.sqrt(_reduction_length(case)) * u_acc + u_out
    bound = FACTOR * max(err_lax, floor)
    assert err <= bound, (
        f"{algorithm} on {case}/{label}: error {err:.2e} > {FACTOR} x "
        f"max(lax error {err_lax:.2e}, sqrt(K) u_acc + u_out = {floor:.1e})"
    )


@pytest.mark.parametrize("algorithm", EXACT)
@pytest.mark.parametrize("label", FLOAT_LABELS)
def test_dtype_accuracy_within_factor_of_lax(label, algorithm):
    _check_exact("dw7x7" if algorithm == "direct" else "dense3x3", label, algorithm)


@pytest.mark.parametrize("algorithm", EXACT)
@pytest.mark.parametrize("case", ["point1x1", "dw7x7", "long1d_k257", "long1d_k1024"])
@pytest.mark.parametrize("label", ["float32", "bfloat16->float32"])
def test_case_accuracy_within_factor_of_lax(case, label, algorithm):
    if algorithm == "direct" and case == "point1x1":
        pytest.skip("direct loops per output; covered on the smaller cases")
    _check_exact(case, label, algorithm)


@pytest.mark.skipif("fft" not in algorithms(), reason="jaxconv.algorithms.fft absent")
@pytest.mark.parametrize("case", ["dense3x3", "dw7x7", "long1d_k257", "long1d_k1024"])
@pytest.mark.parametrize("label", ["float32", "float64", "complex64"])
def test_fft_error_bounded(case, label):
    """FFT: error <= 4 u_acc log2(L) sqrt(K) + u_out (L: transform length).

    The transforms add ``O(u log2 L)`` relative error per element; the
    pointwise products and the inverse transform then sum K such terms.
    """
    if label == "float64" and not EXTENDED:
        pytest.skip("np.longdouble is float64 here: no reference finer than float64")
    err = relative_error(case, label, "fft")
    lhs_shape, *_ = CASES[case]
    length = int(np.prod(lhs_shape[1:-1]))
    u_acc, u_out = _roundoffs(label)
    bound = 4 * u_acc * np.log2(length) * np.sqrt(_reduction_length(case)) + u_out
    assert err <= bound, (err, bound)


@pytest.mark.parametrize("algorithm", EXACT)
def test_int8_to_int32_exact(algorithm):
    case = "dw7x7" if algorithm == "direct" else "dense3x3"
    assert relative_error(case, "int8->int32", algorithm) == 0


def test_int8_to_int32_exact_at_extremes():
    """-128 * -128 summed over a 3x3x64 window: 1179648, beyond int16 and fp16."""
    x = np.full((1, 5, 5, 64), -128, np.int8)
    w = np.full((3, 3, 64, 2), -128, np.int8)
    for algorithm in ["patches", "taps", "auto"]:
        y = jl.conv_general_dilated(x, w, (1, 1), "VALID",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    preferred_element_type=jnp.int32,
                                    algorithm=algorithm)
        assert y.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(y), 9 * 64 * 128 * 128)


@pytest.mark.parametrize("label,out", [
    ("bfloat16", jnp.bfloat16), ("bfloat16->float32", np.float32),
    ("float16", np.float16), ("float16->float32", np.float32),
    ("complex64", np.complex64), ("int8->int32", np.int32),
])
def test_output_dtype_matches_lax(label, out):
    dtype, pref = DTYPES[label]
    x, w = inputs("dw7x7", dtype)
    kw = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=16,
              preferred_element_type=pref)
    ours = jax.eval_shape(lambda a, b: jl.conv_general_dilated(a, b, (1, 1), "SAME",
                                                               **kw), x, w)
    theirs = jax.eval_shape(lambda a, b: lax.conv_general_dilated(a, b, (1, 1), "SAME",
                                                                  **kw), x, w)
    assert ours.dtype == theirs.dtype == np.dtype(out)


@pytest.mark.parametrize("algorithm", EXACT)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_gradients_match_lax(dtype, algorithm):
    """jax.grad of a real loss of a complex conv (JAX's conjugate convention)."""
    rng = np.random.default_rng(0)
    shape_x, shape_w = (2, 3, 7, 6), (4, 3, 3, 2)

    def draw(shape):
        z = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        return z.astype(dtype)

    x, w = draw(shape_x), draw(shape_w)
    t = draw((2, 4, 4, 5))  # a complex "target" makes the loss non-trivial

    def loss(mod, **extra):
        def f(x, w):
            y = mod.conv_general_dilated(x, w, (2, 1), [(1, 1), (0, 0)],
                                         precision=lax.Precision.HIGHEST, **extra)
            return jnp.sum(jnp.abs(y - t) ** 2) + jnp.real(jnp.sum(y * jnp.conj(t)))
        return f

    gx, gw = jax.grad(loss(lax), (0, 1))(x, w)
    ax, aw = jax.grad(loss(jl, algorithm=algorithm), (0, 1))(x, w)
    assert ax.dtype == gx.dtype == np.dtype(dtype)
    scale = float(np.max(np.abs(gx))) + float(np.max(np.abs(gw)))
    assert_close(ax, gx, scale=scale)
    assert_close(aw, gw, scale=scale)


@pytest.mark.skipif(not EXTENDED, reason="np.longdouble is float64 on this platform")
def test_reference_is_extended_precision():
    x, w = inputs("dw7x7", np.float64)
    ref = reference("dw7x7", x, w)
    assert np.finfo(ref.dtype).eps < np.finfo(np.float64).eps
    expected = lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=16,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=lax.Precision.HIGHEST)
    assert_close(ref.astype(np.float64), expected)
