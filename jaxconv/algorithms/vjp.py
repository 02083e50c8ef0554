"""Custom derivative rules where autodiff of the fast forward is slow.

Rules are ``jax.custom_jvp`` (not ``custom_vjp``), so forward mode
(``jax.jvp``, ``check_grads(modes=("fwd",))``), reverse mode and every higher
order keep working: the tangent rule is a sum of *linear* convolutions, and
JAX transposes it for reverse mode.  The speed comes from choosing, for each
linear piece, a formulation whose transpose is fast.

Depthwise and grouped kernels (``depthwise_with_fast_kernel_grad``,
``grouped_with_fast_kernel_grad``).  Autodiff of
``out = sum_t slice_t(x) * w[t]`` gives, for the kernel gradient,
``g[t] = sum over all positions of slice_t(x) * ct``: one XLA reduction per
tap (and input channel) over the leading axes with the slicing fused in,
which runs 10-20x slower than the forward on CPU.  The kernel tangent is
therefore written as a ``lax.scan`` over output rows (``_rowscan``) with
each tap's weights pre-broadcast to a full row: its transpose is a scan that
accumulates ``slice_t(x_row) * ct_row`` elementwise into a carry of one row
per tap, then one small reduction over that row (measured ~30x faster than
the autodiff kernel gradient on the dw3 case).  XLA folds a pairwise
halving tree of adds back into the slow reduce, so a scan it is.  The input
tangent of a depthwise conv uses the fast forward itself (its transpose —
pad and add — is already memory-bound); a grouped conv's input tangent is a
scan of per-tap batched GEMMs, whose transpose is GEMMs as well (group32
gradient: 11x -> 55-70x faster than lax, temporaries within 2x I/O).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import flat_taps, out_spatial, pad_spatial


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def depthwise_with_fast_kernel_grad(x, w, stride, dilation, groups, acc_dtype, pads):
    """``depthwise._depthwise_unrolled`` with the derivative rule above.

    ``pads``: the zero padding of ``x`` (applied per tap in the forward; the
    kernel tangent's row scan reads a padded copy).
    """
    from .depthwise import _depthwise_unrolled

    return _depthwise_unrolled(x, w, stride, dilation, groups, acc_dtype, pads)


@depthwise_with_fast_kernel_grad.defjvp
def _depthwise_jvp(stride, dilation, groups, acc_dtype, pads, primals, tangents):
    x, w = primals
    tx, tw = tangents
    args = (stride, dilation, groups, acc_dtype, pads)
    y = depthwise_with_fast_kernel_grad(x, w, *args)
    ty = depthwise_with_fast_kernel_grad(tx, w, *args)
    ty = ty + _rowscan(pad_spatial(x, pads), tw, stride, dilation, groups, acc_dtype)
    return y, ty


def _rowscan(x, w, stride, dilation, groups, acc_dtype):
    """The grouped conv as a scan over the first output axis (linear in ``w``).

    Each ``(tap, input channel)`` weight vector is broadcast to one full
    output row *separately* (a tuple of ``T * I`` arrays of shape
    ``(N, *out[1:], O)``) and passed through the scan as an unchanged carry,
    so the transpose w.r.t. ``w`` accumulates ``T * I`` separate rows
    elementwise and reduces them once, after the loop.  One stacked
    ``(T, ...)`` carry instead makes XLA fuse the per-tap updates into a
    concatenate, evaluated per element with a branch: measured 8x slower on
    the dw3 case (34 ms vs 4 ms for the kernel gradient).
    """
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, t = flat_taps(w)  # (T, I, O)
    n = x.shape[0]
    i, o = wt.shape[-2:]
    m = o // groups
    row = (n, *out[1:], o)
    wbs = tuple(
        jnp.broadcast_to(wt[k, j].astype(acc_dtype).reshape((1,) * len(out) + (o,)),
                         row)
        for k in range(t) for j in range(i)
    )
    k0, s0, d0 = kernel[0], stride[0], dilation[0]
    span0 = d0 * (k0 - 1) + 1

    def step(wbs, h):
        rows = lax.dynamic_slice_in_dim(x, h * s0, span0, axis=1).astype(acc_dtype)
        acc = None
        for k, tap in enumerate(tap_offsets(kernel)):
            xs = tap_slice(rows, tap, (1, *out[1:]), (1, *stride[1:]), dilation)
            xs = xs.reshape(n, *out[1:], groups, i)
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
    _, ys = lax.scan(step, wbs, jnp.arange(out[0]))  # (out0, N, *out[1:], O)
    return jnp.moveaxis(ys, 0, 1)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def grouped_with_fast_kernel_grad(x, w, stride, dilation, groups, precision, acc_dtype):
    """``taps._conv_grouped`` with the kernel tangent of ``_rowscan``."""
    from .taps import _conv_grouped

    return _conv_grouped(x, w, stride=stride, dilation=dilation, groups=groups,
                         precision=precision, acc_dtype=acc_dtype)


@grouped_with_fast_kernel_grad.defjvp
def _grouped_jvp(stride, dilation, groups, precision, acc_dtype, primals, tangents):
    x, w = primals
    tx, tw = tangents
    args = (stride, dilation, groups, precision, acc_dtype)
    from .taps import _conv_per_tap

    y = grouped_with_fast_kernel_grad(x, w, *args)
    # The input tangent as per-tap batched GEMMs in a scan over taps: its
    # transpose (the input gradient) is GEMMs accumulated into one carry,
    # 3.3 ms on group32 against 71 ms for the transpose of the fused
    # broadcast form (a reduction per tap and channel); unrolled taps took
    # 6.5 ms and held all nine GEMM outputs at once (2x I/O breached).
    ty = _conv_per_tap(tx, w, stride=stride, dilation=dilation, groups=groups,
                       precision=precision, acc_dtype=acc_dtype, force_scan=True)
    return y, ty + _rowscan(x, tw, stride, dilation, groups, acc_dtype)
