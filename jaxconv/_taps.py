"""Kernel taps as strided slices: the one primitive under conv, patches and pooling.

A window of shape ``kernel`` with dilation ``d`` slid with stride ``s`` over a
(padded) axis of length ``n`` touches, for tap ``k``, the input positions
``k*d, k*d + s, ..., k*d + (out-1)*s``: one strided slice per tap.  Every
algorithm in the library (patch extraction, shift-and-accumulate, pooling,
unfold) is a different way of combining these slices.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import jax
from jax import lax


def valid_out_size(n: int, k: int, stride: int, dilation: int) -> int:
    """Output length of a VALID window slide (0 when the window does not fit)."""
    span = dilation * (k - 1) + 1
    return max(0, (n - span) // stride + 1)


def tap_offsets(kernel: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every tap index of a kernel, in row-major order (as ``np.ndindex``)."""
    return itertools.product(*(range(k) for k in kernel))


def tap_slice(
    x: jax.Array,
    tap: Sequence[int],
    out: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    first_axis: int = 1,
) -> jax.Array:
    """The input values that tap ``tap`` multiplies, for every output position.

    Args:
      x: array whose axes ``first_axis .. first_axis + len(tap) - 1`` are the
        (already padded) spatial axes.
      tap: the tap index, one int per spatial axis.
      out: output spatial sizes.
      stride, dilation: one int per spatial axis.
      first_axis: position of the first spatial axis in ``x``.

    Returns:
      ``x`` with each spatial axis ``i`` replaced by the ``out[i]`` positions
      ``tap[i]*dilation[i] + j*stride[i]``.
    """
    start = [0] * x.ndim
    limit = list(x.shape)
    strides = [1] * x.ndim
    for i, (k, o, s, d) in enumerate(zip(tap, out, stride, dilation)):
        ax = first_axis + i
        start[ax] = k * d
        limit[ax] = k * d + (o - 1) * s + 1 if o > 0 else k * d
        strides[ax] = s
    return lax.slice(x, start, limit, strides)
