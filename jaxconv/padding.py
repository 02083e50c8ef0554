"""Boundary modes: how an array is extended past its edges before a window slides.

``pad`` extends chosen axes with one of five modes (NumPy's names in brackets):

- ``"zeros"`` / ``"constant"`` (``constant``): a constant, ``value`` (default 0);
- ``"reflect"`` (``reflect``): mirror without repeating the edge, ``d c b | a b c d``;
- ``"replicate"`` (``edge``): repeat the edge cell, ``a a a | a b c d``;
- ``"circular"`` (``wrap``): wrap around, ``b c d | a b c d``;
- ``"symmetric"`` (``symmetric``): mirror repeating the edge, ``c b a | a b c d``.

NumPy's names ``"edge"`` and ``"wrap"`` are accepted as aliases.  Axes are
padded one after another in increasing order, as ``np.pad`` does, so corners
of a multi-axis pad equal ``np.pad``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._args import _is_sequence, as_int, pad_pairs

__all__ = ["PADDING_MODES", "normalize_padding_mode", "pad"]

PADDING_MODES = ("zeros", "constant", "reflect", "replicate", "circular", "symmetric")

_CANONICAL = {
    "zeros": "constant",
    "constant": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "edge": "replicate",
    "circular": "circular",
    "wrap": "circular",
    "symmetric": "symmetric",
}
_NUMPY_NAME = {
    "constant": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
}


def normalize_padding_mode(
    mode: str | Sequence[str], n: int, name: str = "padding_mode"
) -> tuple[str, ...]:
    """One canonical mode name per axis.

    Canonical names are ``"constant"`` (for ``"zeros"`` and ``"constant"``),
    ``"reflect"``, ``"replicate"``, ``"circular"`` and ``"symmetric"``.

    Args:
      mode: a mode name (case-insensitive), or a sequence of ``n`` names.
      n: the number of padded axes.
      name: the argument's name, for error messages.

    Returns:
      A tuple of ``n`` canonical mode names.

    Raises:
      ValueError: for an unknown name or a sequence of the wrong length.
      TypeError: for a mode that is neither a string nor a sequence of strings.

    Example:
      >>> normalize_padding_mode("zeros", 2)
      ('constant', 'constant')
      >>> normalize_padding_mode(["Reflect", "wrap"], 2)
      ('reflect', 'circular')
    """
    if isinstance(mode, str):
        modes = (mode,) * n
    elif _is_sequence(mode):
        modes = tuple(mode)
        if len(modes) != n:
            raise ValueError(
                f"`{name}` (={mode!r}) must be a mode name or a sequence of {n} "
                f"mode names (one per padded axis), got {len(modes)}."
            )
    else:
        raise TypeError(
            f"`{name}` (={mode!r}) must be a string or a sequence of strings."
        )
    out = []
    for m in modes:
        key = m.lower() if isinstance(m, str) else m
        if key not in _CANONICAL:
            options = ", ".join(f'"{o}"' for o in PADDING_MODES)
            raise ValueError(
                f"`{name}` (={mode!r}) must be one of {options} (or a sequence of "
                f"them, one per axis), got {m!r}."
            )
        out.append(_CANONICAL[key])
    return tuple(out)


def _normalize_axes(axes: Any, ndim: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    raw = tuple(axes) if _is_sequence(axes) else (axes,)
    out = []
    for a in raw:
        a = as_int(a, "axes")
        if not -ndim <= a < ndim:
            raise ValueError(
                f"`axes` (={axes!r}) must index the axes of a rank-{ndim} array, "
                f"got {a}."
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`axes` (={axes!r}) must not repeat an axis.")
    return tuple(out)


def _check_width(mode: str, lo: int, hi: int, size: int, axis: int) -> None:
    """PyTorch's limits: reflect < size, circular <= size, and a non-empty axis."""
    widest = max(lo, hi)
    if mode == "reflect" and widest >= size:
        raise ValueError(
            f"`padding` (=({lo}, {hi})) on axis {axis} must be smaller than the "
            f"axis size (={size}) on each side for mode 'reflect'; use "
            f"'symmetric' or 'replicate', or pad less."
        )
    if mode == "circular" and widest > size:
        raise ValueError(
            f"`padding` (=({lo}, {hi})) on axis {axis} must be at most the axis "
            f"size (={size}) on each side for mode 'circular' (it would wrap "
            f"around more than once)."
        )
    if mode != "constant" and size == 0:
        raise ValueError(
            f"`padding` (=({lo}, {hi})) on axis {axis}: mode {mode!r} cannot extend "
            f"an empty axis (size 0)."
        )


def _pad_constant(x: jax.Array, widths: list[tuple[int, int]], value: Any):
    config = [(lo, hi, 0) for lo, hi in widths]
    if isinstance(value, (int, float, complex, np.generic)):
        return lax.pad(x, jnp.asarray(value, x.dtype), config)
    # A traced fill value: lax.pad's transpose fails when only the fill value
    # is differentiated (jax 0.10), so add the fill as a separate term.
    zero = jnp.zeros((), x.dtype)
    border = lax.pad(jnp.zeros_like(x), jnp.ones((), x.dtype), config)
    return lax.pad(x, zero, config) + border * jnp.asarray(value).astype(x.dtype)


def pad(
    x: jax.Array,
    pad_width: Any,
    *,
    mode: str | Sequence[str] = "zeros",
    axes: int | Sequence[int] | None = None,
    value: Any = 0,
) -> jax.Array:
    """Pad (or crop) chosen axes of ``x`` with a boundary mode per axis.

    Works under ``jit``, ``vmap`` and ``grad`` (all widths are static ints).

    Args:
      x: an array of any shape.
      pad_width: widths for the padded axes: an int (both sides of every
        axis), or one entry per axis, each an int (both sides) or a
        ``(lo, hi)`` pair.  Negative pair entries crop that side, as in
        ``jax.lax.pad``; cropping happens before padding.
      mode: ``"zeros"``/``"constant"``, ``"reflect"``, ``"replicate"``,
        ``"circular"`` or ``"symmetric"`` (NumPy's ``constant``, ``reflect``,
        ``edge``, ``wrap``, ``symmetric``), or a sequence of them, one per
        padded axis.
      axes: the axes that ``pad_width`` and ``mode`` refer to; ``None`` means
        every axis of ``x``, in order.
      value: the fill value of ``"zeros"``/``"constant"`` cells.

    Returns:
      ``x`` with each padded axis ``i`` of size ``n_i + lo_i + hi_i``.

    Raises:
      ValueError: for a wrong-length ``pad_width``, ``mode`` or ``axes``, an
        unknown mode, a ``"reflect"`` width >= the axis size or a
        ``"circular"`` width > the axis size (both as in PyTorch), or cropping
        more than an axis holds.
      TypeError: for a non-integer width.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.arange(4.0)
      >>> pad(x, [(2, 1)], mode="reflect").tolist()
      [2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0]
      >>> pad(jnp.ones((2, 5, 5, 3)), [(1, 1), (2, 0)], axes=(1, 2)).shape
      (2, 7, 7, 3)
      >>> pad(x, [(-1, 2)], mode="circular").tolist()
      [1.0, 2.0, 3.0, 1.0, 2.0]
    """
    x = jnp.asarray(x)
    ax = _normalize_axes(axes, x.ndim)
    pairs = pad_pairs(pad_width, len(ax), "pad_width")
    modes = normalize_padding_mode(mode, len(ax), "mode")
    for axis, (lo, hi), m in sorted(zip(ax, pairs, modes)):
        size = x.shape[axis]
        crop_lo, crop_hi = max(-lo, 0), max(-hi, 0)
        if crop_lo + crop_hi > size:
            raise ValueError(
                f"`pad_width` (={pad_width!r}) crops {crop_lo + crop_hi} cells from "
                f"axis {axis}, which has only {size}."
            )
        if crop_lo or crop_hi:
            x = lax.slice_in_dim(x, crop_lo, size - crop_hi, axis=axis)
            size -= crop_lo + crop_hi
        lo, hi = max(lo, 0), max(hi, 0)
        if lo == hi == 0:
            continue
        _check_width(m, lo, hi, size, axis)
        widths = [(0, 0)] * x.ndim
        widths[axis] = (lo, hi)
        if m == "constant":
            x = _pad_constant(x, widths, value)
        else:
            x = jnp.pad(x, widths, mode=_NUMPY_NAME[m])
    return x
