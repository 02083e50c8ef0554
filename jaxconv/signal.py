"""N-d ``correlate`` and ``convolve`` with SciPy's semantics, on the conv core.

``correlate(in1, in2, mode)`` equals ``scipy.signal.correlate`` and
``convolve(in1, in2, mode)`` equals ``scipy.signal.convolve``: both arguments
are N-d arrays of the same rank (no batch or channel axes; ``jax.vmap`` adds
those), and the result is

- ``"full"``: every partial overlap, shape ``n + k - 1`` per axis;
- ``"same"``: the shape of ``in1``, the centred part of ``"full"`` starting at
  ``(k - 1) // 2`` on each axis (``scipy.signal.correlate``'s placement; note
  ``scipy.signal.correlate2d`` starts at ``k // 2``, which differs for even
  ``k``; ``convolve2d`` agrees with this placement);
- ``"valid"``: the complete overlaps, ``|n - k| + 1`` per axis.  One input must
  be at least as large as the other in every axis; when ``in2`` is the larger
  one the roles swap, as in SciPy (the result is still the matching part of
  ``"full"``, so ``correlate(a, v, "valid")`` is the conjugate reverse of
  ``correlate(v, a, "valid")``).

``correlate`` conjugates ``in2``: ``correlate(a, v) == convolve(a, conj(flip(v)))``.

Conventions where SciPy says nothing:

- ``boundary`` (from ``scipy.signal.correlate2d``/``convolve2d``) sets how
  ``in1`` is extended past its edges, on every axis: ``"fill"``/``"pad"``
  (``fillvalue``), ``"wrap"``/``"circular"`` (periodic), ``"symm"``/
  ``"symmetric"`` (mirror repeating the edge, period ``2n``).  Extensions wider
  than the axis repeat periodically, as SciPy's 2-D code and ``numpy.pad`` do.
  In ``"valid"`` mode no extension is needed and ``boundary`` has no effect.
- dtype: JAX's promotion, ``jnp.result_type(in1, in2)`` (SciPy uses NumPy's:
  int32 with float32 gives float32 here, float64 there).  Integer results are
  exact with ``"direct"``; ``"fft"`` rounds (see ``jaxconv.algorithms.fft``).
  ``fillvalue`` is cast to that dtype (a complex fill for a real result is a
  ``ValueError``, as in SciPy).
- ``method="direct"`` runs an exact shift-and-accumulate formulation of the
  conv core (``algorithm="taps"``), ``"fft"`` the FFT algorithm.
  ``method="auto"`` picks ``"fft"`` for float/complex inputs whose direct
  sum is large: more than ``AUTO_FFT_TAPS`` (1024) kernel taps *and* more
  than 1024 outputs; otherwise the conv core's ``"auto"``, which runs
  float32/float64 kernels of 512+ taps as FFT products too, but only when
  every value is finite.  FFT is not exact: its rounding is relative to the
  largest outputs, and with ``method="fft"`` a NaN or Inf anywhere spreads
  to every output; pass ``method="direct"`` for exact, window-local sums
  (SciPy's ``"auto"`` picks FFT far more often, from a timing model).
- In ``"full"`` mode with zero fill, the smaller array serves as the kernel
  (the sums are the same, the direct cost is ``out * min(n, k)``).
- Empty inputs raise ``ValueError`` (SciPy's ``direct`` method does too).
- 0-d inputs return ``in1 * conj(in2)`` (correlate) or ``in1 * in2``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._primitive import conv_primitive
from .padding import pad

__all__ = ["AUTO_FFT_TAPS", "convolve", "correlate"]

AUTO_FFT_TAPS = 1024

_MODES = ("full", "same", "valid")
_BOUNDARIES = {
    "fill": "fill", "pad": "fill",
    "wrap": "wrap", "circular": "wrap",
    "symm": "symm", "symmetric": "symm",
}  # fmt: skip
_METHODS = ("auto", "direct", "fft")


def _choice(value: Any, name: str, options) -> str:
    if isinstance(value, str) and value.lower() in options:
        return value.lower()
    listed = ", ".join(repr(o) for o in options)
    raise ValueError(f"`{name}` (={value!r}) must be one of {listed}.")


def _check_fillvalue(fillvalue: Any, dtype) -> Any:
    size = fillvalue.size if hasattr(fillvalue, "size") else np.size(fillvalue)
    if size != 1:
        raise ValueError(
            f"`fillvalue` (={fillvalue!r}) must be a scalar or an array with one "
            "element."
        )
    if jnp.iscomplexobj(fillvalue) and not jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(
            f"`fillvalue` (={fillvalue!r}) is complex but the result dtype is "
            f"{np.dtype(dtype)}."
        )
    if isinstance(fillvalue, (int, float, complex, np.generic)):
        return fillvalue
    if isinstance(fillvalue, np.ndarray):
        return fillvalue.reshape(()).item()
    return jnp.reshape(fillvalue, ())  # a jax array, possibly traced


def _is_zero(fillvalue: Any) -> bool:
    return isinstance(fillvalue, (int, float, complex, np.generic)) and fillvalue == 0


def _extend(x: jax.Array, pairs, boundary: str, fillvalue: Any) -> jax.Array:
    """Extend ``x`` by ``(lo, hi)`` cells per axis with the boundary rule."""
    if all(p == (0, 0) for p in pairs):
        return x
    if boundary == "fill":
        return pad(x, pairs, mode="constant", value=fillvalue)
    if boundary == "symm":
        return pad(x, pairs, mode="symmetric")
    if all(max(p) <= n for p, n in zip(pairs, x.shape)):
        return pad(x, pairs, mode="circular")
    # jaxconv.pad follows PyTorch and refuses wraps wider than the axis;
    # SciPy wraps again (periodic extension), as numpy.pad does.
    return jnp.pad(x, pairs, mode="wrap")


def _valid_correlation(x: jax.Array, k: jax.Array, method: str) -> jax.Array:
    """``out[p] = sum_t x[p + t] * k[t]`` over complete overlaps (no conj)."""
    nd = x.ndim
    out = conv_primitive(
        x.reshape(1, *x.shape, 1),
        k.reshape(*k.shape, 1, 1),
        stride=(1,) * nd,
        padding=((0, 0),) * nd,
        lhs_dilation=(1,) * nd,
        rhs_dilation=(1,) * nd,
        precision=lax.Precision.HIGHEST,
        algorithm=method,
    )
    return out.reshape(out.shape[1:-1])


def _pick_method(method: str, dtype, taps: int, outputs: int) -> str:
    if method == "fft":
        return "fft"
    if (
        method == "auto"
        and jnp.issubdtype(dtype, jnp.inexact)
        and taps > AUTO_FFT_TAPS
        and outputs > AUTO_FFT_TAPS
    ):
        return "fft"
    # "direct": an exact algorithm of the conv core ("taps": never its guarded
    # FFT product); "auto": whatever the conv core's "auto" picks.
    return "taps" if method == "direct" else "auto"


def _flip(x: jax.Array) -> jax.Array:
    return lax.rev(x, tuple(range(x.ndim)))


def _conj(x: jax.Array) -> jax.Array:
    return jnp.conj(x) if jnp.iscomplexobj(x) else x


def _correlate_or_convolve(in1, in2, mode, boundary, fillvalue, method, *, conv):
    mode = _choice(mode, "mode", _MODES)
    boundary = _BOUNDARIES[_choice(boundary, "boundary", tuple(_BOUNDARIES))]
    method = _choice(method, "method", _METHODS)
    in1 = jnp.asarray(in1)
    in2 = jnp.asarray(in2)
    if in1.ndim != in2.ndim:
        raise ValueError(
            f"`in1` (shape {in1.shape}) and `in2` (shape {in2.shape}) must have "
            "the same number of dimensions."
        )
    dtype = jnp.result_type(in1, in2)
    in1, in2 = in1.astype(dtype), in2.astype(dtype)
    fillvalue = _check_fillvalue(fillvalue, dtype)
    if in1.ndim == 0:
        return in1 * (in2 if conv else _conj(in2))
    if in1.size == 0 or in2.size == 0:
        raise ValueError(
            f"`in1` (shape {in1.shape}) and `in2` (shape {in2.shape}) must not be "
            "empty."
        )
    n, k = in1.shape, in2.shape
    # The kernel that turns the op into a plain correlation of ``in1``.
    kern = _flip(in2) if conv else _conj(in2)

    if mode == "valid":
        ok1 = all(a >= b for a, b in zip(n, k))
        ok2 = all(b >= a for a, b in zip(n, k))
        if not (ok1 or ok2):
            raise ValueError(
                f"`mode` (='valid') needs one input at least as large as the other "
                f"in every dimension, got shapes {n} and {k}."
            )
        if ok1:
            m = _pick_method(method, dtype, in2.size, in1.size - in2.size + 1)
            return _valid_correlation(in1, kern, m)
        # SciPy swaps the inputs: in2 slides under in1.
        m = _pick_method(method, dtype, in1.size, in2.size - in1.size + 1)
        if conv:
            return _valid_correlation(in2, _flip(in1), m)
        return _flip(_valid_correlation(_conj(in2), in1, m))

    if mode == "full":
        pairs = [(b - 1, b - 1) for b in k]
        outputs = int(np.prod([a + b - 1 for a, b in zip(n, k)]))
        if boundary == "fill" and _is_zero(fillvalue) and in2.size > in1.size:
            # Same sums with in1 as the (smaller) kernel.
            m = _pick_method(method, dtype, in1.size, outputs)
            big = pad(in2, [(a - 1, a - 1) for a in n])
            if conv:
                return _valid_correlation(big, _flip(in1), m)
            return _flip(_conj(_valid_correlation(big, _conj(in1), m)))
    else:  # "same": start (k - 1) // 2 in the full result
        pairs = [(b // 2, (b - 1) // 2) for b in k]
        outputs = in1.size
    m = _pick_method(method, dtype, in2.size, outputs)
    return _valid_correlation(_extend(in1, pairs, boundary, fillvalue), kern, m)


_DOC = """{summary}

    Equals ``scipy.signal.{name}(in1, in2, mode)`` for every ``mode``
    (see the module docstring for the placement of ``"same"``, the input swap
    of ``"valid"`` and the N-d ``boundary`` rules).  Works under ``jit``
    (``mode``, ``boundary`` and ``method`` are static), ``vmap`` and ``grad``.

    Args:
      in1: an N-d array ``(*n)``.
      in2: an N-d array ``(*k)`` of the same rank.
      mode: ``"full"`` (shape ``n + k - 1``), ``"same"`` (shape ``n``) or
        ``"valid"`` (shape ``|n - k| + 1``).
      boundary: how ``in1`` is extended past its edges: ``"fill"`` (with
        ``fillvalue``), ``"wrap"`` or ``"symm"`` (SciPy's 2-D names, on every
        axis).  No effect in ``"valid"`` mode.
      fillvalue: the scalar for ``boundary="fill"`` (may be a traced value).
      method: ``"direct"`` (exact sums), ``"fft"`` or ``"auto"`` (``"fft"``
        only for large float problems; see the module docstring).

    Returns:
      The result, dtype ``jnp.result_type(in1, in2)``.

    Raises:
      ValueError: for different ranks, empty inputs, an unknown ``mode``,
        ``boundary`` or ``method``, a non-scalar or wrongly complex
        ``fillvalue``, or ``"valid"`` inputs where neither is at least as large
        as the other in every axis.

    Example:
      >>> import jax.numpy as jnp
      >>> a, v = jnp.arange(10.0).reshape(2, 5), jnp.ones((2, 3))
      >>> {name}(a, v).shape, {name}(a, v, "same").shape
      ((3, 7), (2, 5))
      >>> {name}(a, v, "valid", method="fft").shape
      (1, 3)
    """


def correlate(
    in1: jax.Array,
    in2: jax.Array,
    mode: str = "full",
    *,
    boundary: str = "fill",
    fillvalue: Any = 0,
    method: str = "auto",
) -> jax.Array:
    return _correlate_or_convolve(
        in1, in2, mode, boundary, fillvalue, method, conv=False
    )


def convolve(
    in1: jax.Array,
    in2: jax.Array,
    mode: str = "full",
    *,
    boundary: str = "fill",
    fillvalue: Any = 0,
    method: str = "auto",
) -> jax.Array:
    return _correlate_or_convolve(
        in1, in2, mode, boundary, fillvalue, method, conv=True
    )


correlate.__doc__ = _DOC.format(
    name="correlate",
    summary="Cross-correlate two N-d arrays: "
    "``out[j] = sum_i in1[i + j - (k - 1)] * conj(in2[i])`` (full mode).",
)
convolve.__doc__ = _DOC.format(
    name="convolve",
    summary="Convolve two N-d arrays: "
    "``out[j] = sum_i in1[j - i] * in2[i]`` (full mode).",
)
