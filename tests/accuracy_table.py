"""Measure each algorithm's rounding error next to jax.lax's own.

Run ``python tests/accuracy_table.py`` to print the markdown table kept in
``docs/guarantees.md``; ``tests/test_accuracy.py`` asserts on the same
measurements.

Error measure: ``max |y - y_ref| / max |y_ref|`` (normwise relative error),
with ``y_ref`` the convolution of the *same* (already rounded) inputs computed
in NumPy extended precision (``np.longdouble``, 64-bit mantissa on x86-64;
int64 for integers) by an independent shift-and-sum over kernel taps, so
float64 errors (lax's included) are measured too.  Inputs are standard normal
(integers: uniform int8).
"""

from __future__ import annotations

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import lax as jl

HI = lax.Precision.HIGHEST
NHWC = ("NHWC", "HWIO", "NHWC")
NWC = ("NWC", "WIO", "NWC")

# name: (lhs shape, rhs shape, strides, padding, feature groups, dn)
CASES = {
    "dense3x3": ((2, 16, 16, 32), (3, 3, 32, 32), (1, 1), "SAME", 1, NHWC),
    "point1x1": ((1, 8, 8, 256), (1, 1, 256, 32), (1, 1), "VALID", 1, NHWC),
    "dw7x7": ((1, 24, 24, 16), (7, 7, 1, 16), (1, 1), "SAME", 16, NHWC),
    "long1d_k257": ((1, 1024, 4), (257, 1, 4), (1,), "SAME", 4, NWC),
    "long1d_k1024": ((1, 4096, 4), (1024, 1, 4), (1,), "SAME", 4, NWC),
}

# label: (input dtype, preferred_element_type)
DTYPES = {
    "float64": (np.float64, None),
    "float32": (np.float32, None),
    "bfloat16": (jnp.bfloat16, None),
    "bfloat16->float32": (jnp.bfloat16, np.float32),
    "float16": (np.float16, None),
    "float16->float32": (np.float16, np.float32),
    "complex64": (np.complex64, None),
    "complex128": (np.complex128, None),
    "int8->int32": (np.int8, np.int32),
}


def algorithms() -> list[str]:
    """The algorithms to measure: the exact ones, and fft/winograd when present."""
    names = ["direct", "patches", "taps", "auto"]
    for extra in ("fft", "winograd"):
        if importlib.util.find_spec(f"jaxconv.algorithms.{extra}") is not None:
            names.append(extra)
    return names


def inputs(case: str, dtype, seed: int = 0):
    lhs_shape, rhs_shape, *_ = CASES[case]
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)

    def draw(shape):
        if np.issubdtype(dtype, np.integer):
            return rng.integers(-128, 128, size=shape).astype(dtype)
        if np.issubdtype(dtype, np.complexfloating):
            return (rng.standard_normal(shape)
                    + 1j * rng.standard_normal(shape)).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    return draw(lhs_shape), draw(rhs_shape)


def _conv_fn(case: str, algorithm: str, pref, precision=None):
    _, _, s, p, g, dn = CASES[case]
    kw = dict(dimension_numbers=dn, feature_group_count=g, precision=precision,
              preferred_element_type=pref)
    if algorithm == "lax":
        return jax.jit(lambda x, w: lax.conv_general_dilated(x, w, s, p, **kw))
    return jax.jit(lambda x, w: jl.conv_general_dilated(x, w, s, p, algorithm=algorithm,
                                                      **kw))


@functools.cache
def _reference(case: str, label: str, seed: int):
    dtype, _ = DTYPES[label]
    return reference(case, *inputs(case, dtype, seed))


def reference(case: str, x, w):
    """Extended-precision NumPy result on the same inputs (channels-last).

    ``sum over taps t of slice_t(x_padded) @ w[t]`` (grouped), accumulated in
    ``np.longdouble`` / ``np.clongdouble`` (``np.int64`` for integers).
    """
    lhs_shape, rhs_shape, strides, padding, groups, _ = CASES[case]
    x, w = np.asarray(x), np.asarray(w)
    if np.issubdtype(x.dtype, np.integer):
        wide = np.int64
    elif np.issubdtype(x.dtype, np.complexfloating):
        wide, x, w = np.clongdouble, x.astype(np.complex128), w.astype(np.complex128)
    else:
        wide, x, w = np.longdouble, x.astype(np.float64), w.astype(np.float64)
    x, w = x.astype(wide), w.astype(wide)
    kernel = rhs_shape[:-2]
    pads = lax.padtype_to_pads(lhs_shape[1:-1], kernel, strides, padding)
    assert all(s == 1 for s in strides)  # the cases are stride 1
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    out = [n - k + 1 for n, k in zip(xp.shape[1:-1], kernel)]
    i, o = rhs_shape[-2:]
    acc = np.zeros((x.shape[0], *out, groups, o // groups), wide)
    for tap in np.ndindex(*kernel):
        xs = xp[(slice(None), *(slice(t, t + n) for t, n in zip(tap, out)))]
        xs = xs.reshape(*xs.shape[:-1], groups, i)
        wt = w[tap].reshape(i, groups, o // groups)
        acc += np.einsum("...gi,igo->...go", xs, wt)
    return acc.reshape(x.shape[0], *out, o)


@functools.cache
def relative_error(case: str, label: str, algorithm: str, seed: int = 0) -> float:
    """Normwise relative error of ``algorithm`` (or ``"lax"``) on one case.

    Returns ``nan`` when the algorithm does not apply to the case (e.g.
    Winograd on a non-3x3 kernel).
    """
    dtype, pref = DTYPES[label]
    x, w = inputs(case, dtype, seed)
    try:
        y = np.asarray(_conv_fn(case, algorithm, pref)(x, w))
    except (ValueError, NotImplementedError, TypeError):
        return float("nan")
    ref = _reference(case, label, seed)
    if np.issubdtype(ref.dtype, np.integer):
        return float(np.max(np.abs(y.astype(np.int64) - ref)))
    y = y.astype(np.complex128).astype(np.clongdouble)
    return float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))


def table(cases=None, labels=None) -> str:
    """The markdown table: one row per (case, dtype), one column per algorithm."""
    algos = ["lax", *algorithms()]
    lines = ["| case | dtype | " + " | ".join(algos) + " |",
             "|---|---|" + "---|" * len(algos)]
    for case in cases or CASES:
        for label in labels or DTYPES:
            errs = [relative_error(case, label, a) for a in algos]
            cells = ["n/a" if np.isnan(e) else ("0" if e == 0 else f"{e:.1e}")
                     for e in errs]
            lines.append(f"| {case} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}")
    print(table())
