"""Memory-bound depthwise convolution: elementwise shift-and-accumulate.

Depthwise (``I == 1``, ``groups == C``) convolutions do one multiply-add per
tap per output element: there is no reduction over channels to feed a GEMM,
so the fastest formulation is the plain elementwise one,
``out += slice_t(x) * w[t]``, which XLA fuses into a single loop over the
output (XLA's own conv emitter instead loops over the groups; see
BENCHMARKS.md).  Kernels beyond the profile's unroll limit run in a scan
(over kernel rows, or over taps).  Long 1-D kernels become GEMMs in
``toeplitz.py``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._taps import inside_outputs, padded_tap_slice, tap_offsets, tap_slice
from ._common import (
    batch_zeros,
    flat_taps,
    kernel_row_scan,
    out_spatial,
    pad_spatial,
    padded_shape,
)
from .rowscan import rowscan


def rows_scan_applies(problem, profile) -> bool:
    """Large kernels scan over kernel rows when one row unrolls (rank >= 2)."""
    return problem.nd >= 2 and int(np.prod(problem.kernel[1:])) <= profile.unroll_limit


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


def run(x, w, plan, precision):
    """Elementwise shift-and-accumulate for ``I == 1`` (depthwise) problems.

    ``x`` is unpadded.  Unrolled kernels apply the zero padding per tap
    inside the fused loop (``padded_tap_slice``: no padded copy of the
    input) up to ``profile.pad_in_loop_max_taps`` taps; scanned (large)
    kernels pad first.
    """
    del precision  # no matmul: products are exact in acc_dtype
    p = plan.problem
    form = plan.param("form")
    if form == "unrolled":
        args = (p.stride, p.dilation, p.groups, p.acc_dtype, p.pads,
                plan.param("pad_in_loop"), plan.param("guard", POISONED))
        grad = plan.param("kernel_grad")
        if grad == "positions":  # reverse mode runs positions.kernel_grad
            grad = "rowscan" if p.nd >= 2 else "flat"
        if grad == "rowscan":
            return depthwise_with_fast_kernel_grad(x, w, *args, plan.param("row_width"))
        if grad == "flat":
            return depthwise_with_flat_kernel_grad(x, w, *args, None)
        return depthwise_unrolled(x, w, *args)
    return depthwise_scanned(pad_spatial(x, p.pads), w, p.stride, p.dilation,
                             p.groups, p.acc_dtype, rows=form == "rows-scan")


def depthwise_scanned(x, w, stride, dilation, groups, acc_dtype, rows):
    """Large kernels on a padded ``x``: a scan over the first kernel axis with
    the inner taps unrolled (``rows``), or over every tap."""
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    if rows:
        return _depthwise_rows(x, w, kernel, out, stride, dilation, groups, acc_dtype)
    return _depthwise_scan(x, w, kernel, out, stride, dilation, groups, acc_dtype)


#: The plan's ``guard`` of the ways :func:`depthwise_unrolled` keeps a
#: non-finite weight's products with padding zeros (``pad_in_loop``): the
#: border strips re-poisoned in place, recomputed on padded rows, or
#: re-poisoned by the caller after it reshapes the result
#: (:func:`poison_border`; a vmapped conv's unfolded batch).
POISONED = "re-poisoned borders"
RECOMPUTED = "recomputed borders"
DEFERRED = "re-poisoned borders, after unfolding"


def depthwise_unrolled(x, w, stride, dilation, groups, acc_dtype, pads,
                       pad_in_loop, border=POISONED):
    """Every tap unrolled into one fused elementwise loop over the output.

    ``pads`` is the zero padding of ``x``, applied per tap when
    ``pad_in_loop`` (no padded copy), else once up front.  In the loop, the
    padding contributes exact zeros where lax multiplies padding zeros by
    the weights; with NaN/Inf weights the outputs that read padding are then
    mended in their border strips: NaN is added there
    (:func:`_poison_padded_taps`), or, with ``border=RECOMPUTED``, they are
    computed again from padded rows of ``x`` (:func:`_exact_border`); with
    ``border=DEFERRED`` the caller does it (:func:`poison_border`).
    """
    kernel = w.shape[:-2]
    out = out_spatial(padded_shape(x.shape, pads), kernel, stride, dilation)
    wt, _ = flat_taps(w)
    if border == RECOMPUTED and pad_in_loop:
        # A kernel computed in the same program (the flipped kernel of an
        # input gradient) is materialised first: fused into the loop and its
        # border updates, the reversed reads ran the loop 3x slower.
        wt = lax.optimization_barrier(wt)
    if not pad_in_loop:
        x, pads = pad_spatial(x, pads), ((0, 0),) * len(kernel)

    y = None
    for i, tap in enumerate(tap_offsets(kernel)):
        def term(xs, i=i):
            return _depthwise_term(xs, wt[i], groups, acc_dtype)
        # pad(slice * w): the product fuses into the loop, the padding is a
        # bounds check
        t = padded_tap_slice(x, tap, out, stride, dilation, pads, term)
        y = t if y is None else y + t
    if all(p == (0, 0) for p in pads) or not jnp.issubdtype(w.dtype, jnp.inexact):
        return y
    # pad(slice * w) adds exact zeros where lax multiplies padding zeros by
    # the weights: a NaN/Inf weight must still spoil the outputs whose tap
    # reads padding (0 * Inf is NaN).  Only border strips hold such outputs.
    # (A ``lax.cond`` onto the exact product of the padded slice held the
    # residuals of both branches under autodiff and computed both on
    # accelerators; a NaN mask added over the whole output made the fused
    # loop 2x slower, a select 4x.)  Re-poisoning reads each strip from
    # ``y``, and XLA:CPU copies the whole output first when the result is
    # returned reshaped (a vmapped conv's folded batch); recomputed strips
    # depend on ``x`` and ``w`` only, but their transpose makes strided input
    # gradients 1.5-2x slower, so each plan says which (``guard``).
    if border == DEFERRED:
        return y
    if border == RECOMPUTED:
        return _exact_border(y, x, w, out, stride, dilation, groups, acc_dtype,
                             pads)
    return _poison_padded_taps(y, w, out, stride, dilation, pads, x.shape[1:-1])


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def poison_border(y, w, plan):
    """``y``, the result of ``plan`` (guard :data:`DEFERRED`) with its batch
    axis reshaped into several, with the border strips re-poisoned.

    A vmapped conv's folded batch ``(B * N, ...)`` is returned as ``(B, N,
    ...)``; XLA:CPU copies a whole output updated in place when the update
    is returned reshaped, but updates the reshaped output in place.  The
    tangent passes through unchanged (the NaN added is a constant; the
    convolution's own tangent mends its border), so the strips' in-place
    updates stay out of reverse mode, whose transposes would copy the
    whole cotangent once per strip.
    """
    p = plan.problem
    return _poison_padded_taps(y, w, p.out_spatial, p.stride, p.dilation, p.pads,
                               p.x_shape[1:-1])


@poison_border.defjvp
def _poison_border_jvp(plan, primals, tangents):
    y, w = primals
    return poison_border(y, w, plan), tangents[0]


def _poison_padded_taps(y, w, out, stride, dilation, pads, in_spatial):
    """``y`` with NaN where a non-finite weight meets a padding zero.

    Output ``(j_1, .., j_d, o)`` holds such a product iff some tap ``t``
    with a non-finite ``w[t, :, o]`` reads padding at ``j``, i.e. iff along
    some axis ``a`` its offset ``t_a`` reads padding at ``j_a``.  So the set
    is the union over axes of ``(out_a, O)`` masks: ``reads_pad_a (out_a,
    K_a)`` (static) against "some tap with offset ``t_a`` on axis ``a`` is
    non-finite in channel ``o``" ``(K_a, O)``.
    """
    kernel = w.shape[:-2]
    bad_w = ~jnp.isfinite(w).all(axis=-2)  # (*K, O)
    nd = len(kernel)
    lead = y.ndim - nd - 1  # the batch axes (more than one once unfolded)
    for a, (k, o, s, d, (lo, _), n) in enumerate(zip(kernel, out, stride, dilation,
                                                      pads, in_spatial)):
        reads_pad = _reads_padding(k, o, s, d, lo, n)
        if not reads_pad.any():
            continue
        per_offset = bad_w.any(axis=tuple(i for i in range(nd) if i != a))  # (K_a, O)
        hit = jnp.any(jnp.asarray(reads_pad)[:, :, None] & per_offset[None], axis=1)
        nan_or_zero = jnp.where(hit, jnp.array(jnp.nan, y.dtype),
                                jnp.zeros((), y.dtype))
        # Only the first and last outputs along the axis can read padding
        # (``reads_pad`` is monotone in the output index): the NaN (or 0)
        # is added to those strips in place.  ``y + NaN`` is NaN, ``y + 0``
        # is ``y``.  (Added over the whole output, the (out_a, O) operand
        # made XLA's fused depthwise loop 2x slower, a select 4x.)
        rows = np.flatnonzero(reads_pad.any(axis=1))
        for lo_j, hi_j in _runs(rows):
            shape = [1] * y.ndim
            shape[lead + a], shape[-1] = hi_j - lo_j, hit.shape[-1]
            start = [0] * y.ndim
            start[lead + a] = lo_j
            limit = list(y.shape)
            limit[lead + a] = hi_j
            strip = lax.slice(y, start, limit) + nan_or_zero[lo_j:hi_j].reshape(shape)
            y = lax.dynamic_update_slice(y, strip, start)
    return y


def _exact_border(y, x, w, out, stride, dilation, groups, acc_dtype, pads):
    """``y`` with its outputs that read padding recomputed on padded ``x``.

    Along axis ``a`` only the first and last outputs can read padding
    (``inside_outputs`` is an interval per tap); each run of them is a strip
    of the output, computed by :func:`depthwise_unrolled` on the rows of
    ``x`` it reads, padded explicitly (exact products, as lax's).  The strips
    depend on ``x`` and ``w`` only, so the update is in place even when ``y``
    is returned reshaped.
    """
    kernel = w.shape[:-2]
    in_spatial = x.shape[1:-1]
    for a, (k, o, s, d, (lo, hi), n) in enumerate(zip(kernel, out, stride, dilation,
                                                       pads, in_spatial)):
        if lo == hi == 0:
            continue
        rows = np.flatnonzero(_reads_padding(k, o, s, d, lo, n).any(axis=1))
        for lo_j, hi_j in _runs(rows):
            u0 = lo_j * s - lo  # the strip's input rows, unpadded coordinates
            u1 = (hi_j - 1) * s + (k - 1) * d + 1 - lo
            c0 = min(max(u0, 0), n)
            c1 = max(min(u1, n), c0)
            xa = lax.slice_in_dim(x, c0, c1, axis=1 + a)
            strip_pads = list(pads)
            strip_pads[a] = (c0 - u0, u1 - c1) if c1 > c0 else (u1 - u0, 0)
            strip = depthwise_unrolled(xa, w, stride, dilation, groups, acc_dtype,
                                       tuple(strip_pads), pad_in_loop=False)
            start = [0] * y.ndim
            start[1 + a] = lo_j
            y = lax.dynamic_update_slice(y, strip.astype(y.dtype), start)
    return y


def _reads_padding(k, o, s, d, lo, n):
    """``(o, k)`` static mask along one axis: output ``j`` of the tap at
    offset ``t`` reads padding (:func:`inside_outputs` is the complement)."""
    j = np.arange(o)[:, None]
    inside = np.array([inside_outputs(t, o, s, d, lo, n) for t in range(k)])
    return (j < inside[:, 0]) | (j > inside[:, 1])


def _runs(idx):
    """Maximal runs ``[lo, hi)`` of consecutive integers in sorted ``idx``."""
    runs: list[tuple[int, int]] = []
    for i in idx.tolist():
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _depthwise_rows(x, w, kernel, out, stride, dilation, groups, acc_dtype):
    """Large kernels: ``lax.scan`` over the first kernel axis, inner taps unrolled.

    Compile time stays bounded (one row of taps is traced) while each scan
    step still fuses ``prod(kernel[1:])`` products into one loop.
    """
    def row_sum(rows, wi):  # wi: (*kernel[1:], 1, O)
        wr = wi.reshape(-1, 1, wi.shape[-1])
        acc = None
        for j, tap in enumerate(tap_offsets(kernel[1:])):
            xs = tap_slice(rows, tap, out[1:], stride[1:], dilation[1:], first_axis=2)
            term = _depthwise_term(xs, wr[j], groups, acc_dtype)
            acc = term if acc is None else acc + term
        return acc

    return kernel_row_scan(x, w, out, stride, dilation, acc_dtype, row_sum)


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

    init = batch_zeros(x, (n, *out, w.shape[-1]), acc_dtype)
    acc, _ = lax.scan(step, init, (offsets, wt))
    return acc


def _with_kernel_tangent(kernel_tangent, doc):
    """:func:`depthwise_unrolled` as a ``custom_jvp`` whose kernel tangent is
    ``kernel_tangent(padded x, tw, stride, dilation, groups, acc_dtype,
    width)`` (``width``: the row scan's columns per step, ``rowscan.py``).

    Same values; the input tangent is the fast forward itself (its
    transpose, pad and add, is already memory-bound).  The kernel tangent is
    linear in ``tw``, so JAX transposes it for reverse mode, and every
    higher order keeps working.
    """

    @partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6, 7, 8, 9))
    def f(x, w, stride, dilation, groups, acc_dtype, pads, pad_in_loop,
          border, width):
        del width
        return depthwise_unrolled(x, w, stride, dilation, groups, acc_dtype, pads,
                                  pad_in_loop, border)

    @f.defjvp
    def _jvp(stride, dilation, groups, acc_dtype, pads, pad_in_loop,
             border, width, primals, tangents):
        x, w = primals
        tx, tw = tangents
        args = (stride, dilation, groups, acc_dtype, pads, pad_in_loop,
                border, width)
        ty = f(tx, w, *args) + kernel_tangent(pad_spatial(x, pads), tw, stride,
                                              dilation, groups, acc_dtype, width)
        return f(x, w, *args), ty

    f.__doc__ = doc
    return f


def _flat_kernel_tangent(x, tw, stride, dilation, groups, acc_dtype, width=None):
    """``sum_t slice_t(x) * tw[t]`` with every product on ``(N * prod(out), C)``."""
    del width  # no scan
    kernel = tw.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, _ = flat_taps(tw)
    o = wt.shape[-1]
    rows = x.shape[0] * int(np.prod(out))
    acc = None
    for i, tap in enumerate(tap_offsets(kernel)):
        xs = tap_slice(x, tap, out, stride, dilation).reshape(rows, x.shape[-1])
        t = _depthwise_term(xs, wt[i], groups, acc_dtype)
        acc = t if acc is None else acc + t
    return acc.reshape(x.shape[0], *out, o)


depthwise_with_fast_kernel_grad = _with_kernel_tangent(rowscan, """\
:func:`depthwise_unrolled` whose kernel tangent is ``rowscan`` (2-D, 3-D).

Reverse-mode kernel gradients accumulate elementwise in a row scan instead
of one XLA reduction per tap (``rowscan.py``).
""")

depthwise_with_flat_kernel_grad = _with_kernel_tangent(_flat_kernel_tangent, """\
:func:`depthwise_unrolled` whose kernel tangent works on matrices (1-D).

Plain autodiff reduces each tap's ``slice_t(x) * ct`` over ``(N, L)``;
XLA:CPU folds a size-1 ``N`` away and its reduction of ``(1, L, C)`` over
``L`` runs ~4x slower than the same sum over ``(L, C)`` (per-example
gradients fold to ``N = 1``: 5x slower than the batched gradient).  Here
each tap's product is taken on the slice reshaped to ``(N * L, C)``, so the
transpose sums axis 0 of a matrix.
""")
