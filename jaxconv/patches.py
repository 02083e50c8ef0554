"""Patch extraction: ``unfold`` (im2col) and its exact adjoint ``fold`` (col2im).

Both are built from the tap slices of :mod:`jaxconv._taps`: ``unfold`` stacks
one strided slice per kernel tap, ``fold`` places each tap's column back with
``lax.pad`` (edge padding ``tap * dilation``, interior padding ``stride - 1``)
and sums them, which is exactly the transpose of the strided slice, so
``fold`` is the adjoint of ``unfold`` to the last bit (overlaps are summed).

Layouts:

* ``channels_first``: x ``(*batch, C, *spatial)`` <-> cols
  ``(*batch, C * prod(kernel), L)`` with ``L = prod(out_spatial)``; feature
  ``c * prod(kernel) + t`` (channel-major, tap-minor, taps in row-major kernel
  order), exactly ``torch.nn.functional.unfold``/``fold`` for 2-D, generalised
  to N-d.
* ``channels_last``: x ``(*batch, *spatial, C)`` <-> cols
  ``(*batch, *out_spatial, prod(kernel) * C)``; feature ``t * C + c``
  (tap-major, channel-minor), the order of a flattened ``(*kernel, C)`` HWIO
  kernel, so ``unfold(x, k) @ w.reshape(-1, C_out)`` is a VALID convolution.

Conventions: the number of spatial axes is the length
of ``kernel_size`` (or of ``output_size`` in ``fold``) when one is a sequence;
when both are ints, ``unfold`` assumes one batch axis (``x.ndim - 2`` spatial
axes, as PyTorch), channels-last ``fold`` takes ``cols.ndim - 2`` and
channels-first ``fold`` takes 2 (PyTorch's ``fold`` is 2-D only).  ``padding``
accepts every form of :func:`jaxconv.shapes.resolve_padding` (strings and
``(lo, hi)`` pairs too); padded cells are zeros.  An empty output raises
``ValueError``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from . import shapes
from ._args import _is_sequence, check_data_format, positive_tuple
from ._taps import tap_offsets, tap_slice, valid_out_size
from ._typing import Padding

__all__ = ["unfold", "fold"]


def extract_patches(
    xp: jax.Array,
    kernel: Sequence[int],
    out: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    *,
    first_axis: int | None = None,
    tap_axis: int | None = None,
) -> jax.Array:
    """Every window of an already padded input, taps stacked on a new axis.

    Args:
      xp: padded input whose spatial axes are ``first_axis ..
        first_axis + len(kernel) - 1``; by default ``(*batch, *spatial, C)``.
      kernel, out, stride, dilation: one int per spatial axis; ``out`` the
        number of windows per axis (see :func:`jaxconv._taps.valid_out_size`).
      first_axis: first spatial axis of ``xp`` (default ``xp.ndim - n - 1``,
        channels-last).
      tap_axis: where the new tap axis goes in the result (default right after
        the spatial axes, i.e. ``(*batch, *out, T, C)`` for channels-last).

    Returns:
      ``xp`` with spatial sizes ``out`` and a new axis of length
      ``T = prod(kernel)`` (taps in row-major kernel order) at ``tap_axis``.
    """
    n = len(kernel)
    first = xp.ndim - n - 1 if first_axis is None else first_axis
    axis = first + n if tap_axis is None else tap_axis
    taps = [
        tap_slice(xp, tap, out, stride, dilation, first) for tap in tap_offsets(kernel)
    ]
    return jnp.stack(taps, axis=axis)


def _geometry(spatial, kernel_size, stride, padding, dilation):
    """Kernel, stride, dilation, (lo, hi) pads and window counts per axis."""
    n = len(spatial)
    kernel = positive_tuple(kernel_size, n, "kernel_size")
    stride = positive_tuple(stride, n, "stride")
    dilation = positive_tuple(dilation, n, "dilation")
    pads = shapes.resolve_padding(
        padding, spatial, kernel, stride=stride, dilation=dilation
    )
    out = tuple(
        valid_out_size(size + lo + hi, k, s, d)
        for size, k, s, d, (lo, hi) in zip(spatial, kernel, stride, dilation, pads)
    )
    if not all(out):
        raise ValueError(
            f"`kernel_size` (={kernel_size!r}) with `dilation` (={dilation!r}) "
            f"does not fit the padded input (spatial {tuple(spatial)}, padding "
            f"{pads}): the output would be empty."
        )
    return kernel, stride, dilation, pads, out


def _pad_config(ndim, first, pairs):
    cfg = [(0, 0, 0)] * ndim
    for i, (lo, hi) in enumerate(pairs):
        cfg[first + i] = (lo, hi, 0)
    return cfg


def unfold(
    x: jax.Array,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: Padding = 0,
    dilation: int | Sequence[int] = 1,
    data_format: str = "channels_last",
) -> jax.Array:
    """Extract every sliding window (im2col), PyTorch's ``unfold`` in N-d.

    Args:
      x: ``(*batch, *spatial, C)`` (``channels_last``) or
        ``(*batch, C, *spatial)`` (``channels_first``).
      kernel_size: window size, one int per spatial axis (its length sets the
        number of spatial axes), or one int for ``x.ndim - 2`` spatial axes.
      stride: int or one int per axis.
      padding: an int, one int per axis, ``(lo, hi)`` pairs or a padding string
        (``"VALID"``, ``"SAME"``, ...); padded cells are zeros.
      dilation: int or one int per axis.
      data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
      ``(*batch, *out, prod(kernel) * C)`` (channels-last: tap-major,
      channel-minor) or ``(*batch, C * prod(kernel), prod(out))``
      (channels-first: channel-major, tap-minor, as ``torch``).

    Raises:
      ValueError: for a bad size, ``data_format`` or ``padding``, too few axes,
        or an empty output.

    Example:
      >>> import jax.numpy as jnp
      >>> unfold(jnp.ones((2, 3, 8, 8)), (3, 3), data_format="channels_first").shape
      (2, 27, 36)
      >>> unfold(jnp.ones((2, 8, 8, 3)), (3, 3), stride=2, padding=1).shape
      (2, 4, 4, 27)
    """
    x = jnp.asarray(x)
    data_format = check_data_format(data_format)
    n = len(kernel_size) if _is_sequence(kernel_size) else x.ndim - 2
    if n < 0 or x.ndim < n + 1:
        raise ValueError(
            f"x (shape {x.shape}) must have {n} spatial axes and a channel axis "
            f"for `kernel_size` (={kernel_size!r})."
        )
    last = data_format == "channels_last"
    first = x.ndim - n - 1 if last else x.ndim - n
    spatial = x.shape[first : first + n]
    kernel, stride, dilation, pads, out = _geometry(
        spatial, kernel_size, stride, padding, dilation
    )
    return _unfold(x, kernel, stride, dilation, pads, out, first, last)


@functools.partial(jax.jit, static_argnums=range(1, 8))
def _unfold(x, kernel, stride, dilation, pads, out, first, last):
    xp = lax.pad(x, jnp.zeros((), x.dtype), _pad_config(x.ndim, first, pads))
    taps = math.prod(kernel)
    if last:
        cols = extract_patches(xp, kernel, out, stride, dilation, first_axis=first)
        return cols.reshape(x.shape[:first] + out + (taps * x.shape[-1],))
    cols = extract_patches(
        xp, kernel, out, stride, dilation, first_axis=first, tap_axis=first
    )  # (*batch, C, T, *out)
    batch, channels = x.shape[: first - 1], x.shape[first - 1]
    return cols.reshape(batch + (channels * taps, math.prod(out)))


def fold(
    cols: jax.Array,
    output_size: int | Sequence[int],
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: Padding = 0,
    dilation: int | Sequence[int] = 1,
    data_format: str = "channels_last",
) -> jax.Array:
    """Sum sliding-window columns back into an array (col2im), adjoint of unfold.

    ``fold(unfold(x))`` multiplies each cell of ``x`` by the number of windows
    that cover it; ``fold`` equals ``jax.vjp`` of :func:`unfold` and, for
    channels-first, ``torch.nn.functional.fold``.

    Args:
      cols: ``(*batch, *out, prod(kernel) * C)`` (``channels_last``) or
        ``(*batch, C * prod(kernel), L)`` (``channels_first``), as produced by
        :func:`unfold` with the same arguments.
      output_size: spatial size of the result (before padding is removed), an
        int per spatial axis or one int.
      kernel_size: window size, an int per spatial axis or one int.
      stride: as in :func:`unfold`.
      padding: as in :func:`unfold`.
      dilation: as in :func:`unfold`.
      data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
      ``(*batch, *output_size, C)`` or ``(*batch, C, *output_size)``.

    Raises:
      ValueError: if ``cols`` does not have the shape :func:`unfold` would
        give, for bad sizes, or for an empty window count.

    Example:
      >>> import jax.numpy as jnp
      >>> fold(jnp.ones((2, 27, 36)), (8, 8), 3, data_format="channels_first").shape
      (2, 3, 8, 8)
      >>> fold(jnp.ones((2, 6, 6, 27)), (8, 8), (3, 3)).shape
      (2, 8, 8, 3)
    """
    cols = jnp.asarray(cols)
    data_format = check_data_format(data_format)
    last = data_format == "channels_last"
    if _is_sequence(output_size):
        n = len(output_size)
    elif _is_sequence(kernel_size):
        n = len(kernel_size)
    else:
        n = cols.ndim - 2 if last else 2
    size = positive_tuple(output_size, n, "output_size")
    kernel, stride, dilation, pads, out = _geometry(
        size, kernel_size, stride, padding, dilation
    )
    taps = math.prod(kernel)
    if last:
        ok = cols.ndim >= n + 1 and tuple(cols.shape[-n - 1 : -1]) == out
        ok = ok and cols.shape[-1] % taps == 0
        expected = f"(*batch, {', '.join(map(str, out))}, {taps} * C)"
    else:
        ok = cols.ndim >= 2 and cols.shape[-1] == math.prod(out)
        ok = ok and cols.shape[-2] % taps == 0
        expected = f"(*batch, C * {taps}, {math.prod(out)})"
    if not ok:
        raise ValueError(
            f"`cols` (shape {cols.shape}) must have shape {expected} for "
            f"`output_size` (={output_size!r}) and `kernel_size` "
            f"(={kernel_size!r}) with these stride/padding/dilation."
        )
    return _fold(cols, size, kernel, stride, dilation, pads, out, last)


@functools.partial(jax.jit, static_argnums=range(1, 8))
def _fold(cols, size, kernel, stride, dilation, pads, out, last):
    n, taps = len(size), math.prod(kernel)
    if last:
        batch, channels = cols.shape[: -n - 1], cols.shape[-1] // taps
        cols = cols.reshape(batch + out + (taps, channels))
        first, tap_axis = len(batch), len(batch) + n
    else:
        batch, channels = cols.shape[:-2], cols.shape[-2] // taps
        cols = cols.reshape(batch + (channels, taps) + out)
        first, tap_axis = len(batch) + 1, len(batch) + 1
    padded = [o + lo + hi for o, (lo, hi) in zip(size, pads)]
    zero = jnp.zeros((), cols.dtype)
    total = None
    for t, tap in enumerate(tap_offsets(kernel)):
        piece = lax.index_in_dim(cols, t, tap_axis, keepdims=False)
        # Transpose of tap_slice: put the strided positions back, zeros between.
        cfg = [(0, 0, 0)] * piece.ndim
        for i, (k, o, s, d, p) in enumerate(zip(tap, out, stride, dilation, padded)):
            cfg[first + i] = (k * d, p - (k * d + (o - 1) * s + 1), s - 1)
        piece = lax.pad(piece, zero, cfg)
        total = piece if total is None else total + piece
    crop = [(-lo, -hi) for lo, hi in pads]
    return lax.pad(total, zero, _pad_config(total.ndim, first, crop))
