"""Grouped kernels with few input channels per group, as fused multiply-adds.

``out[..., g, m] = sum_{t, i} x_t[..., g, i] * w[t, i, g, m]``: every term
is a broadcast product, so XLA fuses the whole sum into one loop over the
output instead of ``T`` batched ``I x M`` GEMMs (which have no arithmetic
intensity to speak of); long sums (``Profile.grouped_rows_min_terms``) as
a scan over kernel rows, one such loop per row (:func:`conv_grouped`).

Derivatives (:func:`grouped_with_fast_kernel_grad`, a ``jax.custom_jvp``):
the kernel tangent is ``rowscan`` (whose transpose accumulates elementwise
instead of one XLA reduction per tap and channel), the input tangent a scan
of per-tap batched GEMMs, whose transpose (the input gradient) is GEMMs
accumulated into one carry; the transpose of the fused broadcast form would
be a reduction per tap and channel, and unrolled taps would hold every GEMM
output at once.
"""

from __future__ import annotations

from functools import partial

import jax

from .._taps import tap_offsets, tap_slice
from ._common import flat_taps, kernel_row_scan, out_spatial, pad_spatial
from .dense import conv_per_tap
from .rowscan import rowscan


def rule_applies(problem, profile) -> bool:
    """Whether the custom derivative rule is used: the profile asks for it
    (``custom_kernel_grads``), rank >= 2, float operands,
    and at most ``profile.grouped_rule_max_terms`` scan carries (one per tap
    and input channel; beyond, plain autodiff bounds carries and compile
    time)."""
    p = problem
    return (profile.custom_kernel_grads and p.nd >= 2 and p.inexact
            and p.taps * p.in_per_group <= profile.grouped_rule_max_terms)


def rows_applies(problem, profile) -> bool:
    """Whether the sum runs as a scan over kernel rows (``form="rows-scan"``):
    rank >= 2, stride 1 along the first spatial axis and at least
    ``profile.grouped_rows_min_terms`` terms ``T * I`` per output."""
    p = problem
    return (p.nd >= 2 and p.stride[0] == 1
            and p.taps * p.in_per_group >= profile.grouped_rows_min_terms)


def run(x, w, plan, precision):
    p = plan.problem
    x = pad_spatial(x, p.pads)
    args = (p.stride, p.dilation, p.groups, precision, p.acc_dtype)
    rows = plan.param("form") == "rows-scan"
    if plan.param("kernel_grad") == "rowscan":
        return grouped_with_fast_kernel_grad(x, w, *args, plan.param("row_width"), rows)
    return conv_grouped(x, w, *args, rows=rows)


def conv_grouped(x, w, stride, dilation, groups, precision, acc_dtype, rows=False):
    """The fused broadcast multiply-add form on a padded ``x``.

    ``rows``: a ``lax.scan`` over the first kernel axis, each step one fused
    loop over the output that adds one kernel row's ``prod(kernel[1:]) * I``
    terms to the carry.  XLA:CPU emits the whole unrolled sum as one loop
    whose body broadcasts an input and multiply-adds a weight vector per
    term; past a few dozen terms that loop runs several times slower per
    term than a short one (the 72 terms of a 3x3 kernel with 8 channels per
    group: 1.3-1.6 ms unrolled, 0.7-1.2 ms as three rows of 24 on a 2-core
    AMD EPYC).
    """
    del precision
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    if rows and len(kernel) >= 2:
        return _grouped_rows(x, w, kernel, out, stride, dilation, groups, acc_dtype)
    wt, _ = flat_taps(w)
    return _grouped_sum(x, wt, kernel, out, stride, dilation, groups, acc_dtype)


def _grouped_sum(x, wt, kernel, out, stride, dilation, groups, acc_dtype, first_axis=1):
    """``sum_{t, j} x_t[..., g, j] * wt[t, j, g, :]`` unrolled (``wt``: ``(T, I,
    O)`` taps of ``kernel``), the spatial axes of ``x`` from ``first_axis``."""
    i, o = wt.shape[-2:]
    m = o // groups
    wt = wt.reshape(-1, i, groups, m).astype(acc_dtype)
    acc = None
    for t, tap in enumerate(tap_offsets(kernel)):
        xs = tap_slice(x, tap, out, stride, dilation, first_axis).astype(acc_dtype)
        xs = xs.reshape(*xs.shape[:-1], groups, i)
        shape = (1,) * (xs.ndim - 2) + (groups, m)
        for j in range(i):
            term = xs[..., j:j + 1] * wt[t, j].reshape(shape)
            acc = term if acc is None else acc + term
    return acc.reshape(*acc.shape[:-2], o)


def _grouped_rows(x, w, kernel, out, stride, dilation, groups, acc_dtype):
    """The sum as a scan over the first kernel axis (see :func:`conv_grouped`)."""
    def row_sum(rows, wr):
        return _grouped_sum(rows, wr.reshape(-1, *wr.shape[-2:]), kernel[1:], out[1:],
                            stride[1:], dilation[1:], groups, acc_dtype, first_axis=2)

    return kernel_row_scan(x, w, out, stride, dilation, acc_dtype, row_sum)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6, 7, 8))
def grouped_with_fast_kernel_grad(x, w, stride, dilation, groups, precision, acc_dtype,
                                  width=None, rows=False):
    """:func:`conv_grouped` with the derivative rule of the module docstring
    (``width``: the row scan's output columns per step, ``rowscan.py``;
    ``rows``: the primal as a scan over kernel rows)."""
    del width
    return conv_grouped(x, w, stride, dilation, groups, precision, acc_dtype, rows)


@grouped_with_fast_kernel_grad.defjvp
def _grouped_jvp(stride, dilation, groups, precision, acc_dtype, width, rows, primals,
                 tangents):
    x, w = primals
    tx, tw = tangents
    args = (stride, dilation, groups, precision, acc_dtype, width, rows)
    y = grouped_with_fast_kernel_grad(x, w, *args)
    ty = conv_per_tap(tx, w, stride=stride, dilation=dilation, groups=groups,
                      precision=precision, acc_dtype=acc_dtype, force_scan=True)
    return y, ty + rowscan(x, tw, stride, dilation, groups, acc_dtype, width)
