"""Custom derivative rules where autodiff of the fast forward is slow.

Rules are ``jax.custom_jvp`` (not ``custom_vjp``), so forward mode
(``jax.jvp``, ``check_grads(modes=("fwd",))``), reverse mode and every higher
order keep working: the tangent rule is a sum of *linear* convolutions, and
JAX transposes it for reverse mode.  The speed comes from choosing, for each
linear piece, a formulation whose transpose is fast.

Depthwise kernels (``depthwise_with_fast_kernel_grad``).  Autodiff of
``out = sum_t slice_t(x) * w[t]`` gives, for the kernel gradient,
``g[t] = sum over all positions of slice_t(x) * ct``: one XLA reduction per
tap over the leading (row) axis with the slicing fused in, which runs 10-20x
slower than the forward on CPU (it walks rows with a large stride).  The
kernel tangent is therefore written as a ``lax.scan`` over output rows with
each tap's weights pre-broadcast to a full row: its transpose is a scan that
accumulates ``slice_t(x_row) * ct_row`` elementwise into a carry of one row
per tap, then one small reduction over that row (measured ~30x faster than
the autodiff kernel gradient on the dw3 case).  XLA folds a pairwise
halving tree of adds back into the slow reduce, so a scan it is.  The input
tangent uses the fast forward itself (its transpose — pad and add — is
already memory-bound).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import flat_taps, out_spatial


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def depthwise_with_fast_kernel_grad(x, w, stride, dilation, groups, acc_dtype):
    """``depthwise._depthwise_unrolled`` with the derivative rule above."""
    from .depthwise import _depthwise_unrolled

    return _depthwise_unrolled(x, w, stride, dilation, groups, acc_dtype)


@depthwise_with_fast_kernel_grad.defjvp
def _depthwise_jvp(stride, dilation, groups, acc_dtype, primals, tangents):
    x, w = primals
    tx, tw = tangents
    y = depthwise_with_fast_kernel_grad(x, w, stride, dilation, groups, acc_dtype)
    ty = depthwise_with_fast_kernel_grad(tx, w, stride, dilation, groups, acc_dtype)
    ty = ty + _depthwise_rowscan(x, tw, stride, dilation, groups, acc_dtype)
    return y, ty


def _depthwise_rowscan(x, w, stride, dilation, groups, acc_dtype):
    """The depthwise conv as a scan over the first output axis (linear in ``w``).

    Each tap's weights are broadcast to one full output row *separately*
    (a tuple of ``T`` arrays of shape ``(N, *out[1:], O)``) and passed through
    the scan as an unchanged carry, so the transpose w.r.t. ``w`` accumulates
    ``T`` separate rows elementwise and reduces them once, after the loop.
    One stacked ``(T, ...)`` carry instead makes XLA fuse the per-tap updates
    into a concatenate, evaluated per element with a branch: measured 8x
    slower on the dw3 case (34 ms vs 4 ms for the kernel gradient).
    """
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, t = flat_taps(w)  # (T, 1, O)
    n, c = x.shape[0], x.shape[-1]
    o = wt.shape[-1]
    m = o // groups
    row = (n, *out[1:], o)
    wbs = tuple(
        jnp.broadcast_to(wt[i].astype(acc_dtype).reshape((1,) * len(out) + (o,)), row)
        for i in range(t)
    )
    k0, s0, d0 = kernel[0], stride[0], dilation[0]
    span0 = d0 * (k0 - 1) + 1

    def step(wbs, h):
        rows = lax.dynamic_slice_in_dim(x, h * s0, span0, axis=1).astype(acc_dtype)
        acc = None
        for i, tap in enumerate(tap_offsets(kernel)):
            xs = tap_slice(rows, tap, (1, *out[1:]), (1, *stride[1:]), dilation)
            xs = xs.reshape(n, *out[1:], c)
            if m == 1:
                term = xs * wbs[i]
            else:
                term = (xs.reshape(*xs.shape[:-1], groups, 1)
                        * wbs[i].reshape(*row[:-1], groups, m))
                term = term.reshape(row)
            acc = term if acc is None else acc + term
        return wbs, acc

    # Remat the step: otherwise linearising the scan saves every tap's slice
    # of every row (T times the input) as residuals for the transpose.
    step = jax.checkpoint(step, prevent_cse=False)
    _, ys = lax.scan(step, wbs, jnp.arange(out[0]))  # (out0, N, *out[1:], O)
    return jnp.moveaxis(ys, 0, 1)
