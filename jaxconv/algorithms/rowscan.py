"""The fast kernel tangent of depthwise and grouped convolutions.

Autodiff of ``out = sum_t slice_t(x) * w[t]`` gives, for the kernel
gradient, ``g[t] = sum over all positions of slice_t(x) * ct``: one XLA
reduction per tap (and input channel) over the leading axes with the
slicing fused in, which runs an order of magnitude slower than the
forward on CPU (BENCHMARKS.md).  The
kernel tangent is therefore written as a ``lax.scan`` over output rows
(:func:`rowscan`) with each tap's weights pre-broadcast to a full row: its
transpose is a scan that accumulates ``slice_t(x_row) * ct_row``
elementwise into a carry of one row per tap, then one small reduction over
that row.  XLA folds a pairwise halving tree of adds back into the slow
reduce, so a scan it is.  The rules that use it (``depthwise.py``,
``grouped.py``) are ``jax.custom_jvp``, so forward mode, reverse mode and
every higher order keep working: the tangent is linear and JAX transposes
it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import batch_mesh_axes, flat_taps, out_spatial


def column_bytes(out, taps, in_per_group, out_channels, itemsize):
    """One example's accumulator bytes per output column of a scan step:
    one ``(*out[2:], O)`` column per tap and input channel."""
    return taps * in_per_group * math.prod(out[2:]) * out_channels * itemsize


def row_width(out, taps, in_per_group, out_channels, itemsize, budget):
    """The output columns one scan step computes: the widest divisor of
    ``out[1]`` whose ``T * I`` accumulators (one example) fit ``budget`` bytes.

    The transpose accumulates one ``(width, *out[2:], O)`` row per tap and
    input channel; past the cache they spill on every step.  A divisor keeps
    the stacked steps a reshape of the output; 1 when even one column does
    not fit.
    """
    cols = out[1]
    per_col = column_bytes(out, taps, in_per_group, out_channels, itemsize)
    fits = (c for c in range(cols, 0, -1) if cols % c == 0 and c * per_col <= budget)
    return next(fits, 1)


def rowscan(x, w, stride, dilation, groups, acc_dtype, width=None):
    """The grouped conv as a scan over output rows (linear in ``w``).

    Each step computes one output row of one example, or ``width`` columns
    of it (a divisor of ``out[1]``, :func:`row_width`; ``None``: the whole
    row): the scan runs over the ``N * out[0]`` rows (times the chunks of
    each) in ``(example, row, chunk)`` order, so its stacked result reshapes
    to ``(N, *out, O)`` for free.  A scan over ``out[0]``
    with the whole batch in each step would stack ``(out[0], N, ...)``, and
    its transpose would first copy the cotangent to rows-first (a full pass
    over it, two when a vmapped cotangent's reshape joins the transpose);
    one row of one example also keeps the carry small (measured, 2-core
    CPU, kernel gradient at batch 8: group32 20.1 -> 11.6 ms, dw7 17.0 ->
    13.3, dw3 53.5 -> 50.8; through ``vmap`` dw3 60.3 -> 47.8).  A batch
    sharded over Explicit mesh axes, or of a symbolic size (``jax.export``),
    keeps the whole batch in each step.  Chunks bound the carry when one row
    is wide: a per-example grouped gradient folds its examples into
    channels (``8 x 32`` groups on one image), whose 72 accumulators of a
    ``(28, 2048)`` row are 16.5 MB.

    Each ``(tap, input channel)`` weight vector is broadcast to one full
    output row *separately* (a tuple of ``T * I`` arrays of shape
    ``(width, *out[2:], O)``; ``(N, width, ...)`` with the whole batch per
    step)
    and passed through the scan as an unchanged carry, so the transpose
    w.r.t. ``w`` accumulates ``T * I`` separate rows elementwise and reduces
    them once, after the loop.  One stacked
    ``(T, ...)`` carry instead makes XLA fuse the per-tap updates into a
    concatenate, evaluated per element with a branch (several times slower;
    see BENCHMARKS.md).
    """
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, t = flat_taps(w)  # (T, I, O)
    n = x.shape[0]
    i, o = wt.shape[-2:]
    m = o // groups
    # One example per step, except for a symbolic batch and a batch sharded
    # over Explicit mesh axes (one example is not a valid slice of it).  A
    # single example is split too: its rows then stack without a unit example
    # axis, which XLA:CPU laid out outermost and copied the cotangent
    # into, twice (a folded per-example gradient of 8 examples of group32:
    # 23.5 -> 22.4 ms; dw3's gradient 4.18 -> 3.86 ms).
    split = isinstance(n, int) and batch_mesh_axes(x) is None
    per_step = 1 if split else n
    wc = out[1] if width is None else width
    if out[1] % wc:
        raise ValueError(f"`width` (={width}) must divide the output width {out[1]}")
    nw = out[1] // wc
    # Split, a step's row has no example axis: the stacked rows of shape
    # (steps, 1, ...) had an interior unit axis, and XLA:CPU copied the
    # whole cotangent into that layout before the transposed scan (a 38 MB
    # copy for a batch-8 112x112x96 depthwise gradient).
    row = (wc, *out[2:], o) if split else (per_step, wc, *out[2:], o)
    one = (1,) * (len(row) - 1)
    # The weight vectors come out of one ``split``, whose transpose stacks
    # their gradients with one concatenate; indexing ``wt[k, j]`` instead
    # transposes to a pad of each into the whole kernel and a sum of ``T * I``
    # of them (3.3 ms of the 23 ms of group32's per-example gradients).
    wvs = lax.split(wt.astype(acc_dtype).reshape(t * i, o), (1,) * (t * i))
    wbs = tuple(jnp.broadcast_to(v.reshape(*one, o), row) for v in wvs)
    k0, s0, d0 = kernel[0], stride[0], dilation[0]
    span0 = d0 * (k0 - 1) + 1
    # A chunk's input columns; a whole row reads them all.
    span1 = ((wc - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1 if nw > 1
             else x.shape[2])

    def step(wbs, r):
        q, c = (r // nw, r % nw) if nw > 1 else (r, 0)
        e, h = (q // out[0], q % out[0]) if split else (0, q)
        start = (e, h * s0, c * wc * stride[1]) + (0,) * (x.ndim - 3)
        rows = lax.dynamic_slice(x, start, (per_step, span0, span1, *x.shape[3:]))
        rows = rows.astype(acc_dtype)
        acc = None
        for k, tap in enumerate(tap_offsets(kernel)):
            xs = tap_slice(rows, tap, (1, wc, *out[2:]), (1, *stride[1:]), dilation)
            # Drop the row axis, then split the channels: one axis at a time,
            # as reshapes of sharded arrays (Explicit mesh axes) need.
            xs = lax.squeeze(xs, (0, 1) if split else (1,))
            xs = xs.reshape(*xs.shape[:-1], groups, i)
            for j in range(i):
                wb = wbs[k * i + j]
                if m == 1 and i == 1:
                    term = xs.reshape(row) * wb
                else:
                    term = xs[..., j:j + 1] * wb.reshape(*row[:-1], groups, m)
                    term = term.reshape(row)
                acc = term if acc is None else acc + term
        return wbs, acc

    # Remat the step: otherwise linearising the scan saves every tap's slice
    # of every row (T times the input) as residuals for the transpose.
    step = jax.checkpoint(step, prevent_cse=False)
    steps = (n * out[0] if split else out[0]) * nw
    _, ys = lax.scan(step, wbs, jnp.arange(steps))  # (steps, [N,] wc, ..., O)
    if split:
        return ys.reshape(n, *out, o)
    # Unsplit (a symbolic or Explicit-sharded batch), the rows stack
    # rows-first: a moveaxis.
    if nw == 1:
        return jnp.moveaxis(ys, 0, 1)
    ys = jnp.moveaxis(ys.reshape(out[0], nw, *ys.shape[1:]), 2, 0)
    return ys.reshape(n, *out, o)
