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

* Few output channels (``T * O`` at most ``I``, or ``I`` times the stride
  of a transposed layer): the cotangent's ``T`` shifted copies (strided
  slices, for a transposed layer), side by side, are the patch side
  instead of the input's (:func:`kernel_grads_by_cotangent`): one GEMM per
  example contracting the input positions, ``(I, Q) @ (Q, T * O)``, the
  border's products (where some tap pairs an element with no output)
  added tap by tap; or, for a transposed layer whose taps fall into few
  groups pairing the same box of input elements, one GEMM per group over
  its box, with no border.

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
            shape = [1] * nd
            shape[axis] = sp[axis]
            valid = valid & _paired(lo[axis], sp[axis], lhs_dilation[axis], t[axis],
                                    dilation[axis], out[axis]).reshape(shape)
        masks.append(valid)
    return rows, masks


def _paired(lo, n, s, t, d, out):
    """Along one axis, which of the ``n`` (undilated) input elements tap
    offset ``t`` pairs with an output: ``lo + q * s - t * d`` in ``[0, out)``."""
    at = lo + np.arange(n) * s - t * d
    return (at >= 0) & (at < out)


def kernel_grads_by_cotangent(x, ct, kernel, pads, dilation, precision, acc_dtype,
                              lhs_dilation=None, box_min_taps=0):
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
    (:func:`dilated_cotangent_rows`), so no inserted zero is multiplied.

    A copy's zeros meet the input elements that the tap pairs with no
    output (within ``(K - 1) * d`` of an edge, less the padding): a NaN or
    Inf there would reach taps whose gradient lax leaves finite.  So those
    elements (the border) are zeroed for the GEMM, and their products are
    added tap by tap, each only where its tap pairs them, with their
    cotangent rows gathered from ``ct``: non-finite exactly where lax's
    gradient is, with no conditional (one pass over the input when the
    border is not empty).

    Args:
      x: the input, ``(B, N, *S, I)`` (``N`` images per example), neither
        padded nor lhs-dilated.
      ct: the cotangent, ``(B, N, *P, O)``.
      kernel, pads, dilation: the convolution's (canonical) geometry;
        ``pads`` apply to the lhs-dilated input.
      lhs_dilation: the input's dilation (default none).
      box_min_taps: lhs-dilated only: when every group of taps pairing the
        same box of input elements holds at least this many taps, one GEMM
        per box instead, no border term (:func:`_kernel_grads_by_boxes`);
        0 (the default): never.

    Returns:
      ``(B, *kernel, I, O)`` in ``acc_dtype``.
    """
    b, n = x.shape[:2]
    i, o = x.shape[-1], ct.shape[-1]
    nd = len(kernel)
    taps = math.prod(kernel)
    lhs = tuple(lhs_dilation) if lhs_dilation is not None else (1,) * nd
    dims = dict(precision=precision, preferred_element_type=acc_dtype)
    xs = x.reshape(b * n, *x.shape[2:])
    if all(s == 1 for s in lhs):
        # Padded positions: the padding zeros meet the cotangent, as in lax.
        xs, pads = pad_spatial(xs, pads), ((0, 0),) * nd
    elif box_min_taps > 0:
        groups = _tap_boxes(kernel, pads, dilation, lhs, xs.shape[1:-1], ct.shape[2:-1])
        if min(len(taps) for taps in groups.values()) >= box_min_taps:
            return _kernel_grads_by_boxes(xs, ct.reshape(b * n, *ct.shape[2:]), b,
                                          kernel, groups, pads, dilation, lhs, dims)
    sp, out = xs.shape[1:-1], ct.shape[2:-1]
    q = math.prod(sp)
    rows, masks = dilated_cotangent_rows(ct.reshape(b * n, *ct.shape[2:]), sp, kernel,
                                         pads, lhs, dilation)
    c = jnp.stack(rows, axis=-2).reshape(b, n * q, taps * o)
    pairs = np.stack(masks).reshape(taps, q)  # tap t pairs element q
    inner = pairs.all(axis=0)  # paired with every tap
    xq = xs.reshape(b, n, q, i)
    xin = xq
    if not inner.all():
        xin = jnp.where(inner[:, None], xq, jnp.zeros((), xq.dtype))
    if b == 1:  # one matrix: a plain 2-D GEMM
        g = lax.dot_general(xin.reshape(n * q, i), c[0], (((0,), (0,)), ((), ())),
                            **dims)[None]
    else:
        g = lax.dot_general(xin.reshape(b, n * q, i), c, (((1,), (1,)), ((0,), (0,))),
                            **dims)  # (B, I, T * O)
    g = jnp.swapaxes(g.reshape(b, i, taps, o), 1, 2)
    if not inner.all():
        # The border, tap by tap where the tap pairs it; its cotangent rows
        # gathered from ``ct`` itself (gathered from the copies above, they
        # cost more than the whole border's products).
        border = np.flatnonzero(~inner)
        qs = np.stack(np.unravel_index(border, sp), axis=-1)  # (Bd, nd)
        t = np.array(list(np.ndindex(*kernel))).reshape(taps, 1, nd)
        pos = (np.array([lo for lo, _ in pads]) + qs * np.array(lhs)
               - t * np.array(dilation))  # (T, Bd, nd): the output paired
        paired = pairs[:, border]  # (T, Bd)
        at = np.ravel_multi_index(tuple(np.where(paired[..., None], pos, 0).T), out)
        cb = jnp.take(ct.reshape(b, n, -1, o), at.T.reshape(-1), axis=2)
        cb = jnp.where(paired[:, :, None], cb.reshape(b, n, taps, -1, o),
                       jnp.zeros((), ct.dtype))  # (B, N, T, Bd, O)
        xb = jnp.take(xq, border, axis=2)  # (B, N, Bd, I)
        xb = jnp.where(paired[:, :, None], xb[:, :, None],
                       jnp.zeros((), xq.dtype))  # (B, N, T, Bd, I)
        g = g + lax.dot_general(xb, cb, (((1, 3), (1, 3)), ((0, 2), (0, 2))), **dims)
    return g.reshape(b, *kernel, i, o)


def _tap_boxes(kernel, pads, dilation, lhs, sp, out) -> dict[tuple, list]:
    """The taps ``(index, offsets)`` of an lhs-dilated convolution grouped
    by the box ``((first, end), ...)`` of input elements each pairs with an
    output (``lo + q * s - t * d`` within ``out``; contiguous per axis)."""
    groups: dict[tuple, list] = {}
    for k, t in enumerate(tap_offsets(kernel)):
        box = []
        for a in range(len(kernel)):
            paired = np.flatnonzero(_paired(pads[a][0], sp[a], lhs[a], t[a],
                                            dilation[a], out[a]))
            box.append((int(paired[0]), int(paired[-1]) + 1) if paired.size else (0, 0))
        groups.setdefault(tuple(box), []).append((k, t))
    return groups


def _kernel_grads_by_boxes(xs, cts, b, kernel, groups, pads, dilation, lhs, dims):
    """:func:`kernel_grads_by_cotangent` of an lhs-dilated (transposed)
    convolution: the taps grouped by the box of input elements they pair
    with an output, one GEMM per group over its box.

    Tap ``t`` pairs input element ``q`` with the output ``lo + q * s - t *
    d`` where that exists: along each axis a contiguous range of ``q``, so
    the taps pairing the same box of elements (on a transposed layer of
    kernel ``2s``, three per axis: the inner taps pair every element, the
    outer ones all but the first or last) contract that box of the input
    against their strided cotangent slices side by side.  Every product is
    a pair lax forms, and no zero meets an input element: no border term
    (one GEMM and one pass over the kernel gradient fewer than the copies
    over every position).

    ``xs (B * N, *S, I)`` is undilated and unpadded, ``cts (B * N, *P, O)``,
    ``groups`` from :func:`_tap_boxes`; returns ``(B, *kernel, I, O)`` in
    ``dims``' element type.
    """
    nd = len(kernel)
    m, i, o = xs.shape[0], xs.shape[-1], cts.shape[-1]
    n = m // b
    lo = [p[0] for p in pads]
    parts = [None] * math.prod(kernel)
    for box, members in groups.items():
        size = [hi - first for first, hi in box]
        if 0 in size:  # taps that pair no element
            for k, _ in members:
                parts[k] = jnp.zeros((b, i, o), dims["preferred_element_type"])
            continue
        q = n * math.prod(size)
        xb = xs[(slice(None), *(slice(first, hi) for first, hi in box), slice(None))]
        rows = []
        for _, t in members:
            start = [lo[a] + box[a][0] * lhs[a] - t[a] * dilation[a] for a in range(nd)]
            limit = [st + (c - 1) * s + 1 for st, c, s in zip(start, size, lhs)]
            rows.append(lax.slice(cts, [0, *start, 0], [m, *limit, o], [1, *lhs, 1]))
        c = jnp.stack(rows, axis=-2).reshape(b, q, len(members) * o)
        g = lax.dot_general(xb.reshape(b, q, i), c, (((1,), (1,)), ((0,), (0,))),
                            **dims).reshape(b, i, len(members), o)
        for j, (k, _) in enumerate(members):
            parts[k] = g[:, :, j]
    return jnp.stack(parts, axis=1).reshape(b, *kernel, i, o)
