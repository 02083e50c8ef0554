"""Row blocks: a dense formulation computed a few output rows at a time.

The dense formulations build temporaries of a fixed number of values per
output position (patches, all-tap GEMM outputs).  :func:`blocking` sizes
blocks of output rows so that those temporaries stay within a budget (the
plan calls it; the result is part of the plan), and :func:`row_blocks` runs
a formulation block by block in a ``lax.scan`` with the derivative rule
described there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._common import batch_zeros, out_spatial, pad_spatial, padded_shape

# One level of blocking: (spatial axis, output rows per block, blocks).
Level = tuple[int, int, int]


def blocking(x_shape, pads, kernel, stride, dilation, *, itemsize, temp_channels,
             room, min_bytes, max_bytes, block_last) -> tuple[Level, ...]:
    """How to cut the output into row blocks; ``()`` means unblocked.

    A formulation holding ``temp_channels`` values (of ``itemsize`` bytes)
    per output position computes ``R`` output rows of spatial axis 0 at a
    time, with ``R`` the most rows whose temporaries fit ``room`` bytes
    clipped to ``[min_bytes, max_bytes]``; the blocks are then balanced
    (``R = ceil(H / ceil(H / R))``).  When a single row exceeds both the
    budget and ``room`` (the memory bound, not just a cache size), each row
    is blocked along the next axis, and so on.  The last spatial axis is
    blocked only with ``block_last`` (formulations that shift along it
    cannot be cut there).

    Args:
      x_shape: the unpadded input ``(N, *S, C)`` (``N`` an int).
      pads: its zero padding, one ``(lo, hi)`` pair per spatial axis.

    Returns:
      One ``(axis, rows, blocks)`` level per blocked axis, outermost first.
    """
    blockable = len(kernel) - (0 if block_last else 1)
    levels: list[Level] = []
    shape, pads = tuple(x_shape), tuple(pads)
    for axis in range(blockable):
        out = out_spatial(padded_shape(shape, pads), kernel, stride, dilation)
        h = out[axis]
        budget = min(max_bytes, max(min_bytes, room))
        row_bytes = shape[0] * math.prod(out) // h * temp_channels * itemsize
        r = max(1, budget // row_bytes)
        if h <= r:
            break
        nb = -(-h // r)
        r = -(-h // nb)
        levels.append((axis, r, nb))
        if not (r == 1 and row_bytes > max(budget, room)):
            break
        # Every block of axis ``axis`` is one padded row window: block the
        # next axis of that window.
        rows_in = (r - 1) * stride[axis] + (kernel[axis] - 1) * dilation[axis] + 1
        shape = (*shape[:1 + axis], rows_in, *shape[2 + axis:])
        pads = tuple((0, 0) if a == axis else p for a, p in enumerate(pads))
    return tuple(levels)


def row_blocks(fn, x, w, levels, *, stride, dilation, acc_dtype, pads,
               tangent_fn=None, kernel_fn=None):
    """``fn(pad(x), w)`` computed in the row blocks ``levels`` (of :func:`blocking`).

    Each scan step reads its input rows plus the kernel's halo and writes its
    rows into the output in place; the last block is shifted back to end at
    the last row (its overlap is recomputed identically).

    Padding: ``x`` is unpadded and ``pads`` its zero padding.  A block is
    read as ``x[c : c + L]`` with ``c`` clamped into the input, zero-padded
    like the whole axis and re-sliced at ``u - c + lo``, where ``u`` is its
    first row in unpadded coordinates: away from the edges that is the
    block itself; at an edge the zeros added are exactly the axis padding.
    So no padded copy of the input is ever made.

    Derivatives: a ``custom_jvp`` whose tangent is
    ``tangent_fn(tx, w) + blocked(x, tw)`` (``fn`` is bilinear;
    ``tangent_fn`` defaults to ``fn`` unblocked; the kernel tangent's blocks
    run ``kernel_fn``, another formulation of the same bilinear map whose
    transpose is faster, when given).  The input tangent is not
    blocked: reverse mode would transpose the scan into a full-size input
    cotangent per block.  The kernel tangent is blocked like the forward
    (rows of every image — never one image per step, which would all-gather
    a batch-sharded input) and rematerialised, so its transpose keeps only
    ``x`` and the block starts and accumulates a kernel-sized cotangent.
    """
    if not levels:
        if kernel_fn is None:
            return fn(pad_spatial(x, pads), w)
        return _unblocked(fn, kernel_fn, tangent_fn, pads, x, w)
    (axis, r, nb), inner_levels = levels[0], levels[1:]
    kernel = w.shape[:-2]
    out = out_spatial(padded_shape(x.shape, pads), kernel, stride, dilation)
    h = out[axis]
    o = w.shape[-1]
    inner = tuple((0, 0) if a == axis else p for a, p in enumerate(pads))

    def block_fn(xb, w, f):  # xb: padded along ``axis`` only
        if inner_levels:
            return row_blocks(f, xb, w, inner_levels, stride=stride,
                              dilation=dilation, acc_dtype=acc_dtype, pads=inner,
                              tangent_fn=tangent_fn, kernel_fn=kernel_fn)
        return f(pad_spatial(xb, inner), w)

    s0, k0, d0 = stride[axis], kernel[axis], dilation[axis]
    lo, hi = pads[axis]
    n_in = x.shape[1 + axis]
    rows_in = (r - 1) * s0 + (k0 - 1) * d0 + 1
    take_rows = min(rows_in, n_in)
    starts = np.minimum(np.arange(nb) * r, h - r).astype(np.int32)

    def read_block(x, start):
        u = start * s0 - lo  # the block's first row, unpadded coordinates
        if lo == hi == 0:
            return lax.dynamic_slice_in_dim(x, u, rows_in, axis=1 + axis)
        c = jnp.clip(u, 0, n_in - take_rows)
        xb = lax.dynamic_slice_in_dim(x, c, take_rows, axis=1 + axis)
        widths = [(0, 0)] * x.ndim
        widths[1 + axis] = (lo, hi)
        xb = jnp.pad(xb, widths)
        return lax.dynamic_slice_in_dim(xb, u - c + lo, rows_in, axis=1 + axis)

    def blocked(x, w, remat=False, f=fn):
        def compute(x, start, w):
            return block_fn(read_block(x, start), w, f)

        if remat:  # residuals: x itself (loop-invariant) and the block starts
            return stacked(jax.checkpoint(compute), x, w)

        def step(acc, start):
            zero = jnp.zeros((), jnp.int32)
            yb = compute(x, start, w).astype(acc.dtype)
            idx = [zero] * acc.ndim
            idx[1 + axis] = start
            return lax.dynamic_update_slice(acc, yb, idx), None

        init = batch_zeros(x, (x.shape[0], *out, o), acc_dtype)
        return lax.scan(step, init, jnp.asarray(starts))[0]

    def stacked(compute, x, w):
        # The blocks as the scan's stacked outputs, then assembled.  (Written
        # in place into a carried output, as the forward does, the transpose
        # would carry the whole cotangent through the loop, which XLA copies
        # at every step; stacked, the transpose reads its block as the
        # scan's input.)
        def step(_, start):
            return None, compute(x, start, w).astype(acc_dtype)

        ys = lax.scan(step, None, jnp.asarray(starts))[1]
        ys = jnp.moveaxis(ys, 0, 1 + axis)
        shape = list(ys.shape)
        ys = ys.reshape(*shape[:1 + axis], nb * r, *shape[3 + axis:])
        extra = nb * r - h  # the last block was shifted back by this much
        if extra:
            ys = lax.concatenate(
                [lax.slice_in_dim(ys, 0, (nb - 1) * r, axis=1 + axis),
                 lax.slice_in_dim(ys, (nb - 1) * r + extra, nb * r, axis=1 + axis)],
                1 + axis)
        return ys

    f = jax.custom_jvp(lambda x, w: blocked(x, w))

    def _jvp(primals, tangents):
        (x, w), (tx, tw) = primals, tangents
        zero = jax.custom_derivatives.SymbolicZero
        tfn = fn if tangent_fn is None else tangent_fn
        terms = [tfn(pad_spatial(tx, pads), w)] if not isinstance(tx, zero) else []
        if not isinstance(tw, zero):
            # Rematerialised: linearising would otherwise hoist each block's
            # patches (they depend on x alone) out of the scan as stacked
            # residuals, the whole patch matrix at once; with remat only the
            # input blocks are kept.  Blocks are rows of every image, never
            # images: a scan over the batch axis would all-gather a
            # batch-sharded input.
            terms.append(blocked(x, tw, remat=True, f=kernel_fn or fn))
        y = blocked(x, w)
        if not terms:
            return y, jnp.zeros_like(y)
        return y, terms[0] if len(terms) == 1 else terms[0] + terms[1]

    f.defjvp(_jvp, symbolic_zeros=True)
    return f(x, w)


def _unblocked(fn, kernel_fn, tangent_fn, pads, x, w):
    """``fn(pad(x), w)`` whose kernel tangent runs ``kernel_fn`` (unblocked).

    The same rule as the blocked form's (:func:`row_blocks`), for problems
    small enough to run whole: the transpose of the patch form's kernel
    tangent is one GEMM, where autodiff of a shifted-sum form is a sum of
    shifted cotangents.
    """
    f = jax.custom_jvp(lambda x, w: fn(pad_spatial(x, pads), w))

    def _jvp(primals, tangents):
        (x, w), (tx, tw) = primals, tangents
        zero = jax.custom_derivatives.SymbolicZero
        y = f(x, w)
        terms = []
        if not isinstance(tx, zero):
            terms.append((tangent_fn or fn)(pad_spatial(tx, pads), w))
        if not isinstance(tw, zero):
            terms.append(kernel_fn(pad_spatial(x, pads), tw))
        if not terms:
            return y, jnp.zeros_like(y)
        return y, terms[0] if len(terms) == 1 else terms[0] + terms[1]

    f.defjvp(_jvp, symbolic_zeros=True)
    return f(x, w)
