"""Long 1-D depthwise kernels as GEMMs: blocked Toeplitz products.

Long 1-D kernels (hundreds of taps) make the elementwise depthwise loop
compute-bound; here the output is cut into blocks of ``B`` positions and the
kernel into blocks of ``B`` taps, and block ``b`` of the output is
``sum_m x_block[b + m] @ A_m`` with ``A_m[v, u] = w[m*B + v - u]`` a
``B x B`` Toeplitz matrix per channel (zero outside the kernel).  Two ways to
evaluate that sum (the plan picks one, :func:`hankel_applies`): a
``lax.scan`` over ``m`` of batched ``B x B`` GEMMs, or, for the longest
kernels, per channel one GEMM of depth ``M * B`` against all of the ``A_m``
stacked (the input blocks stacked into a block-Hankel matrix; XLA:CPU runs a
batch of small GEMMs on one thread, one big GEMM on all of them).
Arithmetic is exact (no transform); the structural zeros of ``A_m`` would
turn an Inf of a neighbouring input into NaN, so when an input is non-finite
the exact depthwise loop runs instead (``guards.finite_or``), or, without
conditionals (GPU/TPU profiles), the windows of non-finite inputs are
re-poisoned (``guards.poison_windows``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._common import batch_zeros
from .depthwise import run as run_depthwise
from .guards import finite_or, poison_windows


def is_1d_depthwise_correlation(problem) -> bool:
    """1-D, depthwise with multiplier 1, stride 1, undilated: a correlation of
    each channel with its own kernel (what this module and ``spectral.py``
    compute)."""
    p = problem
    return (p.nd == 1 and p.depthwise and p.multiplier == 1 and p.stride == (1,)
            and p.dilation == (1,) and not p.transposed)


def applies(problem, profile) -> bool:
    """A 1-D depthwise correlation with at least ``profile.toeplitz_min_taps``
    taps."""
    return (is_1d_depthwise_correlation(problem)
            and problem.taps >= profile.toeplitz_min_taps)


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
        # fewer live (the memory bound) for m_blocks - 1 extra block rows.
        seg = lax.dynamic_slice_in_dim(w_pad, m * b, 2 * b - 1, axis=1)
        a_m = jnp.take(seg, toeplitz_index, axis=1, mode="clip")  # (C, u, v)
        term = lax.dot_general(
            xb, a_m, (((3,), (2,)), ((0,), (0,))), precision=precision,
            preferred_element_type=acc_dtype,
        )  # (C, N, nb + m_blocks - 1, u)
        return lax.dynamic_slice_in_dim(term, m, nb, axis=2)

    def step(acc, m):
        return acc + block_term(xb, w_pad, m), None

    init = batch_zeros(x, (c, n, nb, b), acc_dtype, batch_axis=1)
    acc, _ = lax.scan(step, init, jnp.arange(m_blocks))
    y = acc.reshape(c, n, nb * b)[:, :, :lo]
    return jnp.transpose(y, (1, 2, 0))


def hankel_applies(problem, profile) -> bool:
    """Whether the product is one block-Hankel GEMM per channel (else a scan).

    For kernels of at least ``profile.hankel_min_taps`` taps, when one
    channel's Hankel and Toeplitz matrices (and the slices they are stacked
    from: twice each) take at most the input plus output bytes, so the whole
    stays within the ``2 x (input + output)`` memory bound next to the
    reblocked input and the output.  Few channels of a long signal fail that
    test (the Hankel matrix repeats one channel ``M`` times) and keep the
    scan, whose temporaries are a fixed multiple of the I/O.
    """
    n, p, c = problem.batch, problem.x_shape[1], problem.channels
    (lo, hi), = problem.pads
    k, block = problem.taps, profile.toeplitz_block
    nb, m_blocks, _ = _blocking(p + lo + hi, k, block)
    if k < profile.hankel_min_taps or nb < 1:
        return False
    depth = m_blocks * block
    per_channel = 2 * (n * nb * depth + block * depth)
    io = n * p * c + n * (p + lo + hi - k + 1) * c
    return per_channel <= io


def run(x, w, plan, precision):
    """Depthwise 1-D correlation ``x (N, P, C)``, ``w (K, 1, C)`` as GEMMs.

    ``x`` is unpadded (the padding is folded into the one copy that reblocks
    it).  When an input is non-finite the exact depthwise plan
    ``plan.inner[0]`` runs instead (``lax.cond``), so NaN/Inf stay local to
    the windows that hold them.
    """
    p = plan.problem
    k = w.shape[0]
    wk = w.reshape(k, w.shape[-1])
    block = plan.param("block")
    gemm = _hankel_gemm if plan.param("form") == "hankel" else _toeplitz_gemm
    if precision is None and plan.profile.depthwise_gemm_precision:
        precision = lax.Precision[plan.profile.depthwise_gemm_precision.upper()]
    if plan.profile.branch_free:
        # Non-finite inputs: zeroed for the GEMMs, their windows re-poisoned
        # (a second product, of the indicator with a kernel of ones).
        def linear(a, ones):
            kernel = jnp.ones_like(wk, a.dtype) if ones else wk
            return gemm(a, kernel, precision, p.acc_dtype, block, p.pads)
        return poison_windows(x, linear, p.acc_dtype)
    safe_plan = plan.inner[0]
    # Both branches rematerialised: a linearised ``lax.cond`` allocates the
    # residuals of both branches (the reblocked and the padded input), and
    # with checkpoints they are ``x`` and ``w`` themselves.
    fast = jax.checkpoint(
        lambda x, wk: gemm(x, wk, precision, p.acc_dtype, block, p.pads))
    safe = jax.checkpoint(lambda x, w: run_depthwise(x, w, safe_plan, precision))
    return finite_or(x, lambda: fast(x, wk), lambda: safe(x, w))
