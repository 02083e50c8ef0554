"""Slow, independent NumPy references for the convolution tests.

Written from the definitions (XLA's ``Conv`` semantics), with plain loops, so
they share no code with the library.
"""

from __future__ import annotations

import itertools

import numpy as np


def conv_reference(
    x,
    w,
    stride,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    feature_group_count=1,
    batch_group_count=1,
    acc_dtype=None,
):
    """Convolution of ``x (N, C, *S)`` with ``w (O, I, *K)`` (lax's default layout).

    Exactly XLA's semantics: dilate the input by ``lhs_dilation`` (inserting
    zeros), pad it by ``padding`` (negative crops), then slide the
    ``rhs_dilation``-dilated kernel with ``stride``.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    nd = x.ndim - 2
    lhs_dilation = lhs_dilation or (1,) * nd
    rhs_dilation = rhs_dilation or (1,) * nd
    acc = np.dtype(acc_dtype) if acc_dtype is not None else np.result_type(x, w)
    if acc in (np.float16,) or acc.name == "bfloat16":
        acc = np.dtype(np.float64)
    x = x.astype(acc)
    w = w.astype(acc)
    n, c = x.shape[:2]
    # 1. lhs dilation.
    dil_shape = [(s - 1) * d + 1 if s else 0 for s, d in zip(x.shape[2:], lhs_dilation)]
    xd = np.zeros((n, c, *dil_shape), acc)
    xd[
        (slice(None), slice(None)) + tuple(slice(None, None, d) for d in lhs_dilation)
    ] = x
    # 2. padding (negative crops).
    for ax, (lo, hi) in enumerate(padding):
        axis = ax + 2
        if lo < 0:
            xd = np.take(xd, range(-lo, xd.shape[axis]), axis=axis)
        if hi < 0:
            xd = np.take(xd, range(0, xd.shape[axis] + hi), axis=axis)
        widths = [(0, 0)] * xd.ndim
        widths[axis] = (max(lo, 0), max(hi, 0))
        xd = np.pad(xd, widths)
    o, i = w.shape[:2]
    kernel = w.shape[2:]
    span = [d * (k - 1) + 1 for k, d in zip(kernel, rhs_dilation)]
    out_sp = [max(0, (p - s) // st + 1) for p, s, st in zip(xd.shape[2:], span, stride)]
    b = batch_group_count
    g = feature_group_count
    out = np.zeros((n // b, o, *out_sp), acc)
    o_per_g = o // g
    o_per_b = o // b
    for nb in range(n // b):
        for oc in range(o):
            if b > 1:
                img = xd[(oc // o_per_b) * (n // b) + nb]
                chans = range(c)
            else:
                img = xd[nb]
                grp = oc // o_per_g
                chans = range(grp * i, (grp + 1) * i)
            for pos in itertools.product(*(range(s) for s in out_sp)):
                total = acc.type(0)
                for ci, chan in enumerate(chans):
                    for tap in itertools.product(*(range(k) for k in kernel)):
                        idx = tuple(
                            p * st + t * d
                            for p, st, t, d in zip(pos, stride, tap, rhs_dilation)
                        )
                        total += img[(chan, *idx)] * w[(oc, ci, *tap)]
                out[(nb, oc, *pos)] = total
    return out
