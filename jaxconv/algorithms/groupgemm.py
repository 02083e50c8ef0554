"""Grouped kernels with many input channels per group, as GEMMs batched over groups.

``out[n, p, g, m] = sum_{t, i} x[n, p*s + t*d, g, i] * w[t, i, g, m]``: for
every group ``g`` the patch matrix ``(N*P, T*I)`` times that group's kernel
``(T*I, M)``, all groups in one ``dot_general`` batched over ``g``.

The input is laid out groups-first once, ``(G, N, *S, I)``, so that the
stacked tap slices are already the batched GEMM's left operand
``(G, N, *P, T*I)`` (a patch matrix built groups-last would be transposed by
XLA before the GEMM: a patch-sized copy); the kernel ``(*K, I, G*M)`` is
rearranged to ``(G, T*I, M)``.  On the ResNeXt-50 stage 3/4 layers of the
zoo (16 and 32 channels per group, 3x3, 8x8 down to 2x2) the batched GEMM
form ran 0.9-1.5x XLA's grouped convolution forward (0.72-0.9x on the one
whose 1.2 MB kernel dwarfs its 2x2 output: the kernel is copied
groups-first, then packed), the per-tap batched GEMMs ``sum_t x_t @ w[t]``
(:func:`conv_group_taps`) 0.8-1.4x, and the fused broadcast form
(``grouped.py``) 0.07-0.25x: beyond ~110 broadcast terms (``T * I``) XLA no
longer compiles that sum into one fast loop (docs/auto.md).

Large problems run in the plan's row blocks (``blocks.row_blocks``), so the
patch matrix of a block stays cache-sized: unblocked, patches of more than a
few MiB made the form 2-4x slower than the per-tap GEMMs; blocked, it ran
1.2-1.9x lax on 14x14 and 28x28 ResNeXt layers.

Exact per window: every product pairs an input of the output's own window
with its weight (no structural zeros beyond the conv's own padding), so NaN
and Inf stay local.  Derivatives: plain autodiff (a batched GEMM and the
transpose of the patch stacking: 7-75x faster than XLA's grouped gradient
on those layers); in row blocks, the input tangent is the unblocked per-tap
form and the kernel tangent the blocked patch form (``blocks.row_blocks``).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import common_dtype, out_spatial
from .blocks import row_blocks


def run(x, w, plan, precision):
    """Run ``plan`` (formulation ``"groupgemm"``) on the unpadded ``x``."""
    p = plan.problem
    kw = dict(stride=p.stride, dilation=p.dilation, groups=p.groups,
              precision=precision, acc_dtype=p.acc_dtype)

    def tangent(x, w):
        return conv_group_taps(x, w, **kw)

    return row_blocks(lambda x, w: conv_groupgemm(x, w, **kw), x, w,
                      plan.param("blocks", ()), stride=p.stride, dilation=p.dilation,
                      acc_dtype=p.acc_dtype, pads=p.pads, tangent_fn=tangent)


def _groups_first(x, w, groups):
    """``x (N, *S, G*I) -> (G, N, *S, I)`` and ``w (*K, I, G*M) -> (G, T, I, M)``,
    in a common dtype."""
    x, w = common_dtype(x, w)
    i, o = w.shape[-2:]
    t = math.prod(w.shape[:-2])
    # Split the channels, then move the group axis: one axis at a time, as
    # reshapes of sharded arrays (Explicit mesh axes) need.
    xg = jnp.moveaxis(x.reshape(*x.shape[:-1], groups, i), -2, 0)
    wg = jnp.transpose(w.reshape(t, i, groups, o // groups), (2, 0, 1, 3))
    return xg, wg


def _groups_last(y, o):
    """``(G, N, *P, M) -> (N, *P, G*M)``."""
    y = jnp.moveaxis(y, 0, -2)
    return y.reshape(*y.shape[:-2], o)


def _batched(a, b, precision, acc_dtype):
    """``a (G, ..., K) @ b (G, K, M) -> (G, ..., M)``, batched over ``G``.

    ``a`` is multiplied as ``(G, rows, K)`` (as ``_common.matmul`` does in
    2-D): the kernel gradient's transpose is then one batched GEMM over the
    rows (ResNeXt's grouped 3x3 layers: forward 1.84 -> 1.93, gradient
    54.6 -> 58.7 of lax's speed, geometric means of 10 records).
    """
    rows = a.reshape(a.shape[0], -1, a.shape[-1])
    out = lax.dot_general(rows, b, (((2,), (1,)), ((0,), (0,))),
                          precision=precision, preferred_element_type=acc_dtype)
    return out.reshape(*a.shape[:-1], b.shape[-1])


def conv_groupgemm(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """The patch form on a padded ``x``: one GEMM of depth ``T*I`` per group."""
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    xg, wg = _groups_first(x, w, groups)
    g, t, i, m = wg.shape
    cols = jnp.stack([tap_slice(xg, tap, out, stride, dilation, first_axis=2)
                      for tap in tap_offsets(kernel)], axis=-2)  # (G, N, *P, T, I)
    cols = cols.reshape(*cols.shape[:-2], t * i)
    y = _batched(cols, wg.reshape(g, t * i, m), precision, acc_dtype)
    return _groups_last(y, w.shape[-1])


def conv_group_taps(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Per-tap GEMMs batched over groups, summed, on a padded ``x``.

    No patch matrix: the input tangent of the blocked patch form (one
    output-sized accumulator instead of every block's patches at once).
    """
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    xg, wg = _groups_first(x, w, groups)
    acc = None
    for k, tap in enumerate(tap_offsets(kernel)):
        xs = tap_slice(xg, tap, out, stride, dilation, first_axis=2)
        term = _batched(xs, wg[:, k], precision, acc_dtype)
        acc = term if acc is None else acc + term
    return _groups_last(acc, w.shape[-1])
