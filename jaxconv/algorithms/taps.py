"""Shift-and-accumulate: ``out = sum over taps t of slice_t(x) @ w[t]``.

Each kernel tap contributes one strided slice of the input times that tap's
``(I, O)`` weight matrix.  ``conv_taps`` picks the formulation of that sum
that suits the problem (``taps_variant`` names it, from static shapes only):

* ``"dot"``: a 1x1 kernel is one (strided) slice and one GEMM;
* ``"depthwise"``: ``I == 1``: elementwise multiply-adds fused into one loop
  (``jaxconv.algorithms.depthwise``), memory-bound;
* ``"toeplitz"``: long 1-D depthwise kernels: blocked Toeplitz GEMMs (a scan,
  or one block-Hankel GEMM per channel, ``depthwise.hankel_applies``);
* ``"grouped"``: few input channels per group: the per-group products are
  unrolled into broadcast multiply-adds (no batched tiny GEMMs);
* ``"im2col"``: dense kernels of rank >= 2 (but ``"alltaps"`` below): the
  patch matrix in blocks of output rows, one deep GEMM of depth ``T * I``
  per block, the zero padding applied to each block as it is read;
* ``"s2d"``: strided 1-D dense kernels on fewer than 128 channels:
  space-to-depth (stride phases folded into channels), then the stride-1
  formulation of the result; with more channels strided per-tap GEMMs
  (``"taps"``) are deep enough;
* ``"alltaps"``: dense stride-1 kernels whose all-tap GEMM output fits
  ``ALLTAPS_MAX_BYTES`` (unblocked: the fewest XLA kernels, so the fastest
  to compile), and 2-D ones on 5 to ``ALLTAPS_MAX_I`` input channels (in row
  blocks): one GEMM against every tap at once, then one fused sum of
  shifted slices;
* ``"rows"`` (1-D, few channels): the taps concatenated along channels, one
  GEMM;
* ``"wide"`` (1-D, more channels): one GEMM against all taps at once
  (``N = k * O``), then the shifted partial sums are added;
* ``"taps"``: the general per-tap einsum (a ``lax.scan`` for kernels with more
  than ``UNROLL_LIMIT`` taps, so compile time stays bounded).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._taps import tap_offsets, tap_slice
from . import depthwise
from ._common import (
    contract_tap,
    flat_taps,
    matmul,
    out_spatial,
    pad_spatial,
    padded_shape,
    take,
    zero_pads,
)

UNROLL_LIMIT = 64
GROUPED_MAX_I = 16
# The grouped derivative rule keeps one scan carry (an output row) per tap
# and input channel: beyond this many, plain autodiff (bounded carries and
# compile time).  group32 (3x3, 8 channels per group) has 72.
GROUPED_RULE_MAX_TERMS = 128
# Space-to-depth (1-D only) deepens the GEMMs of strided kernels on few
# channels: s2d 0.56x vs per-tap 0.43x of lax on a 64-channel 1-D conv;
# from 128 channels strided per-tap GEMMs are deep enough (wav1d).  On 2-D
# problems row-blocked im2col beat it at every width measured (112x112x16
# -> 32 3x3 s2: 0.80x vs 0.55x of lax, temporaries 0.48x vs 1.35x of the
# 2x I/O bound), so 2-D/3-D strided kernels use im2col.
S2D_MAX_I = 128
# Dense kernels on at most this many input channels (an RGB first layer):
# im2col in blocks of output rows, one GEMM of depth T * I per block.
IM2COL_MAX_I = 4


def taps_variant(x_shape, w_shape, stride, dilation, groups) -> str:
    """Which formulation ``conv_taps`` uses for this canonical problem."""
    kernel = tuple(w_shape[:-2])
    i, o = w_shape[-2:]
    c = x_shape[-1]
    t = int(np.prod(kernel, dtype=np.int64))
    if i == 1 and groups == c:
        if depthwise.toeplitz_applies(x_shape, w_shape, stride, dilation, groups):
            return "toeplitz"
        return "depthwise"
    if t == 1:
        return "dot"
    if groups > 1 and i <= GROUPED_MAX_I and t <= UNROLL_LIMIT:
        return "grouped"
    if groups > 1 or t > UNROLL_LIMIT:
        return "taps"
    stride1 = all(s == 1 for s in stride)
    if len(kernel) >= 2:
        if i > IM2COL_MAX_I and stride1 and (
                (i <= ALLTAPS_MAX_I and len(kernel) == 2)
                or _alltaps_bytes(x_shape, w_shape) <= ALLTAPS_MAX_BYTES):
            return "alltaps"
        return "im2col"
    (s,), (k,), (d,) = stride, kernel, dilation
    if s > 1 and k > 1 and d == 1 and i < S2D_MAX_I:
        return "s2d"
    if stride1:
        if _alltaps_bytes(x_shape, w_shape) <= ALLTAPS_MAX_BYTES:
            return "alltaps"
        return "rows" if i <= ROWS_MAX_I else "wide" if i <= WIDE_MAX_I else "taps"
    return "taps"


def conv_taps(x, w, *, stride, dilation, groups, precision, acc_dtype,
              padding=None, variant=None):
    """Shift-and-accumulate convolution on the canonical problem.

    ``padding`` (one ``(lo, hi)`` pair of non-negative ints per spatial axis,
    or None) is zero padding still to apply to ``x``: the row-blocked dense
    formulations pad each block as they read it (no padded copy of the
    input: at 56x56x64 that copy alone is half the SPEC's 2x I/O memory
    bound), the depthwise loop pads each tap; the others pad first.
    ``variant`` overrides ``taps_variant`` (the autotuner's candidates,
    ``autotune.candidates``, are the ones valid for the problem).
    """
    pads = zero_pads(padding, w.ndim - 2)
    shape = padded_shape(x.shape, pads)
    if variant is None:
        variant = taps_variant(shape, w.shape, stride, dilation, groups)
    kw = dict(stride=stride, dilation=dilation, groups=groups, precision=precision,
              acc_dtype=acc_dtype)
    small = _alltaps_bytes(shape, w.shape) <= ALLTAPS_MAX_BYTES
    if variant in ("im2col", "rows", "wide") or (variant == "alltaps" and not small):
        return _dense_blocked(variant, x, w, pads, **kw)
    if variant == "depthwise":
        return depthwise.conv_depthwise(x, w, pads=pads, **kw)
    if variant == "toeplitz":
        return depthwise.conv_toeplitz_1d(x, w, precision=precision,
                                          acc_dtype=acc_dtype, pads=pads)
    x = pad_spatial(x, pads)
    if variant == "grouped":
        if (len(w.shape) >= 4 and jnp.issubdtype(x.dtype, jnp.inexact)
                and jnp.issubdtype(w.dtype, jnp.inexact)
                and int(np.prod(w.shape[:-1])) <= GROUPED_RULE_MAX_TERMS):
            from . import vjp  # fast kernel gradient (a custom_jvp)

            return vjp.grouped_with_fast_kernel_grad(
                x, w, tuple(stride), tuple(dilation), groups, precision,
                np.dtype(acc_dtype))
        return _conv_grouped(x, w, **kw)
    if variant == "alltaps":
        return _conv_alltaps(x, w, **kw)
    if variant == "s2d":
        return finite_or(x, lambda: _conv_space_to_depth(x, w, **kw),
                         lambda: _conv_per_tap(x, w, force_scan=True, **kw))
    return _conv_per_tap(x, w, **kw)


def _conv_per_tap(x, w, *, stride, dilation, groups, precision, acc_dtype,
                  force_scan=False):
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, t = flat_taps(w)
    if t > UNROLL_LIMIT or force_scan:
        return _taps_scan(x, wt, kernel, out, stride, dilation, groups,
                          precision, acc_dtype)
    acc = None
    for i, tap in enumerate(tap_offsets(kernel)):
        xs = tap_slice(x, tap, out, stride, dilation)
        term = contract_tap(xs, wt[i], groups, precision, acc_dtype)
        acc = term if acc is None else acc + term
    return acc


def _conv_grouped(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Grouped conv with few channels per group as fused multiply-adds.

    ``out[..., g, m] = sum_{t, i} x_t[..., g, i] * w[t, i, g, m]``: every
    term is a broadcast product, so XLA fuses the whole sum into one loop over
    the output instead of ``T`` batched ``I x M`` GEMMs (which have no
    arithmetic intensity to speak of).  ``x`` is padded: applying the padding
    per tap inside the loop (as the depthwise path does) ran 2-5x slower here.
    """
    del precision
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, _ = flat_taps(w)
    i, o = wt.shape[-2:]
    m = o // groups
    wt = wt.reshape(-1, i, groups, m).astype(acc_dtype)
    acc = None
    for t, tap in enumerate(tap_offsets(kernel)):
        xs = tap_slice(x, tap, out, stride, dilation).astype(acc_dtype)
        xs = xs.reshape(*xs.shape[:-1], groups, i)
        shape = (1,) * (xs.ndim - 2) + (groups, m)
        for j in range(i):
            term = xs[..., j:j + 1] * wt[t, j].reshape(shape)
            acc = term if acc is None else acc + term
    return acc.reshape(*acc.shape[:-2], o)


ROWS_MAX_I = 32


WIDE_MAX_I = 4096


def _dense_blocked(variant, x, w, pads, **kw):
    """The dense formulations in blocks of output rows, padding each block.

    ``im2col``: the tap slices are materialised and then stacked (XLA keeps
    both), so a block holds ``2 * T * I + O`` values per output position;
    ``alltaps``: every tap's GEMM output and the sum, ``(T + 1) * O``.
    ``rows`` / ``wide`` (1-D, or autotuner candidates) hold their partial
    outputs.  Blocks get ``BLOCK_IO_FRACTION`` of the SPEC's
    ``2 x (input + output)`` bound, between ``BLOCK_MIN_BYTES`` and
    ``BLOCK_MAX_BYTES``: larger blocks mean deeper GEMMs and fewer scan steps
    (dense3 im2col at 512 KiB: 0.86x of lax; at 2 MiB: 1.0x, one A/B run).
    """
    fn = {"im2col": _conv_im2col, "rows": _conv_rows, "wide": _conv_wide,
          "alltaps": _conv_alltaps}[variant]
    kernel = w.shape[:-2]
    t = int(np.prod(kernel, dtype=np.int64))
    i, o = w.shape[-2:]
    # Values held per output position: im2col, the tap slices and their
    # stack plus the GEMM output; wide, every kernel row's k_w partial
    # outputs (XLA keeps them all for the one fused add) plus the sum; rows,
    # one kernel row of concatenated taps plus every row's GEMM output.
    temp_channels = {"im2col": o + 2 * t * i, "wide": (t + 1) * o,
                     "alltaps": (t + 1) * o,
                     "rows": kernel[-1] * i + (t // kernel[-1] + 1) * o}[variant]
    tangent = None
    if variant in ("wide", "alltaps") or (variant == "im2col" and i > IM2COL_MAX_I):
        # Input gradient as a scan of per-tap GEMMs (deep enough for I > 4):
        # one input-sized carry instead of an unblocked patch matrix.
        def tangent(x, w):
            return _conv_per_tap(x, w, force_scan=True, **kw)
    shape = padded_shape(x.shape, pads)
    out = out_spatial(shape, kernel, kw["stride"], kw["dilation"])
    io = (x.size * x.dtype.itemsize
          + shape[0] * int(np.prod(out)) * o * np.dtype(kw["acc_dtype"]).itemsize)
    room = int(BLOCK_IO_FRACTION * 2 * io)
    return _row_blocks(lambda x, w: fn(x, w, **kw), x, w, kw["stride"],
                       kw["dilation"], kw["acc_dtype"], pads=pads,
                       temp_channels=temp_channels, room=room, tangent_fn=tangent,
                       block_last=variant == "im2col")


ALLTAPS_MAX_BYTES = 1 << 21
# Beyond ALLTAPS_MAX_BYTES, stride-1 kernels on up to this many input
# channels still use alltaps, in row blocks: measured against row-blocked
# im2col (ratios to lax, same process): 112x112x32 -> 32 3x3 1.12 vs 0.74,
# 2x56x56x64 -> 64 1.17 vs 1.01, 56x56x64 -> 128 0.83 vs 0.76; at 128
# channels im2col wins (28x28x128 dilated 0.85 vs 0.55, 8x28x28x128 0.88
# vs 0.50: the GEMM output is T * O wide where the patches are T * I deep).
# 2-D only: 3-D (vol3d) ran 0.64x against im2col's 1.69x.
ALLTAPS_MAX_I = 64


def _alltaps_bytes(x_shape, w_shape) -> int:
    """Float32 bytes of ``_conv_alltaps``' GEMM output ``(N, *P, T, O)``."""
    t = int(np.prod(w_shape[:-2], dtype=np.int64))
    return int(np.prod(x_shape[:-1], dtype=np.int64)) * t * w_shape[-1] * 4


def _conv_alltaps(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Dense stride-1 kernels: one GEMM against every tap at once, then shifts.

    ``y = x @ W`` with ``W (I, T*O)`` gives every tap's contribution at every
    input position; output ``p`` sums ``y[p + tap*dilation, tap]`` over the
    taps: one GEMM and one fused sum of ``T`` shifted slices, no patch tensor.
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    i, o = w.shape[-2:]
    t = int(np.prod(kernel))
    wm = jnp.moveaxis(w.reshape(t, i, o), 0, 1).reshape(i, t * o)
    y = matmul(x, wm, precision, acc_dtype)
    y = y.reshape(*y.shape[:-1], t, o)
    acc = None
    for k, tap in enumerate(tap_offsets(kernel)):
        start = (0, *(a * d for a, d in zip(tap, dilation)), k, 0)
        limit = (y.shape[0], *(a * d + n for a, d, n in zip(tap, dilation, out)),
                 k + 1, o)
        term = lax.slice(y, start, limit).reshape(y.shape[0], *out, o)
        acc = term if acc is None else acc + term
    return acc


# Block temporaries: BLOCK_IO_FRACTION of the 2 x (input + output) bound,
# clipped to [BLOCK_MIN_BYTES, BLOCK_MAX_BYTES] (below the minimum the scan
# steps cost more than they save; above the maximum blocks leave the cache).
BLOCK_IO_FRACTION = 0.8
BLOCK_MIN_BYTES = 1 << 19
BLOCK_MAX_BYTES = 1 << 22


def _row_blocks(fn, x, w, stride, dilation, acc_dtype, axis=0, *, pads,
                temp_channels, room, tangent_fn=None, block_last=False):
    """``fn(pad(x), w)`` computed in blocks of output rows (spatial axis ``axis``).

    The dense formulations build temporaries of ``temp_channels`` values per
    output position (``_dense_blocked`` counts them); computing ``R`` output rows
    at a time in a ``lax.scan`` keeps them to a block budget of ``room``
    bytes clipped to ``[BLOCK_MIN_BYTES, BLOCK_MAX_BYTES]``, and in cache.
    Each step reads its input rows plus the kernel's halo and writes its
    rows into the output in place; the last block is shifted back to end at
    the last row (its overlap is recomputed identically).  Problems whose
    temporaries fit one block run unblocked; when a single row is more than
    ``room`` (the memory bound, not just the cache), each row is blocked
    along the next axis.  The last axis is blocked only with ``block_last``
    (``im2col``, which does not shift along it; the other forms do).

    Padding: ``x`` is unpadded and ``pads`` its zero padding.  A block is
    read as ``x[c : c + L]`` with ``c`` clamped into the input, zero-padded
    like the whole axis and re-sliced at ``u - c + lo``, where ``u`` is its
    first row in unpadded coordinates: away from the edges that is the
    block itself; at an edge the zeros added are exactly the axis padding.
    So no padded copy of the input is ever made.

    Derivatives: a ``custom_jvp`` whose tangent is
    ``tangent_fn(tx, w) + blocked(x, tw)`` (``fn`` is bilinear;
    ``tangent_fn`` defaults to ``fn`` unblocked).  The input tangent is not
    blocked: reverse mode would transpose the scan into a full-size input
    cotangent per block.  The kernel tangent is blocked like the forward
    (rows of every image — never one image per step, which would all-gather
    a batch-sharded input) and rematerialised, so its transpose keeps only
    ``x`` and the block starts and accumulates a kernel-sized cotangent.
    """
    kernel = w.shape[:-2]
    blockable = len(kernel) - (0 if block_last else 1)
    if axis >= blockable:
        return fn(pad_spatial(x, pads), w)
    shape = padded_shape(x.shape, pads)
    out = out_spatial(shape, kernel, stride, dilation)
    h = out[axis]
    o = w.shape[-1]
    itemsize = np.dtype(acc_dtype).itemsize
    budget = min(BLOCK_MAX_BYTES, max(BLOCK_MIN_BYTES, room))
    row_bytes = x.shape[0] * int(np.prod(out)) // h * temp_channels * itemsize
    r = max(1, budget // row_bytes)
    inner = tuple((0, 0) if a == axis else p for a, p in enumerate(pads))

    def block_fn(xb, w):  # xb: padded along ``axis`` only
        return fn(pad_spatial(xb, inner), w)

    if r == 1 and row_bytes > max(budget, room) and axis + 1 < blockable:
        def block_fn(xb, w):
            return _row_blocks(fn, xb, w, stride, dilation, acc_dtype, axis + 1,
                               pads=inner, temp_channels=temp_channels, room=room,
                               tangent_fn=tangent_fn, block_last=block_last)
    if h <= r:
        return fn(pad_spatial(x, pads), w)
    nb = -(-h // r)
    r = -(-h // nb)  # balance the blocks
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

    def blocked(x, w, remat=False):
        def compute(x, start, w):
            return block_fn(read_block(x, start), w)

        if remat:  # residuals: x itself (loop-invariant) and the block starts
            compute = jax.checkpoint(compute)

        def step(acc, start):
            zero = jnp.zeros((), jnp.int32)
            yb = compute(x, start, w).astype(acc.dtype)
            idx = [zero] * acc.ndim
            idx[1 + axis] = start
            return lax.dynamic_update_slice(acc, yb, idx), None

        init = jnp.zeros((x.shape[0], *out, o), acc_dtype)
        return lax.scan(step, init, jnp.asarray(starts))[0]

    f = jax.custom_jvp(lambda x, w: blocked(x, w))

    def _jvp(primals, tangents):
        (x, w), (tx, tw) = primals, tangents
        zero = jax.custom_derivatives.SymbolicZero
        tfn = fn if tangent_fn is None else tangent_fn
        terms = [tfn(pad_spatial(tx, pads), w)] if not isinstance(tx, zero) else []
        if not isinstance(tw, zero):
            # Rematerialised: linearising would otherwise hoist each block's
            # patches (they depend on x alone) out of the scan as stacked
            # residuals, the whole patch matrix at once (dense3_b8 gradient:
            # 3.7x I/O); with remat only the input blocks are kept.  Blocks
            # are rows of every image, never images: a scan over the batch
            # axis would all-gather a batch-sharded input.
            terms.append(blocked(x, tw, remat=True))
        y = blocked(x, w)
        if not terms:
            return y, jnp.zeros_like(y)
        return y, terms[0] if len(terms) == 1 else terms[0] + terms[1]

    f.defjvp(_jvp, symbolic_zeros=True)

    return f(x, w)


def _conv_im2col(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """The patch matrix, then one GEMM of depth ``T * I``.

    For few input channels (per-tap GEMMs of depth ``I = 3``, an RGB stem,
    run at a few percent of the machine's GEMM rate) and strided kernels
    (one deep GEMM instead of ``T`` strided ones whose outputs XLA keeps
    live together).  The patches ``(..., T, I)`` are built by
    *stacking* the tap slices on a new axis (XLA copies each slice as a
    block; concatenating on the channel axis instead costs a select per
    element) and contracted with the ``(T * I, O)`` kernel.  Exact per window
    (no structural zeros), so NaN/Inf stay local; ``_row_blocks`` keeps the
    patch matrix within its block budget.
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    cols = jnp.stack([tap_slice(x, tap, out, stride, dilation)
                      for tap in tap_offsets(kernel)], axis=-2)
    cols = cols.reshape(*cols.shape[:-2], -1)
    return matmul(cols, w.reshape(-1, w.shape[-1]), precision, acc_dtype)


def _conv_rows(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Row taps: the last-axis taps concatenated along channels, one GEMM per row.

    Raises the GEMM depth from ``I`` to ``k_w * I`` (for few input channels,
    e.g. an RGB stem after space-to-depth) while the patch tensor is only one
    kernel row's worth.
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    kl = kernel[-1]
    i, o = w.shape[-2:]
    lead_k = kernel[:-1]
    wr = w.reshape(*lead_k, kl * i, o)
    acc = None
    for tap in tap_offsets(lead_k):
        cat = lax.concatenate(
            [tap_slice(x, (*tap, j), out, stride, dilation) for j in range(kl)],
            x.ndim - 1,
        )
        term = matmul(cat, take(wr, tap), precision, acc_dtype)
        acc = term if acc is None else acc + term
    return acc


def _conv_wide(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Dense kernels: one GEMM per row of taps, over the whole padded width.

    For each tap of the leading kernel axes, the input rows it touches are
    multiplied by the ``(I, k_w * O)`` matrix of all last-axis taps at once;
    the ``k_w`` partial outputs are then shifted along the last axis and
    added.  Compared with per-tap GEMMs this multiplies ``k_w`` times fewer,
    ``k_w`` times wider matrices; compared with im2col it builds no patch
    tensor (XLA's concatenate is slow on CPU).
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    kl, dl = kernel[-1], dilation[-1]
    i, o = w.shape[-2:]
    width = x.shape[-2]
    lead_k = kernel[:-1]
    wl = jnp.moveaxis(w, len(kernel) - 1, -2).reshape(*lead_k, i, kl * o)
    acc = None
    for tap in tap_offsets(lead_k):
        rows = tap_slice(x, (*tap, 0), (*out[:-1], width), (*stride[:-1], 1),
                         (*dilation[:-1], 1))  # (N, *out[:-1], W, I)
        y = matmul(rows, take(wl, tap), precision, acc_dtype)
        y = y.reshape(*y.shape[:-1], kl, o)
        for j in range(kl):
            start = [0] * y.ndim
            limit = list(y.shape)
            start[-3], limit[-3] = j * dl, j * dl + out[-1]
            start[-2], limit[-2] = j, j + 1
            term = lax.slice(y, start, limit).reshape(*y.shape[:-3], out[-1], o)
            acc = term if acc is None else acc + term
    return acc


def finite_or(x, fast, safe):
    """``fast()`` when every input is finite, else ``safe()`` (NaN/Inf locality).

    Formulations that multiply structural zeros (zero-padded kernels, Toeplitz
    blocks) by inputs outside an output's window would turn a distant Inf
    into NaN; ``safe`` is an exact per-window formulation.
    """
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return fast()
    return lax.cond(jnp.all(jnp.isfinite(x)), lambda _: fast(), lambda _: safe(), None)


def _conv_space_to_depth(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Strided kernels: fold the stride phases into channels (space-to-depth).

    Along each axis with stride ``s > 1`` the input becomes ``(P/s, s)`` with
    the phase moved into the channels and the kernel ``(ceil(k/s), s)`` (zero
    padded): a stride-1 convolution with ``s`` times more input channels and a
    ``s`` times shorter kernel, so the GEMMs get ``s`` times deeper.
    """
    kernel = w.shape[:-2]
    nd = len(kernel)
    out = out_spatial(x.shape, kernel, stride, dilation)
    xs, ws = x, w
    x_axes = []
    for a, (k, s, o) in enumerate(zip(kernel, stride, out)):
        if s == 1:
            continue
        kq = -(-k // s)
        need = (o - 1 + kq) * s
        have = xs.shape[1 + a]
        if need > have:
            pad = [(0, 0)] * xs.ndim
            pad[1 + a] = (0, need - have)
            xs = jnp.pad(xs, pad)
        else:
            xs = lax.slice_in_dim(xs, 0, need, axis=1 + a)
        wpad = [(0, 0)] * ws.ndim
        wpad[a] = (0, kq * s - k)
        ws = jnp.pad(ws, wpad)
        x_axes.append(a)
    # x: (N, *P, C) -> (N, *Q, *phases, C); w: (*K, I, O) -> (*Kq, *phases, I, O)
    xshape, wshape, xperm_tail, wperm_tail = [xs.shape[0]], [], [], []
    for a in range(nd):
        if a in x_axes:
            s = stride[a]
            xshape += [xs.shape[1 + a] // s, s]
            wshape += [ws.shape[a] // s, s]
        else:
            xshape += [xs.shape[1 + a]]
            wshape += [ws.shape[a]]
    xs = xs.reshape(*xshape, xs.shape[-1])
    ws = ws.reshape(*wshape, *ws.shape[-2:])
    xpos, wpos, xq, wq = 1, 0, [], []
    for a in range(nd):
        xq.append(xpos)
        wq.append(wpos)
        if a in x_axes:
            xperm_tail.append(xpos + 1)
            wperm_tail.append(wpos + 1)
            xpos += 2
            wpos += 2
        else:
            xpos += 1
            wpos += 1
    xs = jnp.transpose(xs, (0, *xq, *xperm_tail, xs.ndim - 1))
    ws = jnp.transpose(ws, (*wq, *wperm_tail, ws.ndim - 2, ws.ndim - 1))
    phases = int(np.prod([stride[a] for a in x_axes]))
    xs = xs.reshape(*xs.shape[: 1 + nd], phases * x.shape[-1])
    ws = ws.reshape(*ws.shape[:nd], phases * w.shape[-2], w.shape[-1])
    new_stride = tuple(1 if a in x_axes else s for a, s in enumerate(stride))
    sub = dict(stride=new_stride, dilation=dilation, groups=groups,
               precision=precision, acc_dtype=acc_dtype)
    y = conv_taps(xs, ws, **sub)
    return lax.slice(y, (0,) * y.ndim, (y.shape[0], *out, y.shape[-1]))


def _taps_scan(x, wt, kernel, out, stride, dilation, groups, precision, acc_dtype):
    n, c = x.shape[0], x.shape[-1]
    extent = tuple((o - 1) * s + 1 for o, s in zip(out, stride))
    offsets = jnp.asarray(
        np.array(list(tap_offsets(kernel)), dtype=np.int32).reshape(-1, len(kernel))
        * np.array(dilation, dtype=np.int32)
    )
    steps = tuple(slice(None, None, s) for s in stride)

    def step(acc, tap):
        offset, wk = tap
        zero = jnp.zeros((), jnp.int32)
        start = (zero, *(offset[i] for i in range(len(kernel))), zero)
        xs = lax.dynamic_slice(x, start, (n, *extent, c))[(slice(None), *steps)]
        return acc + contract_tap(xs, wk, groups, precision, acc_dtype), None

    init = jnp.zeros((n, *out, wt.shape[-1]), acc_dtype)
    acc, _ = lax.scan(step, init, (offsets, wt))
    return acc
