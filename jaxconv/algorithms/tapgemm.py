"""Per-example kernel gradients as one GEMM per example and tap.

Each example's kernel gradient is ``g[t] = sum_q a_t[q] (outer) c_t[q]``: a
sum over positions ``q`` of outer products of an input row and a cotangent
row that the tap ``t`` pairs.  For layers of few positions and many
channels (the deep stages of a U-Net, HiFi-GAN's first upsamplers) every
example's kernel is large and the reduction short, so the cost is writing
the kernels: one ``dot_general`` whose batch axes are the examples (and the
taps) writes each example's ``(*K, I, O)`` kernel once, in its layout.

* Ordinary convolutions: ``a_t`` is the tap's strided slice of the padded
  input, ``c_t`` the cotangent; the slices side by side are the example's
  patches, so ``g = patches^T @ ct`` per example (:func:`kernel_grads`).
* Grouped convolutions: the same per group, the groups a batch axis of the
  GEMM, whose result is then transposed into the kernel's layout (small
  kernels: ``I`` and ``M`` are one group's channels).
* lhs-dilated (transposed) convolutions: ``a_t`` is the *undilated* input
  and ``c_t`` the cotangent at the positions that the tap pairs with each
  real input element (a strided slice of the cotangent), so no inserted
  zero is multiplied; the taps are a batch axis of the GEMM.

* Few output channels (``T * O`` at most ``I``): the cotangent's ``T``
  shifted copies, side by side, are the patch side instead of the input's
  (:func:`kernel_grads_by_cotangent`): one GEMM per example contracting the
  padded input positions, ``(I, Q) @ (Q, T * O)``.

Every product is one that lax forms (padding zeros times the cotangent
included); an input element that a tap pairs with no output position (an
output cropped away) is masked to zero there, so a NaN or Inf stays where
lax puts it.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from .._taps import tap_offsets
from ._common import pad_spatial
from .patches import extract_patches


def kernel_grads(x, ct, kernel, stride, pads, lhs_dilation, dilation, precision,
                 acc_dtype, groups=1):
    """Every example's kernel gradient of a convolution of ``groups``
    feature groups (lhs-dilated ones of a single group).

    Args:
      x: the input, ``(B, N, *S, G * I)`` (``N`` images per example),
        neither padded nor lhs-dilated.
      ct: the cotangent, ``(B, N, *P, G * M)``.
      kernel, stride, pads, lhs_dilation, dilation: the convolution's
        (canonical) geometry; ``pads`` apply to the lhs-dilated input.
        Strided convolutions must not be lhs-dilated.

    Returns:
      ``(B, *kernel, I, G * M)`` in ``acc_dtype``.
    """
    b, n = x.shape[:2]
    o = ct.shape[-1]
    i = x.shape[-1] // groups
    taps = math.prod(kernel)
    dims = dict(precision=precision, preferred_element_type=acc_dtype)
    if all(s == 1 for s in lhs_dilation):
        xp = pad_spatial(x.reshape(b * n, *x.shape[2:]), pads)
        out = ct.shape[2:-1]
        q = n * math.prod(out)
        patches = extract_patches(xp, kernel, out, stride, dilation)
        if groups == 1:
            g = lax.dot_general(patches.reshape(b, q, taps * i), ct.reshape(b, q, o),
                                (((1,), (1,)), ((0,), (0,))), **dims)
            return g.reshape(b, *kernel, i, o)
        # One GEMM per example and group, (T * I, Q) @ (Q, M); the groups
        # then move behind the taps (a pass over kernels that are small:
        # I and M are the channels of one group).
        m = o // groups
        g = lax.dot_general(patches.reshape(b, q, taps, groups, i),
                            ct.reshape(b, q, groups, m),
                            (((1,), (1,)), ((0, 3), (0, 2))), **dims)  # (B,G,T,I,M)
        return jnp.transpose(g, (0, 2, 3, 1, 4)).reshape(b, *kernel, i, o)

    if groups != 1:
        raise ValueError(f"groups={groups}: an lhs-dilated convolution here must "
                         "have one group")
    if any(s != 1 for s in stride):
        raise ValueError(f"stride={tuple(stride)}: an lhs-dilated convolution here "
                         "must have stride 1")
    sp = x.shape[2:-1]
    rows, masks = dilated_cotangent_rows(ct.reshape(b * n, *ct.shape[2:]), sp, kernel,
                                          pads, lhs_dilation, dilation)
    q = n * math.prod(sp)
    c = jnp.stack(rows, axis=1).reshape(b, n, taps, -1, o)
    c = jnp.moveaxis(c, 2, 1).reshape(b, taps, q, o)
    a = jnp.broadcast_to(x.reshape(b, 1, n, -1, i), (b, taps, n, math.prod(sp), i))
    mask = np.stack(masks).reshape(1, taps, 1, -1, 1)
    if not mask.all():  # keep a NaN/Inf input out of taps that never read it
        a = jnp.where(mask, a, jnp.zeros((), a.dtype))
    g = lax.dot_general(a.reshape(b, taps, q, i), c,
                        (((2,), (2,)), ((0, 1), (0, 1))), **dims)
    return g.reshape(b, *kernel, i, o)


def dilated_cotangent_rows(ct, sp, kernel, pads, lhs_dilation, dilation):
    """Every tap's cotangent rows of an lhs-dilated, stride-1 convolution.

    Output position ``p = lo + q * s - t * d`` pairs tap ``t`` with input
    element ``q`` (``s``: the lhs dilation): for each tap the strided slice
    of ``ct (M, *P, O)`` at those positions, zero where no output exists,
    shaped like the undilated input ``(M, *sp, O)``; and the boolean mask
    ``sp`` of the input elements that tap pairs with an output.
    """
    nd = len(kernel)
    out = ct.shape[1:-1]
    lo = [p[0] for p in pads]
    first = [a - (k - 1) * d for a, k, d in zip(lo, kernel, dilation)]
    last = [a + (m - 1) * s for a, m, s in zip(lo, sp, lhs_dilation)]
    ext = [(max(0, -f), max(0, e - (p - 1))) for f, e, p in zip(first, last, out)]
    cp = pad_spatial(ct, ext)
    rows, masks = [], []
    for t in tap_offsets(kernel):
        start = [a - u * d + e for a, u, d, (e, _) in zip(lo, t, dilation, ext)]
        limit = [st + (m - 1) * s + 1 for st, m, s in zip(start, sp, lhs_dilation)]
        rows.append(lax.slice(cp, [0, *start, 0], [ct.shape[0], *limit, ct.shape[-1]],
                              [1, *lhs_dilation, 1]))
        valid = np.ones(sp, bool)
        for axis in range(nd):
            idx = lo[axis] + np.arange(sp[axis]) * lhs_dilation[axis]
            idx = idx - t[axis] * dilation[axis]
            shape = [1] * nd
            shape[axis] = sp[axis]
            valid = valid & ((idx >= 0) & (idx < out[axis])).reshape(shape)
        masks.append(valid)
    return rows, masks


def kernel_grads_by_cotangent(x, ct, kernel, pads, dilation, precision, acc_dtype,
                              lhs_dilation=None):
    """Every example's kernel gradient of a stride-1, single-group
    convolution as one GEMM per example against the cotangent's shifted
    copies.

    ``g[t, i, o] = sum_p xp[p, i] c_t[p, o]`` over the padded input
    positions ``p``, where ``c_t[p] = ct[p - t * d]`` (zero where that is no
    output position): the cotangent padded by ``t * d`` before and
    ``(K - 1 - t) * d`` after, on every axis.  The ``T`` copies take ``T *
    O`` values per position where the input's patches take ``T * I``, so
    the form pays off for few output channels (a vocoder's one-channel
    output layer: 0.9 MB of copies against 29 MB of patches).

    lhs-dilated (transposed) convolutions contract the *undilated* input's
    positions ``q`` instead: ``c_t[q]`` is the cotangent at the output
    ``lo + q * s - t * d`` that tap ``t`` pairs with input element ``q``
    (a strided slice of the cotangent, as in :func:`kernel_grads`), so no
    inserted zero is multiplied and the GEMM is ``(I, Q) @ (Q, T * O)``,
    one per example, where :func:`kernel_grads` runs one per example and
    tap.

    A copy's zeros meet input elements that the tap pairs with no output
    (within ``(K - 1) * d`` of an unpadded edge, in dilated positions): a
    NaN or Inf there would reach that tap's gradient, where lax forms no
    such product, so callers run this behind a finiteness guard on that
    border of ``x``.

    Args:
      x: the input, ``(B, N, *S, I)`` (``N`` images per example), neither
        padded nor lhs-dilated.
      ct: the cotangent, ``(B, N, *P, O)``.
      kernel, pads, dilation: the convolution's (canonical) geometry;
        ``pads`` apply to the lhs-dilated input.
      lhs_dilation: the input's dilation (default none).

    Returns:
      ``(B, *kernel, I, O)`` in ``acc_dtype``.
    """
    b, n = x.shape[:2]
    i, o = x.shape[-1], ct.shape[-1]
    taps = math.prod(kernel)
    cf = ct.reshape(b * n, *ct.shape[2:])
    if lhs_dilation is not None and any(s != 1 for s in lhs_dilation):
        xp = x.reshape(b * n, *x.shape[2:])
        copies, _ = dilated_cotangent_rows(cf, x.shape[2:-1], kernel, pads,
                                            lhs_dilation, dilation)
    else:
        xp = pad_spatial(x.reshape(b * n, *x.shape[2:]), pads)
        copies = [pad_spatial(cf, [(u * d, (k - 1 - u) * d)
                                   for u, k, d in zip(t, kernel, dilation)])
                  for t in tap_offsets(kernel)]
    c = jnp.stack(copies, axis=-2)  # (B * N, *Sp, T, O)
    q = n * math.prod(xp.shape[1:-1])
    g = lax.dot_general(xp.reshape(b, q, i), c.reshape(b, q, taps * o),
                        (((1,), (1,)), ((0,), (0,))), precision=precision,
                        preferred_element_type=acc_dtype)  # (B, I, T * O)
    g = jnp.swapaxes(g.reshape(b, i, taps, o), 1, 2)
    return g.reshape(b, *kernel, i, o)
