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

Where the kernel outweighs the patch matrix many times over (a few output
positions against wide groups: ResNeXt's last stage at batch 1, 2x2
outputs against a 1.2 MB kernel) copying the kernel groups-first costs
more than the GEMMs; there (``form="reduce"``, ``reduce_applies``) the
forward is one fused multiply-reduce ``sum_k cols[r, k, g] * w[k, g, m]``
reading the kernel in its own layout, and its derivatives are the batched
GEMMs' (a ``jax.custom_jvp`` whose tangents are the GEMM form: the
transpose of the reduction would materialise every product).

Exact per window: every product pairs an input of the output's own window
with its weight (no structural zeros beyond the conv's own padding), so NaN
and Inf stay local.  Derivatives: plain autodiff (a batched GEMM and the
transpose of the patch stacking: 7-75x faster than XLA's grouped gradient
on those layers); in row blocks, the input tangent is the unblocked per-tap
form and the kernel tangent the blocked patch form (``blocks.row_blocks``).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import common_dtype, out_spatial, pad_spatial
from .blocks import row_blocks


def reduce_applies(problem, profile) -> bool:
    """Whether a ``"groupgemm"`` problem runs ``form="reduce"``: its kernel
    has at least ``profile.groupgemm_reduce_min_ratio`` times the bytes of
    its patch matrix."""
    p = problem
    return p.w_bytes >= profile.groupgemm_reduce_min_ratio * max(p.patch_bytes, 1)


def run(x, w, plan, precision):
    """Run ``plan`` (formulation ``"groupgemm"``) on the unpadded ``x``."""
    p = plan.problem
    kw = dict(stride=p.stride, dilation=p.dilation, groups=p.groups,
              precision=precision, acc_dtype=p.acc_dtype)
    if plan.param("form") == "reduce":
        return conv_group_reduce(pad_spatial(x, p.pads), w, p.stride, p.dilation,
                                 p.groups, precision, p.acc_dtype)

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


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def conv_group_reduce(x, w, stride, dilation, groups, precision, acc_dtype):
    """The patch form on a padded ``x`` as one fused multiply-reduce.

    ``y[r, g, m] = sum_k cols[r, k, g] * w[k, g, m]`` with ``w`` reshaped in
    place to ``(T*I, G, M)`` (no copy) and the patch matrix ``cols`` (small:
    the form applies where the kernel outweighs it) laid out contraction-
    major; XLA fuses the broadcast product into the reduction.  Tangents
    (and so gradients) are the batched GEMMs' (:func:`conv_groupgemm`).
    """
    del precision  # elementwise products in acc_dtype, as the grouped loop
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    x, w = common_dtype(x, w)
    i, o = w.shape[-2:]
    t, m = math.prod(kernel), o // groups
    cols = jnp.stack([tap_slice(x, tap, out, stride, dilation)
                      for tap in tap_offsets(kernel)], axis=-2)  # (N, *P, T, G*I)
    cols = cols.reshape(-1, t, groups, i)
    cols = jnp.swapaxes(cols, -1, -2).reshape(-1, t * i, groups).astype(acc_dtype)
    wk = w.reshape(t * i, groups, m).astype(acc_dtype)
    y = jnp.sum(cols[..., None] * wk[None], axis=1)  # (N*P, G, M)
    return y.reshape(x.shape[0], *out, o)


def _conv_group_reduce_jvp(stride, dilation, groups, precision, acc_dtype, primals,
                           tangents):
    x, w = primals
    kw = dict(stride=stride, dilation=dilation, groups=groups, precision=precision,
              acc_dtype=acc_dtype)
    y = conv_group_reduce(x, w, stride, dilation, groups, precision, acc_dtype)
    zero = jax.custom_derivatives.SymbolicZero
    terms = [conv_groupgemm(*args, **kw) for args, t in
             (((tangents[0], w), tangents[0]), ((x, tangents[1]), tangents[1]))
             if not isinstance(t, zero)]
    if not terms:
        return y, jnp.zeros_like(y)
    return y, sum(terms[1:], terms[0]).astype(y.dtype)


conv_group_reduce.defjvp(_conv_group_reduce_jvp, symbolic_zeros=True)
