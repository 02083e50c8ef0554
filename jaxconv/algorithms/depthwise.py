"""Memory-bound depthwise paths and an exact GEMM for long 1-D depthwise kernels.

Depthwise (``I == 1``, ``groups == C``) convolutions do one multiply-add per
tap per output element: there is no reduction over channels to feed a GEMM,
so the fastest formulation is the plain elementwise one,
``out += slice_t(x) * w[t]``, which XLA fuses into a single loop over the
output (XLA's own conv emitter instead loops over the groups, 10-200x slower
on CPU; see BENCHMARKS.md).

Long 1-D kernels (hundreds of taps) make that loop compute-bound; there
``conv_toeplitz_1d`` turns the problem into GEMMs: the output is cut
into blocks of ``B`` positions and the kernel into blocks of ``B`` taps, and
block ``b`` of the output is ``sum_m x_block[b + m] @ A_m`` with
``A_m[v, u] = w[m*B + v - u]`` a ``B x B`` Toeplitz matrix per channel (zero
outside the kernel).  Two ways to evaluate that sum (``hankel_applies``
picks one from static shapes): a ``lax.scan`` over ``m`` of batched
``B x B`` GEMMs, or, for the longest kernels, per channel one GEMM of depth
``M * B`` against all of the ``A_m`` stacked (the input blocks stacked into
a block-Hankel matrix).  Arithmetic is exact (no transform); the structural
zeros of ``A_m`` would turn an Inf of a neighbouring input into NaN, so when
an input is non-finite the exact per-tap loop runs instead (NaN/Inf stay
local, as with ``lax``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._taps import padded_tap_slice, tap_offsets, tap_slice
from ._common import flat_taps, out_spatial, pad_spatial, padded_shape, zero_pads

UNROLL_LIMIT = 64
# Up to this many taps the zero padding is applied per tap inside the fused
# loop (a bounds check per tap and element); beyond it, one padded copy of
# the input is cheaper.  Measured on 2 cores: dw3 2.0 -> 1.7 ms, dw3_s2
# 2.0 -> 0.7 ms, causal1d 1.4 -> 0.9 ms; but dw7 (49 taps) 2.1 -> 6.8 ms.
PAD_IN_LOOP_MAX_TAPS = 9
TOEPLITZ_BLOCK = 64
TOEPLITZ_MIN_TAPS = 64
# From this many taps the block-Hankel form (one GEMM of depth ~K per
# channel) beats the scan of batched B x B GEMMs: XLA:CPU runs a batch of
# small GEMMs on one thread, one big GEMM on all of them.  Measured on 2
# cores, Hankel vs scan time (8192 x 32 channels unless noted): K = 256
# 0.84x, 512 1.02x, 768 1.38x, 1024 1.31-1.47x, 1024 x 128 channels 1.84x,
# 8 x 1024 x 32 with K = 1024 2.35x; K = 64 / 128 / 257 on other shapes
# 0.80-0.87x.
HANKEL_MIN_TAPS = 512


def _depthwise_term(xs, wt, groups, acc_dtype):
    """``xs (..., C) * wt (1, C*M)`` with channel multiplier ``M``."""
    lead = xs.shape[:-1]
    o = wt.shape[-1]
    m = o // groups
    xs = xs.astype(acc_dtype)
    wt = wt.astype(acc_dtype)
    if m == 1:
        return xs * wt.reshape((1,) * len(lead) + (o,))
    xs = xs.reshape(*lead, groups, 1)
    return (xs * wt.reshape((1,) * len(lead) + (groups, m))).reshape(*lead, o)


def conv_depthwise(x, w, *, stride, dilation, groups, precision, acc_dtype,
                   pads=None):
    """Elementwise shift-and-accumulate for ``I == 1`` (depthwise) problems.

    ``pads``: zero padding still to apply to ``x``.  Unrolled kernels apply
    it per tap inside the fused loop (``padded_tap_slice``: no padded copy
    of the input, which used to be the largest temporary and a third of
    the time); scanned (large) kernels pad first.  Multi-dimensional,
    unrolled kernels of a float dtype go through
    ``vjp.depthwise_with_fast_kernel_grad``: same values, but reverse-mode
    kernel gradients accumulate elementwise instead of in XLA reductions.
    """
    del precision  # no matmul: products are exact in acc_dtype
    from . import vjp

    pads = zero_pads(pads, w.ndim - 2)
    t = int(np.prod(w.shape[:-2], dtype=np.int64))
    if t > UNROLL_LIMIT:
        x = pad_spatial(x, pads)
        kernel = w.shape[:-2]
        out = out_spatial(x.shape, kernel, stride, dilation)
        return _depthwise_rows(x, w, kernel, out, stride, dilation, groups, acc_dtype)
    if (len(w.shape) >= 4 and jnp.issubdtype(x.dtype, jnp.inexact)
            and jnp.issubdtype(w.dtype, jnp.inexact)):
        return vjp.depthwise_with_fast_kernel_grad(
            x, w, tuple(stride), tuple(dilation), groups, np.dtype(acc_dtype), pads)
    return _depthwise_unrolled(x, w, stride, dilation, groups, acc_dtype, pads)


def _depthwise_unrolled(x, w, stride, dilation, groups, acc_dtype, pads):
    kernel = w.shape[:-2]
    out = out_spatial(padded_shape(x.shape, pads), kernel, stride, dilation)
    wt, t = flat_taps(w)
    if t > PAD_IN_LOOP_MAX_TAPS:
        x, pads = pad_spatial(x, pads), ((0, 0),) * len(kernel)

    def taps_sum(product_in_pad, x=x, wt=wt):
        acc = None
        for i, tap in enumerate(tap_offsets(kernel)):
            def term(xs, i=i):
                return _depthwise_term(xs, wt[i], groups, acc_dtype)
            if product_in_pad:  # pad(slice * w): the fast form
                y = padded_tap_slice(x, tap, out, stride, dilation, pads, term)
            else:  # pad(slice) * w: padding zeros meet the weights, as in lax
                y = term(padded_tap_slice(x, tap, out, stride, dilation, pads))
            acc = y if acc is None else acc + y
        return acc

    if all(p == (0, 0) for p in pads) or not jnp.issubdtype(w.dtype, jnp.inexact):
        return taps_sum(True)
    # pad(slice * w) adds exact zeros where lax multiplies padding zeros by
    # the weights: a NaN/Inf weight must still spoil the border outputs, so
    # non-finite weights take the (2-3x slower) product of the padded slice.
    # Both branches rematerialised: a linearised ``lax.cond`` allocates the
    # residuals of both (causal1d's gradient: 1.67x -> 1.0x of the 2x I/O
    # bound); with checkpoints they are ``x`` and the taps ``wt`` themselves.
    fast = jax.checkpoint(lambda x, wt: taps_sum(True, x, wt))
    safe = jax.checkpoint(lambda x, wt: taps_sum(False, x, wt))
    return lax.cond(jnp.all(jnp.isfinite(w)), lambda: fast(x, wt), lambda: safe(x, wt))


def _depthwise_rows(x, w, kernel, out, stride, dilation, groups, acc_dtype):
    """Large kernels: ``lax.scan`` over the first kernel axis, inner taps unrolled.

    Compile time stays bounded (one row of taps is traced) while each scan
    step still fuses ``prod(kernel[1:])`` products into one loop.
    """
    if len(kernel) == 1 or int(np.prod(kernel[1:])) > UNROLL_LIMIT:
        return _depthwise_scan(x, w, kernel, out, stride, dilation, groups, acc_dtype)
    k0, s0, d0 = kernel[0], stride[0], dilation[0]
    n, c = x.shape[0], x.shape[-1]
    ext0 = (out[0] - 1) * s0 + 1
    rest = kernel[1:]

    # Rematerialised, like ``_depthwise_scan``: otherwise every step's rows
    # are stacked as residuals (dw31's gradient: 91x the 2x I/O bound).
    @jax.checkpoint
    def row_term(x, w, i):
        rows = lax.dynamic_slice_in_dim(x, i * d0, ext0, axis=1)[:, ::s0]
        wi = lax.dynamic_index_in_dim(w, i, axis=0, keepdims=False)  # (*rest, 1, O)
        wr = wi.reshape(-1, 1, wi.shape[-1])
        acc = None
        for j, tap in enumerate(tap_offsets(rest)):
            xs = tap_slice(rows, tap, out[1:], stride[1:], dilation[1:], first_axis=2)
            term = _depthwise_term(xs, wr[j], groups, acc_dtype)
            acc = term if acc is None else acc + term
        return acc

    def step(acc, i):
        return acc + row_term(x, w, i), None

    del n, c
    init = jnp.zeros((x.shape[0], *out, w.shape[-1]), acc_dtype)
    acc, _ = lax.scan(step, init, jnp.arange(k0))
    return acc


def _depthwise_scan(x, w, kernel, out, stride, dilation, groups, acc_dtype):
    wt, _ = flat_taps(w)
    n, c = x.shape[0], x.shape[-1]
    extent = tuple((o - 1) * s + 1 for o, s in zip(out, stride))
    offsets = jnp.asarray(
        np.array(list(tap_offsets(kernel)), dtype=np.int32).reshape(-1, len(kernel))
        * np.array(dilation, dtype=np.int32)
    )
    steps = (slice(None), *(slice(None, None, s) for s in stride))

    # Rematerialised: linearising the scan would otherwise stack every
    # tap's input slice as a residual, the input times the number of taps
    # (1.1 GB for the gradient of an 8192 x 32 signal with 1024 taps).
    @jax.checkpoint
    def term(x, offset, wk):
        zero = jnp.zeros((), jnp.int32)
        start = (zero, *(offset[i] for i in range(len(kernel))), zero)
        xs = lax.dynamic_slice(x, start, (n, *extent, c))[steps]
        return _depthwise_term(xs, wk, groups, acc_dtype)

    def step(acc, tap):
        offset, wk = tap
        return acc + term(x, offset, wk), None

    init = jnp.zeros((n, *out, w.shape[-1]), acc_dtype)
    acc, _ = lax.scan(step, init, (offsets, wt))
    return acc


# --------------------------------------------------------------------------
# Blocked Toeplitz GEMM for long 1-D depthwise kernels.
# --------------------------------------------------------------------------


def toeplitz_applies(x_shape, w_shape, stride, dilation, groups) -> bool:
    """1-D, depthwise with multiplier 1, stride 1, undilated, long kernel."""
    return (
        len(w_shape) == 3 and w_shape[1] == 1 and groups == x_shape[-1]
        and w_shape[2] == groups and tuple(stride) == (1,)
        and tuple(dilation) == (1,) and w_shape[0] >= TOEPLITZ_MIN_TAPS
    )


def _blocking(n_padded, k, b):
    """Output blocks, kernel blocks and blocked input length of the product."""
    nb = -(-(n_padded - k + 1) // b)
    m_blocks = -(-(b + k - 1) // b)
    return nb, m_blocks, (nb + m_blocks - 1) * b


def _reblock(x, k, b, pads):
    """``x (N, P, C)`` padded and cut into blocks: ``(C, N, blocks, b)``.

    The zero padding and the tail that completes the last block are one
    ``jnp.pad``, fused with the transpose into the one copy of the input.
    Returns the blocks, the output and kernel block counts and the output
    length.
    """
    (pad_lo, pad_hi), = pads
    n, p, c = x.shape
    p += pad_lo + pad_hi
    nb, m_blocks, total = _blocking(p, k, b)
    x = jnp.pad(x, ((0, 0), (pad_lo, pad_hi + max(0, total - p)), (0, 0)))[:, :total]
    xb = jnp.transpose(x, (2, 0, 1)).reshape(c, n, nb + m_blocks - 1, b)
    return xb, nb, m_blocks, p - k + 1


def _hankel_gemm(x, w, precision, acc_dtype, block, pads=((0, 0),)):
    """The blocked Toeplitz product as one deep GEMM per channel.

    ``out_block[q] = sum_m x_block[q + m] @ A_m`` is a single product
    ``H @ T`` with ``H[q, (m, v)] = x_block[q + m][v]`` (block-Hankel, the
    ``M`` shifted runs of input blocks stacked side by side) and
    ``T[(m, v), u] = w[m*B + v - u]``; both are built from contiguous
    slices (of the input blocks, and of the zero-extended kernel, one per
    output column ``u``), no gather.  A ``lax.map`` over channels keeps one
    channel's matrices alive at a time.
    """
    xb, nb, m_blocks, lo = _reblock(x, w.shape[0], block, pads)
    c, n = xb.shape[:2]
    k, b = w.shape[0], block
    depth = m_blocks * b
    # w_ext[c, (B - 1) + j] = w[c, j] for j in [-(B - 1), depth), zero outside
    # the kernel, so column u of T is the run w_ext[c, B - 1 - u :][:depth].
    w_ext = jnp.pad(w.T, ((0, 0), (b - 1, depth - k)))

    # Rematerialised: under autodiff only each channel's input blocks and
    # kernel are kept, not its Hankel and Toeplitz matrices (the whole
    # stack would be ~25x the input for long1d).
    @jax.checkpoint
    def channel(args):
        xc, wc = args  # (N, blocks, B), (B - 1 + depth,)
        h = jnp.stack([xc[:, m:m + nb] for m in range(m_blocks)], axis=2)
        h = h.reshape(n * nb, depth)
        tt = jnp.stack([wc[b - 1 - u:b - 1 - u + depth] for u in range(b)])
        return lax.dot_general(h, tt, (((1,), (1,)), ((), ())),
                               precision=precision, preferred_element_type=acc_dtype)

    y = lax.map(channel, (xb, w_ext))  # (C, N * nb, B)
    y = y.reshape(c, n, nb * b)[:, :, :lo]
    return jnp.transpose(y, (1, 2, 0))


def _toeplitz_gemm(x, w, precision, acc_dtype, block, pads=((0, 0),)):
    """The blocked Toeplitz product on ``x (N, P, C)``, ``w (K, C)``.

    ``pads``: the zero padding of ``x``, folded into the one copy that
    reblocks it (no separately padded input).
    """
    xb, nb, m_blocks, lo = _reblock(x, w.shape[0], block, pads)
    c, n = xb.shape[:2]
    k, b = w.shape[0], block
    # w zero-padded so that w_pad[B - 1 + j] = w[j] for every j in [-(B-1), M*B).
    w_pad = jnp.pad(w.T, ((0, 0), (b - 1, m_blocks * b - k + b)))

    # A_m[c, u, v] = w[m*B + v - u] = w_pad[c, m*B + (B - 1) + v - u]: one
    # gather of a (B, B) index pattern out of a length-(2B - 1) segment (the
    # gather writes only the (C, B, B) result; no tiled intermediate).
    toeplitz_index = jnp.asarray(
        (b - 1) + np.arange(b)[None, :] - np.arange(b)[:, None], jnp.int32)

    # Rematerialised (the Toeplitz blocks are rebuilt in the backward pass
    # instead of stacked as residuals).
    @jax.checkpoint
    def block_term(xb, w_pad, m):
        # Every input block times A_m, then the nb blocks starting at m: the
        # slice is taken of the product (fused into the add) rather than of
        # the input (a separate copy), which keeps one input-sized temporary
        # fewer live (SPEC memory bound) for m_blocks - 1 extra block rows.
        seg = lax.dynamic_slice_in_dim(w_pad, m * b, 2 * b - 1, axis=1)
        a_m = jnp.take(seg, toeplitz_index, axis=1, mode="clip")  # (C, u, v)
        term = lax.dot_general(
            xb, a_m, (((3,), (2,)), ((0,), (0,))), precision=precision,
            preferred_element_type=acc_dtype,
        )  # (C, N, nb + m_blocks - 1, u)
        return lax.dynamic_slice_in_dim(term, m, nb, axis=2)

    def step(acc, m):
        return acc + block_term(xb, w_pad, m), None

    init = jnp.zeros((c, n, nb, b), acc_dtype)
    acc, _ = lax.scan(step, init, jnp.arange(m_blocks))
    y = acc.reshape(c, n, nb * b)[:, :, :lo]
    return jnp.transpose(y, (1, 2, 0))


def hankel_applies(x_shape, k, pads=((0, 0),), block=TOEPLITZ_BLOCK) -> bool:
    """Whether ``conv_toeplitz_1d`` uses the block-Hankel form.

    For kernels of at least ``HANKEL_MIN_TAPS`` taps, when one channel's
    Hankel and Toeplitz matrices (and the slices they are stacked from:
    twice each) take at most the input plus output bytes, so the whole
    stays within the SPEC's ``2 x (input + output)`` memory bound next to
    the reblocked input and the output.  Few channels of a long signal
    fail that test (the Hankel matrix repeats one channel ``M`` times) and
    keep the scan, whose temporaries are a fixed multiple of the I/O.
    """
    n, p, c = x_shape
    (lo, hi), = pads
    nb, m_blocks, _ = _blocking(p + lo + hi, k, block)
    if k < HANKEL_MIN_TAPS or nb < 1:
        return False
    depth = m_blocks * block
    per_channel = 2 * (n * nb * depth + block * depth)
    io = n * p * c + n * (p + lo + hi - k + 1) * c
    return per_channel <= io


def conv_toeplitz_1d(x, w, *, precision, acc_dtype, block=TOEPLITZ_BLOCK,
                     pads=((0, 0),)):
    """Depthwise 1-D correlation ``x (N, P, C)``, ``w (K, 1, C)`` as GEMMs.

    ``pads``: zero padding of ``x`` still to apply.  When an input is
    non-finite the exact per-tap formulation runs instead (``lax.cond``), so
    NaN/Inf stay local to the windows that hold them.
    """
    from .taps import finite_or

    k = w.shape[0]
    wk = w.reshape(k, w.shape[-1])
    c = x.shape[-1]
    gemm = _hankel_gemm if hankel_applies(x.shape, k, pads, block) else _toeplitz_gemm
    # Both branches rematerialised: a linearised ``lax.cond`` allocates the
    # residuals of both branches (the reblocked and the padded input), and
    # with checkpoints they are ``x`` and ``w`` themselves.
    fast = jax.checkpoint(lambda x, wk: gemm(x, wk, precision, acc_dtype, block, pads))
    safe = jax.checkpoint(lambda x, w: conv_depthwise(
        x, w, stride=(1,), dilation=(1,), groups=c, precision=precision,
        acc_dtype=acc_dtype, pads=pads))
    return finite_or(x, lambda: fast(x, wk), lambda: safe(x, w))
