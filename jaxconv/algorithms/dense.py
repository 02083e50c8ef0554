"""GEMM formulations of a convolution: ``out = sum over taps t of slice_t(x) @ w[t]``.

Each kernel tap contributes one strided slice of the input times that tap's
``(I, O)`` weight matrix.  The formulations differ in how they hand that sum
to the GEMM (the plan, ``plan.py``, picks one and its blocks):

* ``"dot"``: a 1x1 kernel is one (strided) slice and one GEMM;
* ``"taps"``: per-tap GEMMs summed (a ``lax.scan`` over taps beyond the
  profile's unroll limit, so compile time stays bounded);
* ``"alltaps"``: one GEMM against every tap at once (``N = T * O``), then
  one fused sum of ``T`` shifted slices of its output;
* ``"im2col"``: the patch matrix, one GEMM of depth ``T * I``;
* ``"rows"``: the last-axis taps concatenated along channels, one GEMM per
  row of taps;
* ``"wide"``: one GEMM per row of taps against all last-axis taps, then
  shifted partial sums;
* ``"shifted"``: per-tap GEMMs over whole input rows (no input slice is
  copied), their outputs shifted and summed.

``alltaps``, ``im2col``, ``rows``, ``wide`` and ``shifted`` run in the plan's row blocks
(``blocks.row_blocks``), padding each block as they read it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import (
    batch_zeros,
    common_dtype,
    contract_tap,
    flat_taps,
    matmul,
    out_spatial,
    pad_spatial,
    take,
)
from .blocks import row_blocks
from .guards import finite_or

BLOCKED = ("alltaps", "im2col", "rows", "wide", "shifted")
NAMES = ("dot", "taps", *BLOCKED)


def run(x, w, plan, precision):
    """Run the dense formulation ``plan.formulation`` on ``x`` (unpadded)."""
    p = plan.problem
    kw = dict(stride=p.stride, dilation=p.dilation, groups=p.groups,
              precision=precision, acc_dtype=p.acc_dtype)
    name = plan.formulation
    kernel_fn = None
    if plan.param("kernel_tangent") == "im2col":
        # Its transpose is one GEMM, patches^T @ ct, per block.
        def kernel_fn(x, w):
            return conv_im2col(x, w, **kw)
    elif plan.param("kernel_tangent") == "tap-gemms":
        # One 1-D image: its transpose is one 2-D GEMM per tap.
        def kernel_fn(x, w):
            return conv_tap_gemms(x, w, **kw)
    if name in BLOCKED:
        fn = {"im2col": conv_im2col, "rows": conv_rows, "wide": conv_wide,
              "alltaps": conv_alltaps, "shifted": conv_shifted}[name]
        if plan.param("tap_groups"):
            g = plan.param("tap_groups")

            def fn(x, w, **kw):
                return conv_alltaps_groups(x, w, taps_per_step=g, **kw)
        elif plan.param("row_loop"):
            def fn(x, w, **kw):
                return conv_wide_row_loop(x, w, **kw)
        tangent = None
        if plan.param("input_tangent") == "taps-scan":
            # Input gradient as a scan of per-tap GEMMs (deep enough when
            # I is not tiny): one input-sized carry instead of an unblocked
            # patch matrix.
            def tangent(x, w):
                return conv_per_tap(x, w, force_scan=True, **kw)
        return row_blocks(lambda x, w: fn(x, w, **kw), x, w, plan.param("blocks"),
                          stride=p.stride, dilation=p.dilation,
                          acc_dtype=p.acc_dtype, pads=p.pads, tangent_fn=tangent,
                          kernel_fn=kernel_fn)
    scan = plan.param("scan", False)

    def per_tap(x, w):
        return conv_per_tap(x, w, force_scan=scan, **kw)

    levels = plan.param("blocks", ())
    if levels or kernel_fn is not None:
        return row_blocks(per_tap, x, w, levels, stride=p.stride, dilation=p.dilation,
                          acc_dtype=p.acc_dtype, pads=p.pads, kernel_fn=kernel_fn)
    return per_tap(pad_spatial(x, p.pads), w)


def conv_per_tap(x, w, *, stride, dilation, groups, precision, acc_dtype,
                 force_scan=False):
    """``sum_t slice_t(x) @ w[t]``, unrolled or (``force_scan``) in a scan."""
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, _ = flat_taps(w)
    if force_scan:
        return _taps_scan(x, wt, kernel, out, stride, dilation, groups,
                          precision, acc_dtype)
    acc = None
    for i, tap in enumerate(tap_offsets(kernel)):
        xs = tap_slice(x, tap, out, stride, dilation)
        term = contract_tap(xs, wt[i], groups, precision, acc_dtype)
        acc = term if acc is None else acc + term
    return acc


def _taps_scan(x, wt, kernel, out, stride, dilation, groups, precision, acc_dtype):
    n, c = x.shape[0], x.shape[-1]
    extent = tuple((o - 1) * s + 1 for o, s in zip(out, stride))
    offsets = jnp.asarray(
        np.array(list(tap_offsets(kernel)), dtype=np.int32).reshape(-1, len(kernel))
        * np.array(dilation, dtype=np.int32)
    )
    steps = tuple(slice(None, None, s) for s in stride)

    def step(acc, tap):
        offset, wk = tap
        zero = jnp.zeros((), jnp.int32)
        start = (zero, *(offset[i] for i in range(len(kernel))), zero)
        xs = lax.dynamic_slice(x, start, (n, *extent, c))[(slice(None), *steps)]
        return acc + contract_tap(xs, wk, groups, precision, acc_dtype), None

    init = batch_zeros(x, (n, *out, wt.shape[-1]), acc_dtype)
    acc, _ = lax.scan(step, init, (offsets, wt))
    return acc


def conv_alltaps(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Dense stride-1 kernels: one GEMM against every tap at once, then shifts.

    ``y = x @ W`` with ``W (I, T*O)`` gives every tap's contribution at every
    input position; output ``p`` sums ``y[p + tap*dilation, tap]`` over the
    taps: one GEMM and one fused sum of ``T`` shifted slices, no patch tensor.
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    i, o = w.shape[-2:]
    wt, t = flat_taps(w)
    wm = jnp.moveaxis(wt, 0, 1).reshape(i, t * o)
    y = matmul(x, wm, precision, acc_dtype)
    y = y.reshape(*y.shape[:-1], t, o)
    acc = None
    for k, tap in enumerate(tap_offsets(kernel)):
        start = (0, *(a * d for a, d in zip(tap, dilation)), k, 0)
        limit = (y.shape[0], *(a * d + n for a, d, n in zip(tap, dilation, out)),
                 k + 1, o)
        term = lax.slice(y, start, limit).reshape(y.shape[0], *out, o)
        acc = term if acc is None else acc + term
    return acc


def conv_alltaps_groups(x, w, *, taps_per_step, stride, dilation, groups, precision,
                        acc_dtype):
    """1-D ``alltaps`` in a loop over groups of ``taps_per_step`` taps.

    For a layer whose all-tap GEMM output is too large to hold at once: each
    step one GEMM against its group's taps ``(I, g * O)`` and that group's
    shifted sum added into the carried output, so one group's product is
    live at a time; the last ``T mod g`` taps run after the loop.  Only the
    kernel's own taps are multiplied (no zero taps pad the groups), so
    NaN/Inf stay in their windows.
    """
    del groups
    (t,), (d,) = w.shape[:-2], dilation
    (n_out,) = out_spatial(x.shape, (t,), stride, dilation)
    n, _, i = x.shape
    o = w.shape[-1]
    g = taps_per_step

    def group(w_group, first):
        k = w_group.shape[0]
        y = matmul(x, jnp.moveaxis(w_group, 0, 1).reshape(i, k * o), precision,
                   acc_dtype).reshape(n, x.shape[1], k, o)
        acc = None
        for j in range(k):
            term = lax.dynamic_slice_in_dim(y[:, :, j], (first + j) * d, n_out, 1)
            acc = term if acc is None else acc + term
        return acc

    steps = t // g

    def step(acc, args):
        first, w_group = args
        return acc + group(w_group, first), None

    w_steps = w[:steps * g].reshape(steps, g, i, o)
    firsts = jnp.arange(steps, dtype=jnp.int32) * g
    init = batch_zeros(x, (n, n_out, o), acc_dtype)
    acc = lax.scan(step, init, (firsts, w_steps))[0]
    if steps * g < t:
        acc = acc + group(w[steps * g:], steps * g)
    return acc


def conv_im2col(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """The patch matrix, then one GEMM of depth ``T * I``.

    For few input channels (per-tap GEMMs of depth ``I = 3``, an RGB stem,
    run far below the machine's GEMM rate) and strided kernels (one deep
    GEMM instead of ``T`` strided ones whose outputs XLA keeps live
    together).  The patches ``(..., T, I)`` are built by *stacking* the tap
    slices on a new axis (XLA copies each slice as a block; concatenating on
    the channel axis instead costs a select per element) and contracted with
    the ``(T * I, O)`` kernel.  Exact per window (no structural zeros), so
    NaN/Inf stay local; the row blocks keep the patch matrix within budget.
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    cols = patch_matrix(x, kernel, out, stride, dilation)
    return matmul(cols, w.reshape(-1, w.shape[-1]), precision, acc_dtype)


def patch_matrix(x, kernel, out, stride, dilation):
    """``(N, *out, T * C)``: every tap's input values, in the kernel's order.

    In 2-D in two stages: the last axis's taps first, over every row of the
    input (``(N, H, out[-1], k_w * C)``), then the row taps of that.  One
    stage of ``T`` slices copies ``C`` values per element (12 bytes for an
    RGB stem, at a stride); the second stage's elements are ``k_w * C``
    values long: RGB stems ran 1.2-1.7x faster forward and up to 1.3x in
    the gradient, other layers the same or a little faster.  In 3-D the
    extra pass over every ``(D, H)`` row cost up to 1.5x (BENCHMARKS.md):
    one stage, as in 1-D.
    """
    nd = len(kernel)
    if nd != 2:
        cols = jnp.stack([tap_slice(x, tap, out, stride, dilation)
                          for tap in tap_offsets(kernel)], axis=-2)
        return cols.reshape(*cols.shape[:-2], -1)
    rows = jnp.stack([tap_slice(x, (0, j), (x.shape[1], out[1]), (1, stride[1]),
                                (1, dilation[1]))
                      for j in range(kernel[1])], axis=-2)
    rows = rows.reshape(*rows.shape[:-2], -1)
    cols = jnp.stack([tap_slice(rows, (i, 0), out, (stride[0], 1), (dilation[0], 1))
                      for i in range(kernel[0])], axis=-2)
    return cols.reshape(*cols.shape[:-2], -1)


def conv_tap_gemms(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """One 1-D image, stride 1: one 2-D GEMM per tap on row ranges of its matrix.

    Computes ``sum_k x[0, k*d : k*d + L_out] @ w[k]``: ``x[0]`` is an
    ``(L, I)`` matrix and each tap's rows are a contiguous block of it.  The
    plans use it only as the kernel tangent of the 1-D forms at batch 1
    (``kernel_tangent="tap-gemms"``), for its transpose: one GEMM per tap,
    ``dw[k] = rows_k^T @ ct``, on 2-D operands.  The patch form's GEMM, or
    the same GEMMs on ``(1, L, I)`` arrays, ran 1.3-2x slower on XLA:CPU
    (BENCHMARKS.md, "1-D dense layers re-planned").
    """
    del groups
    (k,), (d,) = w.shape[:-2], dilation
    if x.ndim != 3 or not (isinstance(x.shape[0], int) and x.shape[0] == 1) \
            or tuple(stride) != (1,):
        raise ValueError(f"tap GEMMs need one 1-D image and stride 1, got input "
                         f"{x.shape} and stride {tuple(stride)}.")
    rows = x[0]
    n_out = rows.shape[0] - (k - 1) * d
    acc = None
    for j in range(k):
        term = matmul(lax.slice_in_dim(rows, j * d, j * d + n_out), w[j],
                      precision, acc_dtype)
        acc = term if acc is None else acc + term
    return acc[None]


def kernel_grad_tap_scan(x, ct, plan, precision):
    """The kernel gradient of a stride-1 dense plan: a scan of per-tap 2-D GEMMs.

    ``dw[t] = X_t^T @ C`` where ``X_t`` is tap ``t``'s window of the padded
    input (``x[:, a*d : a*d + out]`` along each axis for tap offset ``a``)
    of every image flattened to ``(N * prod(out), I)`` and ``C`` the
    cotangent flattened to ``(N * prod(out), O)``: one copy of the tap's
    window and one 2-D GEMM contracting over all of it.  The scan keeps one
    tap's copy live at a time.  From the profile's
    ``tap_scan_transpose_min_i`` input channels on, the padded input is
    transposed once to ``(I, N, *S)`` and each tap's ``(I, N * prod(out))``
    window multiplies the cotangent as a plain GEMM: with 128-256 channels
    the transposed-operand GEMM ran at 0.6-0.8 of lax's speed, this at
    0.85-0.9 (with 32-80 channels it is slower).  ``x`` is the unpadded
    input (the plan's padding is applied here); returns the kernel
    ``(*K, I, O)`` in the plan's accumulation dtype.  Run by the kernel
    gradient (``rhs_t``) of the ``jaxconv_conv`` primitive for plans with
    ``kernel_grad="tap-scan"``.
    """
    p = plan.problem
    if not p.stride1 or p.groups != 1 or p.transposed:
        raise ValueError(f"a tap-scan kernel gradient needs a stride-1 dense "
                         f"problem, got kernel {p.w_shape}, stride {p.stride}, "
                         f"{p.groups} groups and input dilation {p.lhs_dilation}.")
    kernel, out = p.kernel, p.out_spatial
    xp = pad_spatial(x, p.pads)
    n, i, o = xp.shape[0], xp.shape[-1], ct.shape[-1]
    xp, rows_ct = common_dtype(xp, ct.reshape(-1, o))
    offsets = jnp.asarray(np.array(list(tap_offsets(kernel)), np.int32).reshape(
        -1, p.nd) * np.array(p.dilation, np.int32))
    zero = jnp.zeros((), jnp.int32)

    if i >= plan.profile.tap_scan_transpose_min_i:
        xt = jnp.moveaxis(xp, -1, 0)  # (I, N, *S): each tap's window as columns

        def step(_, off):
            start = (zero, zero, *(off[a] for a in range(p.nd)))
            cols = lax.dynamic_slice(xt, start, (i, n, *out)).reshape(i, -1)
            return None, lax.dot_general(cols, rows_ct, (((1,), (0,)), ((), ())),
                                         precision=precision,
                                         preferred_element_type=p.acc_dtype)
    else:
        def step(_, off):
            start = (zero, *(off[a] for a in range(p.nd)), zero)
            rows = lax.dynamic_slice(xp, start, (n, *out, i)).reshape(-1, i)
            return None, lax.dot_general(rows, rows_ct, (((0,), (0,)), ((), ())),
                                         precision=precision,
                                         preferred_element_type=p.acc_dtype)

    gw = lax.scan(step, None, offsets)[1]
    return gw.reshape(*kernel, i, o)


def hankel_block(out_len, dilation, blocks):
    """The block-Hankel kernel gradient's block length: the first of the
    positive ``blocks`` whose ``dilation`` phases it cuts into whole blocks
    (``dilation * B`` divides ``out_len``: no cotangent row is padded),
    else the first (the padded rows then need the guard of
    :func:`kernel_grad_hankel`); None where there is no positive block."""
    usable = [b for b in blocks if b > 0]
    return next((b for b in usable if out_len % (dilation * b) == 0),
                usable[0] if usable else None)


def kernel_grad_hankel(x, ct, plan, precision, block):
    """The kernel gradient of a 1-D dense stride-1 plan as one GEMM.

    ``dw[t] = sum_l xp[l + t*d] (outer) ct[l]`` over every image's output
    positions ``l``.  With dilation ``d`` the positions fall into ``d``
    phases ``l = q*d + p`` that never meet (tap ``t`` pairs ``ct[q*d + p]``
    with ``xp[(q + t)*d + p]``), so the cotangent and the input are read
    phase-major, ``d`` undilated sequences per image.  Cut each sequence's
    positions into blocks of ``B`` (``block``): block ``r``'s cotangent
    rows ``c[rB : rB + B]`` pair with the ``B + T - 1`` input rows
    ``a[rB : rB + B + T - 1]``, so ``G = X2^T @ C2`` with ``X2`` those
    input rows of every block side by side (an ``(N * d * R, (B + T - 1) *
    I)`` block-Hankel matrix, one copy of about ``(B + T - 1) / B`` times
    the input) and ``C2`` the cotangent as ``(N * d * R, B * O)`` (a view
    when ``d = 1``) is one GEMM of depth ``N * d * R``, and ``dw[t] =
    sum_j G[j + t, :, j, :]``.  ``G`` holds ``(B + T - 1) / T`` times the
    products the kernel needs (those with ``m - j`` outside ``[0, T)`` are
    dropped), but as one GEMM of ``(B + T - 1) * I`` by ``B * O`` it runs
    several times the rate of the per-tap GEMMs ``(I, N * L) @ (N * L,
    O)`` of few channels, whose small outputs XLA:CPU computes far below
    its GEMM rate (BENCHMARKS.md).

    Every product that reaches ``dw`` is one lax forms, except where a
    phase's length is not a whole number of blocks: its cotangent is
    padded with zero rows, which meet the input rows from ``L_out`` on (a
    zero times an Inf there would be a NaN that lax does not form), so then
    the GEMM runs only when those ``(T - 1) * d`` rows of every image are
    finite, and the tap scan (:func:`kernel_grad_tap_scan`) otherwise.
    ``x`` is the unpadded input; returns ``(T, I, O)`` in the plan's
    accumulation dtype.  Run by the kernel gradient of the ``jaxconv_conv``
    primitive for plans with ``kernel_grad="hankel"``.
    """
    p = plan.problem
    (t,), (l_out,), (d,) = p.kernel, p.out_spatial, p.dilation
    if (p.nd != 1 or not p.stride1 or p.groups != 1 or p.transposed
            or not block > 0):
        raise ValueError(f"a block-Hankel kernel gradient needs a 1-D dense "
                         f"stride-1 problem and a positive block, got kernel "
                         f"{p.w_shape}, stride {p.stride}, {p.groups} groups, "
                         f"input dilation {p.lhs_dilation} and block {block}.")
    xp = pad_spatial(x, p.pads)
    i, o, l_in = xp.shape[-1], ct.shape[-1], xp.shape[1]
    xp, ct = common_dtype(xp, ct)
    # per phase: R blocks of cotangent rows, and the next ``ext`` blocks of
    # input rows cover the reach of the taps
    r, ext = -(-l_out // (d * block)), -(-(t - 1) // block)
    padded = r * block * d - l_out

    def gemm():
        zero = jnp.zeros((), xp.dtype)
        # input zeros past the padded input pair only with dropped products
        a = lax.pad(xp, zero, ((0, 0, 0), (0, (r + ext) * block * d - l_in, 0),
                               (0, 0, 0)))
        c = lax.pad(ct, zero, ((0, 0, 0), (0, padded, 0), (0, 0, 0)))
        if d > 1:  # phase-major: (N, d, positions, C)
            a = jnp.swapaxes(a.reshape(a.shape[0], -1, d, i), 1, 2)
            c = jnp.swapaxes(c.reshape(c.shape[0], -1, d, o), 1, 2)
        ab = a.reshape(-1, r + ext, block, i)
        parts = [ab[:, e:e + r] for e in range(ext)]
        parts.append(ab[:, ext:ext + r, :t - 1 - (ext - 1) * block])
        x2 = lax.concatenate(parts, 2)  # (N * d, R, B + T - 1, I)
        g = lax.dot_general(x2.reshape(-1, (block + t - 1) * i),
                            c.reshape(-1, block * o), (((0,), (0,)), ((), ())),
                            precision=precision, preferred_element_type=p.acc_dtype)
        g = g.reshape(block + t - 1, i, block, o)
        gw = None
        for j in range(block):
            term = g[j:j + t, :, j, :]
            gw = term if gw is None else gw + term
        return gw

    if not padded:
        return gemm()
    # the padded cotangent rows meet the input rows from ``l_out`` on
    return finite_or(xp[:, l_out:], gemm,
                     lambda: kernel_grad_tap_scan(x, ct, plan, precision),
                     plan.profile.branch_free)


def conv_rows(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Row taps: the last-axis taps concatenated along channels, one GEMM per row.

    Raises the GEMM depth from ``I`` to ``k_w * I`` (for few input channels)
    while the patch tensor is only one kernel row's worth.
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    kl = kernel[-1]
    i, o = w.shape[-2:]
    lead_k = kernel[:-1]
    wr = w.reshape(*lead_k, kl * i, o)
    acc = None
    for tap in tap_offsets(lead_k):
        cat = lax.concatenate(
            [tap_slice(x, (*tap, j), out, stride, dilation) for j in range(kl)],
            x.ndim - 1,
        )
        term = matmul(cat, take(wr, tap), precision, acc_dtype)
        acc = term if acc is None else acc + term
    return acc


def conv_wide(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Dense kernels: one GEMM per row of taps, over the whole padded width.

    For each tap of the leading kernel axes, the input rows it touches are
    multiplied by the ``(I, k_w * O)`` matrix of all last-axis taps at once;
    the ``k_w`` partial outputs are then shifted along the last axis and
    added.  Compared with per-tap GEMMs this multiplies ``k_w`` times fewer,
    ``k_w`` times wider matrices; compared with im2col it builds no patch
    tensor.
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    kl, dl = kernel[-1], dilation[-1]
    i, o = w.shape[-2:]
    width = x.shape[-2]
    lead_k = kernel[:-1]
    wl = jnp.moveaxis(w, len(kernel) - 1, -2).reshape(*lead_k, i, kl * o)
    acc = None
    for tap in tap_offsets(lead_k):
        rows = tap_slice(x, (*tap, 0), (*out[:-1], width), (*stride[:-1], 1),
                         (*dilation[:-1], 1))  # (N, *out[:-1], W, I)
        y = matmul(rows, take(wl, tap), precision, acc_dtype)
        y = y.reshape(*y.shape[:-1], kl, o)
        for j in range(kl):
            start = [0] * y.ndim
            limit = list(y.shape)
            start[-3], limit[-3] = j * dl, j * dl + out[-1]
            start[-2], limit[-2] = j, j + 1
            term = lax.slice(y, start, limit).reshape(*y.shape[:-3], out[-1], o)
            acc = term if acc is None else acc + term
    return acc


def conv_wide_row_loop(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """2-D :func:`conv_wide` unblocked, in a loop over the kernel's rows.

    For a layer whose all-tap GEMM output is too large to hold at once but
    one kernel row's is not: each step multiplies the input rows that
    kernel row reads (every image, the whole padded width) by that row's
    taps ``(I, k_w * O)`` in one GEMM and adds its ``k_w`` shifted partial
    outputs into the carried output; one row's product is live at a time.
    Stride 1 along the last axis.
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    (kh, kl), (sh, _), (dh, dl) = kernel, stride, dilation
    i, o = w.shape[-2:]
    n, width = x.shape[0], x.shape[-2]
    extent = (out[0] - 1) * sh + 1
    wl = jnp.moveaxis(w, 1, 2).reshape(kh, i, kl * o)

    def step(acc, args):
        first, w_row = args
        rows = lax.dynamic_slice_in_dim(x, first, extent, 1)[:, ::sh]
        y = matmul(rows, w_row, precision, acc_dtype).reshape(n, out[0], width, kl, o)
        for j in range(kl):
            acc = acc + lax.slice_in_dim(y[..., j, :], j * dl, j * dl + out[1], axis=2)
        return acc, None

    firsts = jnp.arange(kh, dtype=jnp.int32) * dh
    init = batch_zeros(x, (n, *out, o), acc_dtype)
    return lax.scan(step, init, (firsts, wl))[0]


def conv_shifted(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Per-tap GEMMs over whole input rows, their outputs shifted and summed.

    Like :func:`conv_wide`, but one GEMM per last-axis tap
    (``rows @ w[..., j, :, :]``, ``N = O``) instead of one against all of
    them: the sum then reads ``k_w`` contiguous outputs instead of strided
    slices of an interleaved ``(..., k_w, O)`` one, and no input slice is
    copied for the GEMMs (along the last axis they read the rows whole).
    Stride 1 along the last axis.
    """
    del groups
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    kl, dl = kernel[-1], dilation[-1]
    width = x.shape[-2]
    lead_k = kernel[:-1]
    acc = None
    for tap in tap_offsets(lead_k):
        rows = tap_slice(x, (*tap, 0), (*out[:-1], width), (*stride[:-1], 1),
                         (*dilation[:-1], 1))  # (N, *out[:-1], W, I)
        for j in range(kl):
            y = matmul(rows, take(w, (*tap, j)), precision, acc_dtype)
            term = lax.slice_in_dim(y, j * dl, j * dl + out[-1], axis=y.ndim - 2)
            acc = term if acc is None else acc + term
    return acc
