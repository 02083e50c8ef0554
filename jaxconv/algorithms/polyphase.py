"""Transposed (lhs-dilated) convolutions as sub-pixel phases.

A stride-1 convolution of an lhs-dilated input multiplies most taps by the
inserted zeros.  Split by output phase, each phase is an ordinary
convolution of the *undilated* input with a sub-kernel (:func:`run`), so no
inserted zero is ever stored or multiplied.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._taps import tap_offsets, valid_out_size
from ._common import batch_zeros, contract_tap, matmul, take
from .guards import finite_or
from .tapgemm import kernel_grads_by_cotangent


def applies(problem) -> bool:
    """An lhs-dilated (transposed), stride-1 problem with a non-empty input."""
    p = problem
    return p.transposed and p.stride1 and 0 not in p.x_shape and 0 not in p.w_shape


def phase_form(taps, groups, in_per_group, inexact, profile) -> str:
    """How one phase of ``taps`` taps is computed.

    ``"scan"`` (beyond the unroll limit), ``"gemm"`` (one GEMM against all
    taps, for dense phases of at most ``profile.phase_gemm_max_taps`` taps),
    ``"im2col"`` (dense, integer weights), ``"im2col|gemm"`` (dense float
    weights: phase patches when every weight is finite, else ``gemm``), or
    ``"taps"`` (per-tap products on the real inputs).
    """
    if taps > profile.unroll_limit:
        return "scan"
    if groups == 1 and in_per_group > 1:
        if taps <= profile.phase_gemm_max_taps:
            return "gemm"
        return "im2col|gemm" if inexact else "im2col"
    return "taps"


def phase_specs(problem):
    """The sub-pixel phases of a transposed problem, from its shapes alone.

    Returns ``(lo_out, per_axis, qmax)``: the output sizes, for each axis and
    phase ``r`` either ``(None, Q)`` (no tap meets a real input) or
    ``((tap start, stop, step), (lo, hi) padding, dilation, Q)``, and the
    largest phase size per axis.
    """
    p = problem
    dil_shape = [(n - 1) * s + 1 for n, s in zip(p.x_shape[1:-1], p.lhs_dilation)]
    lo_out = [valid_out_size(n + lo + hi, k, 1, d)
              for n, (lo, hi), k, d in zip(dil_shape, p.pads, p.kernel, p.dilation)]
    per_axis = []
    for a in range(p.nd):
        s, (lo, _), k, d = p.lhs_dilation[a], p.pads[a], p.kernel[a], p.dilation[a]
        n, total = p.x_shape[1 + a], lo_out[a]
        phases = []
        for r in range(s):
            q = -(-(total - r) // s) if total > r else 0
            taps = [t for t in range(k) if (r + t * d - lo) % s == 0]
            if not taps or q == 0:
                phases.append((None, q))
                continue
            step = taps[1] - taps[0] if len(taps) > 1 else 1
            e0 = (r + taps[0] * d - lo) // s
            d2 = step * d // s
            span = d2 * (len(taps) - 1) + 1
            pad = (-e0, q - 1 + e0 + span - n)
            phases.append(((taps[0], taps[-1] + 1, step), pad, d2, q))
        per_axis.append(phases)
    qmax = [-(-t // s) for t, s in zip(lo_out, p.lhs_dilation)]
    return lo_out, per_axis, qmax


def depth_to_space_applies(problem, profile) -> bool:
    """Whether every phase is one tap over the whole undilated input, and
    the kernel is no more than ``profile.kernel_bound_ratio`` times the
    input's bytes.

    A dense transposed conv whose kernel equals its stride on every axis
    (U-Net's 2x2 stride-2 upsampling, no padding or cropping): output
    ``q*s + r`` is ``x[q] @ w[tap(r)]`` for exactly one tap, and every
    ``x[q]`` is real, so no padding zero meets a weight.  The one GEMM
    needs the taps side by side, a copy of the kernel: where the kernel
    outweighs the input (the deepest upsampling layers at batch 1), the
    per-phase GEMMs that read it in place are faster.
    """
    p = problem
    if (p.groups != 1 or not profile.phase_depth_to_space
            or p.w_bytes > profile.kernel_bound_ratio * p.in_bytes):
        return False
    lo_out, per_axis, _ = phase_specs(p)
    for a, phases in enumerate(per_axis):
        n = p.x_shape[1 + a]
        if lo_out[a] != n * p.lhs_dilation[a]:
            return False
        for sp in phases:
            if sp[0] is None:
                return False
            taps, pad, _, q = sp
            if len(range(*taps)) != 1 or pad != (0, 0) or q != n:
                return False
    return True


def one_gemm_applies(problem, profile) -> bool:
    """Whether every phase's taps run as one GEMM over the undilated input.

    A dense (one group, more than one input channel) transposed conv whose
    kernel is no more than ``profile.kernel_bound_ratio`` times the input's
    bytes, at most ``profile.unroll_limit`` taps (each tap's product is a
    slice of the GEMM's output, summed unrolled), and whose product
    ``x @ [w_0 ... w_T]`` (``N * prod(n) * T * O`` values) is at most
    ``profile.phase_one_gemm_max_bytes``, where some phase has more than
    ``profile.phase_gemm_max_taps`` taps: such phases build patches (a
    copy of ``T_r`` input slices each) for a GEMM of only ``O`` columns;
    one GEMM of ``T * O`` columns reads the input once and copies nothing
    before it (the column-to-image form of a transposed conv).
    """
    p = problem
    if p.groups != 1 or p.in_per_group < 2 or p.taps > profile.unroll_limit:
        return False
    if max(phase_taps(p), default=0) <= profile.phase_gemm_max_taps:
        return False  # every phase is already one GEMM over the whole input
    if p.w_bytes > profile.kernel_bound_ratio * p.in_bytes:
        return False
    return one_gemm_bytes(p) <= profile.phase_one_gemm_max_bytes


def one_gemm_values(problem) -> int:
    """How many products of every tap with the real inputs there are:
    ``N * prod(n) * T * O`` (:func:`one_gemm_applies`)."""
    p = problem
    return p.batch * math.prod(p.x_shape[1:-1]) * p.taps * p.out_channels


def one_gemm_bytes(problem) -> int:
    """Bytes of those products, in the accumulation dtype."""
    return one_gemm_values(problem) * problem.acc_itemsize


def phase_taps(problem):
    """The number of taps of every non-empty phase, in phase order."""
    _, per_axis, _ = phase_specs(problem)
    out = []
    for combo in np.ndindex(*problem.lhs_dilation):
        specs = [per_axis[a][r] for a, r in enumerate(combo)]
        if all(sp[0] is not None for sp in specs):
            out.append(math.prod(len(range(*sp[0])) for sp in specs))
    return out


def run(x, w, plan, precision):
    """Stride-1 conv of an lhs-dilated input as ``prod(s)`` sub-pixel convs.

    (Transposed convolutions, arXiv 1603.07285 / 1609.05158.)  Along an axis
    with lhs dilation ``s``, output ``o = q*s + r`` only meets the taps ``k``
    with ``(r + k*D - lo) % s == 0``; those taps form a sub-kernel (every
    ``s/gcd(D, s)``-th tap, dilation ``D/gcd(D, s)``) applied to the
    *undilated* input with its own padding.  Each phase is a sum of per-tap
    products computed on the real inputs only, the *contributions* zero-padded
    (``_phase_taps``); the phases are interleaved at the end.  Neither an
    inserted zero nor a padding zero is ever multiplied by a non-finite
    weight (``_phase_im2col`` multiplies padding zeros only under a
    finite-weights ``lax.cond``), so a NaN/Inf weight only reaches the
    outputs where it meets a real input, as in XLA.  Returns ``acc_dtype``.
    """
    p = plan.problem
    if plan.param("depth_to_space"):
        lo_out, per_axis, _ = phase_specs(p)
        if 0 not in lo_out:
            return _depth_to_space(x, w, per_axis, p.lhs_dilation, precision,
                                   p.acc_dtype)
    return _phases(x, w, p, precision, plan.profile,
                   one_gemm=bool(plan.param("one_gemm")))


def _phases(x, w, p, precision, profile, patch_form=None, one_gemm=False):
    """Every sub-pixel phase of problem ``p`` (:func:`_phase_taps`, in the
    form :func:`phase_form` names; ``patch_form``, if given, in place of
    ``"im2col|gemm"``; with ``one_gemm``, slices of one GEMM against every
    tap, :func:`_phase_sums`), interleaved."""
    nd = p.nd
    acc_dtype = p.acc_dtype
    lo_out, per_axis, qmax = phase_specs(p)
    n_b, o = x.shape[0], w.shape[-1]
    if 0 in lo_out:
        return jnp.zeros((n_b, *lo_out, o), acc_dtype)
    if one_gemm:  # every real input times every tap of the whole kernel
        products = _tap_products(x, w.reshape(-1, *w.shape[-2:]), precision, acc_dtype)
    ys = []
    for combo in np.ndindex(*p.lhs_dilation):
        specs = [per_axis[a][r] for a, r in enumerate(combo)]
        if any(sp[0] is None for sp in specs):
            y = jnp.zeros((n_b, *(sp[-1] for sp in specs), o), acc_dtype)
        elif one_gemm:
            y = _phase_sums(products, specs, p.kernel, n_b, o, acc_dtype)
        else:
            sub = w[tuple(slice(*sp[0]) for sp in specs)]
            y = _phase_taps(x, sub, specs, p.groups, precision, acc_dtype, profile,
                            patch_form)
        pads = [(0, 0)] + [(0, qm - sp[-1]) for qm, sp in zip(qmax, specs)] + [(0, 0)]
        ys.append(jnp.pad(y, pads))
    # Interleave by stacking each phase axis right after its Q axis, innermost
    # axis first: (N, Q_1, s_1, ..., Q_d, s_d, O), free reshapes away from
    # the output (XLA writes the phase sums straight into it).
    for a in reversed(range(nd)):
        s_a = p.lhs_dilation[a]
        ys = [jnp.stack(ys[i:i + s_a], axis=2 + a) for i in range(0, len(ys), s_a)]
    y = ys[0]
    for a in range(nd):  # merge (Q_a, s_a) one axis at a time (sharded reshapes)
        y = y.reshape(*y.shape[:1 + a], y.shape[1 + a] * y.shape[2 + a],
                      *y.shape[3 + a:])
    return y[(slice(None), *(slice(0, t) for t in lo_out))]


def kernel_grad(x, ct, problem, precision, box_min_taps=0):
    """The kernel gradient of a transposed (lhs-dilated, stride-1,
    single-group) problem, every tap at once against the cotangent's
    strided slices (``kernel_grad="cotangent"``).

    ``dw[t] = sum_q x[q] (outer) ct[lo + q*s - t*d]`` over the *undilated*
    input elements ``q`` whose output exists: one GEMM over every image's
    positions (:func:`tapgemm.kernel_grads_by_cotangent`, one "example").
    The transpose of a ``"gemm"`` phase is the same product phase by phase,
    but it meets every input element with every tap's cotangent, zero
    where the tap pairs the element with no output, so a NaN or Inf at the
    border would reach taps that never read it; here the border's products
    are added tap by tap, where each tap pairs them.

    Args:
      x: the input ``(N, *S, I)``, neither padded nor dilated.
      ct: the cotangent ``(N, *P, O)``.
      problem: the plan's problem (kernel, padding, dilations).
      box_min_taps: the profile's ``cotangent_box_min_taps`` (0: never
        group the taps by box).

    Returns:
      ``(*K, I, O)`` in ``problem.acc_dtype``.
    """
    p = problem
    return kernel_grads_by_cotangent(x[None], ct[None], p.kernel, p.pads, p.dilation,
                                     precision, p.acc_dtype, p.lhs_dilation,
                                     box_min_taps)[0]


def taps_kernel_grad_guarded(problem, profile) -> bool:
    """Whether :func:`kernel_grad_by_taps` runs the phases' patch GEMMs when
    the cotangent is finite (fewer input positions than
    ``profile.phase_taps_kernel_grad_min_positions``)."""
    p = problem
    positions = p.batch * math.prod(p.x_shape[1:-1])
    return positions < profile.phase_taps_kernel_grad_min_positions


def kernel_grad_by_taps(x, ct, w_dtype, problem, precision, profile):
    """The kernel gradient of a transposed (lhs-dilated, stride-1) problem
    whose phases build patches (``"im2col|gemm"``): the transpose of the
    phases' per-tap products (``kernel_grad="taps"``).

    Each tap of each phase contributes ``x[real range]^T @ ct[its outputs]``:
    one GEMM over the positions the tap pairs, with no patch matrix, and
    every product pairs a real input with an output it reaches, so a NaN or
    Inf (in the input or the cotangent) reaches the entries lax's gradient
    has it in.  The transpose of the phases' patch GEMMs instead builds
    the patches again (``T * I`` values per input position, stacked along
    the minor axis: XLA:CPU copies them at a fraction of its memory
    bandwidth) and meets their padding zeros with the cotangent, so a
    non-finite cotangent would spread.  Below
    ``profile.phase_taps_kernel_grad_min_positions`` input positions, where
    the one patch GEMM per phase is the faster form, it runs when the
    cotangent is finite (:func:`taps_kernel_grad_guarded`).

    Args:
      x: the input ``(N, *S, I)``, neither padded nor dilated.
      ct: the cotangent ``(N, *P, O)``.
      w_dtype: the kernel's dtype.
      problem: the plan's problem (its ``w_shape`` is the kernel's).
      precision: the dot precision.
      profile: the plan's profile.

    Returns:
      ``problem.w_shape`` in ``problem.acc_dtype``.
    """
    ct = ct.astype(problem.acc_dtype)
    kernel = jax.ShapeDtypeStruct(problem.w_shape, w_dtype)

    def transpose(form):
        def forward(w):  # the phases that build patches in ``form``
            return _phases(x, w, problem, precision, profile, patch_form=form)
        return jax.linear_transpose(forward, kernel)(ct)[0].astype(problem.acc_dtype)

    if taps_kernel_grad_guarded(problem, profile):
        return finite_or(ct, lambda: transpose("im2col"), lambda: transpose("taps"),
                         profile.branch_free)
    return transpose("taps")


def _depth_to_space(x, w, per_axis, s, precision, acc_dtype):
    """Phases of one tap each (:func:`depth_to_space_applies`) as one GEMM.

    ``x (N, *n, I) @ [w_r for every phase r] (I, P*O)`` computes every
    phase at once, then a transpose interleaves the phases into the output
    (``depth-to-space``): one GEMM ``P`` times wider than each phase's, the
    input read once instead of ``P`` times.
    """
    nd = len(s)
    o = w.shape[-1]
    n_sp = x.shape[1:-1]
    cols = [take(w, tuple(per_axis[a][r][0][0] for a, r in enumerate(combo)))
            for combo in np.ndindex(*s)]  # one (I, O) tap per phase
    w_all = jnp.stack(cols, axis=1)
    y = matmul(x, w_all.reshape(w_all.shape[0], -1), precision, acc_dtype)
    y = y.reshape(*y.shape[:-1], *s, o)  # (N, *n, *s, O)
    perm = (0, *(v for a in range(nd) for v in (1 + a, 1 + nd + a)), 1 + 2 * nd)
    y = jnp.transpose(y, perm)  # (N, n_1, s_1, ..., n_d, s_d, O)
    for a in range(nd):  # merge (n_a, s_a) one axis at a time (sharded reshapes)
        y = y.reshape(*y.shape[:1 + a], n_sp[a] * s[a], *y.shape[3 + a:])
    return y


def _phase_taps(x, sub, specs, groups, precision, acc_dtype, profile,
                patch_form=None):
    """One sub-pixel phase: ``sum_t pad(x[real range of t] @ sub[t])``.

    ``specs[a] = (tap slice, (lo, hi) padding, dilation, Q)`` per spatial axis.
    Tap ``t`` at output ``j`` reads input ``j + e0 + t*D`` (``e0 = -lo``); only
    the outputs whose input is real are computed, the rest of the
    contribution is zero padding (never a product with a padding zero).
    Kernels beyond the profile's unroll limit run in a ``lax.scan`` over a
    padded input whose out-of-range products are dropped by a ``where``
    (``phase_form`` names the choice; ``patch_form``, if given, replaces
    its ``"im2col|gemm"``: ``"im2col"`` or ``"taps"``).
    """
    n_sp = x.shape[1:-1]
    e0 = [-sp[1][0] for sp in specs]
    d2 = [sp[2] for sp in specs]
    q = [sp[3] for sp in specs]
    kernel = sub.shape[:-2]
    o = sub.shape[-1]
    wt = sub.reshape(-1, *sub.shape[-2:])
    form = phase_form(wt.shape[0], groups, wt.shape[-2],
                      jnp.issubdtype(wt.dtype, jnp.inexact), profile)
    if form == "im2col|gemm" and patch_form is not None:
        form = patch_form
    if form == "scan":
        return _phase_taps_scan(x, wt, kernel, e0, d2, q, groups, precision, acc_dtype)
    args = (x, wt, kernel, e0, d2, q, precision, acc_dtype)
    if form == "gemm":
        return _phase_gemm(*args)
    if form == "im2col":
        return _phase_im2col(*args)
    if form == "im2col|gemm":
        return finite_or(wt, lambda: _phase_im2col(*args), lambda: _phase_gemm(*args),
                         profile.branch_free)
    acc = None
    for k, ranges, pads in _tap_ranges(kernel, e0, d2, q, n_sp):
        xs = x[(slice(None), *(slice(lo, hi) for lo, hi in ranges))]
        acc = _add_padded(acc, contract_tap(xs, wt[k], groups, precision, acc_dtype),
                          pads)
    if acc is None:
        return jnp.zeros((x.shape[0], *q, o), acc_dtype)
    return acc


def _tap_ranges(kernel, e0, d2, q, n_sp):
    """``(tap index, input ranges, output pads)`` of every tap with real inputs.

    Tap ``t`` at phase output ``j`` reads input ``j + e0 + t*D``; only the
    outputs ``[lo, hi)`` whose input exists are computed (input range
    ``[off + lo, off + hi)``), the rest is zero padding ``(lo, q - hi)``.
    """
    for k, tap in enumerate(tap_offsets(kernel)):
        ranges, pads = [], []
        for a in range(len(kernel)):
            off = e0[a] + tap[a] * d2[a]
            lo, hi = max(0, -off), min(q[a], n_sp[a] - off)
            if hi <= lo:
                break
            ranges.append((off + lo, off + hi))
            pads.append((lo, q[a] - hi))
        else:
            yield k, ranges, pads


def _add_padded(acc, term, pads):
    """``acc + pad(term)`` over the spatial axes (``acc`` may be None)."""
    if any(p != (0, 0) for p in pads):
        term = jnp.pad(term, [(0, 0), *pads, (0, 0)])
    return term if acc is None else acc + term


def _phase_gemm(x, wt, kernel, e0, d2, q, precision, acc_dtype):
    """A dense phase as one GEMM against all its taps, then shifted sums.

    ``y = x @ [w_0 ... w_T]`` multiplies every *real* input by every tap;
    tap ``t``'s contribution to output ``j`` is ``y[j + e0 + t*D, t]`` where
    that input exists, zero padding elsewhere (the ``_phase_taps`` rule).
    Compared with per-tap GEMMs on input slices this copies no input
    slices and runs one GEMM of ``T * O`` columns (faster); its GEMM output
    is ``T`` times the phase, hence only for phases of at most
    ``profile.phase_gemm_max_taps`` taps (and as the exact fallback of
    ``_phase_im2col``).
    """
    y = _tap_products(x, wt, precision, acc_dtype)
    return _shifted_sum(y, range(wt.shape[0]), kernel, e0, d2, q, x.shape[0],
                        wt.shape[-1], acc_dtype)


def _tap_products(x, wt, precision, acc_dtype):
    """``x (N, *n, I)`` times every tap of ``wt (T, I, O)`` in one GEMM of
    ``T * O`` columns: ``(N, *n, T, O)``."""
    t, i, o = wt.shape
    y = matmul(x, jnp.moveaxis(wt, 0, 1).reshape(i, t * o), precision, acc_dtype)
    return y.reshape(*y.shape[:-1], t, o)


def _phase_sums(products, specs, kernel, n_b, o, acc_dtype):
    """One phase from the products of every real input with every tap of
    the whole ``kernel`` (``(N, *n, T, O)``, :func:`_phases`' ``one_gemm``):
    the phase's taps picked out of the tap axis, then shifted sums."""
    starts = [sp[0][0] for sp in specs]
    steps = [sp[0][2] for sp in specs]
    sub = tuple(len(range(*sp[0])) for sp in specs)
    taps = [int(np.ravel_multi_index(tuple(s + t * st for s, t, st in
                                           zip(starts, tap, steps)), kernel))
            for tap in tap_offsets(sub)]
    return _shifted_sum(products, taps, sub, [-sp[1][0] for sp in specs],
                        [sp[2] for sp in specs], [sp[3] for sp in specs], n_b, o,
                        acc_dtype)


def _shifted_sum(y, taps, kernel, e0, d2, q, n_b, o, acc_dtype):
    """``sum_k pad(y[real range of k, taps[k]])`` over the phase's taps
    (``kernel``, in :func:`tap_offsets` order) whose outputs meet a real
    input: ``y`` holds every real input's product with each tap."""
    n_sp = y.shape[1:-2]
    acc = None
    for k, ranges, pads in _tap_ranges(kernel, e0, d2, q, n_sp):
        c = taps[k]
        term = lax.slice(y, (0, *(lo for lo, _ in ranges), c, 0),
                         (n_b, *(hi for _, hi in ranges), c + 1, o))
        acc = _add_padded(acc, term.reshape(*term.shape[:-2], o), pads)
    if acc is None:
        return jnp.zeros((n_b, *q, o), acc_dtype)
    return acc


def _phase_im2col(x, wt, kernel, e0, d2, q, precision, acc_dtype):
    """A dense phase as im2col: the taps' real-input slices, zero-padded to the
    phase's outputs, stacked on a new axis and contracted in one GEMM of depth
    ``T * I``.  Its GEMM output is the phase itself (``_phase_gemm``'s is
    ``T`` times larger), so the phases fit the 2x I/O memory bound.  The
    padding zeros meet the weights, so this runs only when every weight is
    finite (a NaN/Inf weight must reach only the outputs where it meets a
    real input: ``_phase_gemm`` then).
    """
    n_sp = x.shape[1:-1]
    t, i, o = wt.shape
    cols = []
    zero = jnp.zeros((), x.dtype)
    for tap in tap_offsets(kernel):
        # Output j of this tap reads input j + off: pad (-off, q - n + off)
        # moves input i to output i - off, zeros where no input exists, and
        # crops (negative widths) what falls outside the q outputs.
        offs = [e0[a] + tap[a] * d2[a] for a in range(len(kernel))]
        widths = [(-f, qa - n + f, 0) for f, qa, n in zip(offs, q, n_sp)]
        cols.append(lax.pad(x, zero, [(0, 0, 0), *widths, (0, 0, 0)]))
    cols = jnp.stack(cols, axis=-2)
    cols = cols.reshape(*cols.shape[:-2], t * i)
    return matmul(cols, wt.reshape(t * i, o), precision, acc_dtype)


def _phase_taps_scan(x, wt, kernel, e0, d2, q, groups, precision, acc_dtype):
    nd = x.ndim - 2
    n_sp = x.shape[1:-1]
    # Pad so that every tap's window of Q outputs is in range.
    lo_pad = [max(0, -e) for e in e0]
    hi_pad = [max(0, qa - 1 + e + (k - 1) * d - (n - 1))
              for qa, e, k, d, n in zip(q, e0, kernel, d2, n_sp)]
    xp = jnp.pad(x, [(0, 0)] + list(zip(lo_pad, hi_pad)) + [(0, 0)])
    taps = np.array(list(tap_offsets(kernel)), dtype=np.int32).reshape(-1, nd)
    offs = jnp.asarray(taps * np.array(d2, np.int32) + np.array(e0, np.int32))
    positions = [lax.broadcasted_iota(jnp.int32, (1, *q, 1), 1 + a) for a in range(nd)]

    def step(acc, tap):
        off, wk = tap
        zero = jnp.zeros((), jnp.int32)
        start = (zero, *(off[a] + lo_pad[a] for a in range(nd)), zero)
        xs = lax.dynamic_slice(xp, start, (x.shape[0], *q, x.shape[-1]))
        term = contract_tap(xs, wk, groups, precision, acc_dtype)
        real = None
        for a in range(nd):
            src = positions[a] + off[a]
            ok = (src >= 0) & (src < n_sp[a])
            real = ok if real is None else real & ok
        return acc + jnp.where(real, term, jnp.zeros((), acc_dtype)), None

    init = batch_zeros(x, (x.shape[0], *q, wt.shape[-1]), acc_dtype)
    acc, _ = lax.scan(step, init, (offs, wt))
    return acc


