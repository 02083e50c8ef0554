"""Measure each algorithm's rounding error next to jax.lax's own.

Run ``python tests/accuracy_table.py`` to print the markdown table kept in
``docs/guarantees.md``; ``tests/test_accuracy.py`` asserts on the same
measurements.

Error measure: ``max |y - y_ref| / max |y_ref|`` (normwise relative error),
with ``y_ref`` the convolution of the *same* (already rounded) inputs computed
by ``jax.lax.conv_general_dilated`` in float64 / complex128 at
``Precision.HIGHEST``.  Inputs are standard normal (integers: uniform int8).
"""

from __future__ import annotations

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


def reference(case: str, x, w):
    """float64 / complex128 (int64 for integers) lax result on the same inputs."""
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        wide = np.int64
    elif np.issubdtype(np.asarray(x).dtype, np.complexfloating):
        wide = np.complex128
    else:
        wide = np.float64
    xr = np.asarray(x).astype(wide)
    wr = np.asarray(w).astype(wide)
    return np.asarray(_conv_fn(case, "lax", None, HI)(xr, wr))


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
    ref = reference(case, x, w)
    if np.issubdtype(ref.dtype, np.integer):
        return float(np.max(np.abs(y.astype(np.int64) - ref)))
    y = y.astype(np.complex128)
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
