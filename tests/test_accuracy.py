"""Dtypes and accuracy: every algorithm's error is within a small factor of lax's.

Errors are measured against a float64 / complex128 jax.lax result on the same
(already rounded) inputs (see ``tests/accuracy_table.py``, which also prints
the table in ``docs/guarantees.md``).  The bound for an exact algorithm is

    err(algorithm) <= FACTOR * max(err(lax), eps(output dtype))

Both lax and the exact algorithms sum the same products in a different order,
so both are bounded by ``gamma_K * sum |x||w|`` (K = reduction length) and
their errors differ by a small constant; the ``eps`` floor covers the case
where lax happens to be exact (e.g. its only error is the final rounding to a
16-bit output, which every algorithm shares).  FFT is not exact: its error is
bounded by ``eps * log2(L)`` times the total signal mass (asserted separately,
on float32 and float64 only).
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

FACTOR = 4.0
EXACT = ["direct", "patches", "taps", "auto"]
FLOAT_LABELS = [k for k in DTYPES if k != "int8->int32"]


def _out_eps(label):
    dtype, pref = DTYPES[label]
    out = np.dtype(pref or dtype)
    return float(jnp.finfo(out).eps)


def _check_exact(case, label, algorithm):
    err = relative_error(case, label, algorithm)
    err_lax = relative_error(case, label, "lax")
    bound = FACTOR * max(err_lax, _out_eps(label))
    assert err <= bound, (
        f"{algorithm} on {case}/{label}: error {err:.2e} > {FACTOR} x "
        f"max(lax error {err_lax:.2e}, eps {_out_eps(label):.1e})"
    )


@pytest.mark.parametrize("algorithm", EXACT)
@pytest.mark.parametrize("label", FLOAT_LABELS)
def test_dtype_accuracy_within_factor_of_lax(label, algorithm):
    _check_exact("dw7x7" if algorithm == "direct" else "dense3x3", label, algorithm)


@pytest.mark.parametrize("algorithm", EXACT)
@pytest.mark.parametrize("case", ["point1x1", "dw7x7", "long1d_k257"])
@pytest.mark.parametrize("label", ["float32", "bfloat16->float32"])
def test_case_accuracy_within_factor_of_lax(case, label, algorithm):
    if algorithm == "direct" and case == "point1x1":
        pytest.skip("direct loops per output; covered on the smaller cases")
    _check_exact(case, label, algorithm)


@pytest.mark.skipif("fft" not in algorithms(), reason="jaxconv.algorithms.fft absent")
@pytest.mark.parametrize("case", ["dense3x3", "dw7x7", "long1d_k257"])
@pytest.mark.parametrize("label", ["float32", "float64"])
def test_fft_error_bounded(case, label):
    """FFT: normwise error <= 8 eps log2(L) sqrt(K) with L the transform length
    and K the number of kernel taps summed per output (a standard bound)."""
    err = relative_error(case, label, "fft")
    lhs_shape, rhs_shape, *_ = CASES[case]
    length = int(np.prod(lhs_shape[1:-1]))
    taps = int(np.prod(rhs_shape[:-2])) * rhs_shape[-2]
    bound = 8 * _out_eps(label) * np.log2(length) * np.sqrt(taps) * 4
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
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)

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


def test_reference_is_float64():
    x, w = inputs("dw7x7", np.float32)
    assert reference("dw7x7", x, w).dtype == np.float64
