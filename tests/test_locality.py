"""NaN/Inf locality: a non-finite element only spoils the outputs that see it.

SPEC section 4: with ``algorithm="auto"`` (the default) an output is non-finite
exactly when its window holds a non-finite input or weight, as with
``jax.lax.conv_general_dilated``.  An FFT or Winograd transform would smear a
single NaN over the whole output, so ``"auto"`` must never pick them on its
own.  Each case places NaN, +Inf and -Inf in the input and in the kernel, at a
corner, the centre and a random position, and compares ``isfinite`` masks
with lax's element for element.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax import lax

import jaxconv
from jaxconv import lax as jl
from jaxconv.algorithms.profile import CPU_FAMILIES

NHWC = ("NHWC", "HWIO", "NHWC")
NWC = ("NWC", "WIO", "NWC")
BAD = [np.nan, np.inf, -np.inf]

# name: (lhs shape, rhs shape, strides, padding, rhs_dilation, groups, dn)
CASES = {
    "dense": ((2, 9, 8, 4), (3, 3, 4, 5), (1, 1), "SAME", (1, 1), 1, NHWC),
    "dense_valid": ((1, 9, 8, 3), (3, 2, 3, 4), (1, 1), "VALID", (1, 1), 1, NHWC),
    "grouped": ((1, 8, 8, 6), (3, 3, 2, 6), (1, 1), "SAME", (1, 1), 3, NHWC),
    "depthwise": ((1, 10, 10, 4), (3, 3, 1, 4), (1, 1), "SAME", (1, 1), 4, NHWC),
    "depthwise_mult2": ((1, 9, 9, 3), (3, 3, 1, 6), (1, 1), "SAME", (1, 1), 3, NHWC),
    "depthwise_31x31": ((1, 32, 32, 2), (31, 31, 1, 2), (1, 1), "SAME", (1, 1), 2,
                        NHWC),
    "strided": ((1, 11, 11, 3), (3, 3, 3, 4), (2, 2), "SAME", (1, 1), 1, NHWC),
    "strided_depthwise": ((1, 12, 12, 4), (3, 3, 1, 4), (2, 2), [(1, 0), (1, 0)],
                          (1, 1), 4, NHWC),
    "dilated": ((1, 12, 12, 3), (3, 3, 3, 3), (1, 1), "SAME", (2, 2), 1, NHWC),
    "pointwise": ((1, 7, 7, 8), (1, 1, 8, 4), (1, 1), "VALID", (1, 1), 1, NHWC),
    # padding on one side per axis, dilated taps reading beyond it, 3-D
    "depthwise_3d_dilated": ((1, 6, 7, 5, 3), (2, 2, 2, 1, 3), (1, 2, 1),
                             [(2, 0), (0, 1), (1, 3)], (2, 1, 2), 3,
                             ("NDHWC", "DHWIO", "NDHWC")),
    "causal1d_depthwise": ((2, 64, 4), (4, 1, 4), (1,), [(3, 0)], (1,), 4, NWC),
    "long1d_depthwise": ((1, 2048, 2), (257, 1, 2), (1,), "SAME", (1,), 2, NWC),
    # 513 taps: a product of FFTs when every value is finite ("spectral")
    "long1d_depthwise_fft": ((1, 2048, 2), (513, 1, 2), (1,), "SAME", (1,), 2, NWC),
    "dense1d_strided": ((1, 33, 8), (3, 8, 8), (2,), "VALID", (1,), 1, NWC),
    # space-to-depth without a guard: kernel a multiple of, or equal to, the
    # stride (no zero-padded taps)
    "dense1d_k4_s2": ((1, 33, 8), (4, 8, 8), (2,), [(1, 2)], (1,), 1, NWC),
    "patchify": ((1, 12, 9, 3), (4, 3, 3, 5), (4, 3), "VALID", (1, 1), 1, NHWC),
    "patchify_1d_padded": ((2, 31, 130), (3, 130, 4), (3,), [(1, 2)], (1,), 1, NWC),
}


def _finite_masks(fn, x, w, rng, where, bad):
    """Yield (jaxconv mask, lax mask, position) for a few placements of ``bad``."""
    target = x if where == "input" else w
    positions = [(0,) * target.ndim, tuple(s // 2 for s in target.shape),
                 tuple(int(rng.integers(s)) for s in target.shape)]
    for pos in positions:
        xb, wb = x.copy(), w.copy()
        (xb if where == "input" else wb)[pos] = bad
        ours, theirs = fn(xb, wb)
        yield np.isfinite(np.asarray(ours)), np.isfinite(np.asarray(theirs)), pos


def _assert_local(fn, x, w, rng, wheres=("input", "kernel")):
    for where in wheres:
        for bad in BAD:
            for ours, theirs, pos in _finite_masks(fn, x, w, rng, where, bad):
                assert not theirs.all(), "placement has no effect on lax"
                bad_out = np.argwhere(ours != theirs)
                assert bad_out.size == 0, (
                    f"{bad} in {where} at {pos}: finiteness differs from lax at "
                    f"{len(bad_out)} outputs, e.g. {bad_out[:3].tolist()} "
                    f"(jaxconv non-finite: {(~ours).sum()}, lax: {(~theirs).sum()})"
                )


@pytest.mark.parametrize("name", list(CASES))
def test_nonfinite_stays_local(name):
    lhs_shape, rhs_shape, s, p, rd, g, dn = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(lhs_shape).astype(np.float32)
    w = rng.standard_normal(rhs_shape).astype(np.float32)
    kw = dict(rhs_dilation=rd, dimension_numbers=dn, feature_group_count=g)

    @jax.jit
    def fn(x, w):
        return (jl.conv_general_dilated(x, w, s, p, **kw),  # algorithm="auto"
                lax.conv_general_dilated(x, w, s, p, **kw))

    _assert_local(fn, x, w, rng)


TRANSPOSE_CASES = {
    "tconv2d": ((1, 6, 6, 4), (4, 4, 4, 3), (2, 2), "SAME"),
    "tconv2d_valid": ((1, 5, 5, 2), (3, 3, 2, 2), (2, 2), "VALID"),
    "tconv1d_s3": ((1, 7, 3), (5, 3, 2), (3,), [(2, 2)]),
}


def _transposed(name):
    lhs_shape, rhs_shape, s, p = TRANSPOSE_CASES[name]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(lhs_shape).astype(np.float32)
    w = rng.standard_normal(rhs_shape).astype(np.float32)

    @jax.jit
    def fn(x, w):
        return jl.conv_transpose(x, w, s, p), lax.conv_transpose(x, w, s, p)

    return fn, x, w, rng


@pytest.mark.parametrize("name", list(TRANSPOSE_CASES))
def test_nonfinite_input_stays_local_transposed(name):
    fn, x, w, rng = _transposed(name)
    _assert_local(fn, x, w, rng, wheres=("input",))


@pytest.mark.parametrize("name", list(TRANSPOSE_CASES))
def test_nonfinite_weight_stays_local_transposed(name):
    """lax never multiplies a weight by the zeros that lhs dilation inserts nor
    by the padding of a transposed conv, so a NaN weight only reaches the
    outputs where it meets a real input.  jaxconv's sub-pixel phases must not
    multiply their own border padding by it either."""
    fn, x, w, rng = _transposed(name)
    _assert_local(fn, x, w, rng, wheres=("kernel",))


def test_nonfinite_stays_local_batch_groups():
    """batch_group_count (the kernel-gradient form) keeps locality too.

    XLA's CPU conv is *less* local here: it spreads a NaN weight of one batch
    group into the output channels of the other groups (it computes every
    group against every kernel slice and selects).  The oracle is therefore
    the definition of batch grouping: one lax conv per group, concatenated
    along output features; jaxconv must match it, and never be non-finite
    where lax is finite.
    """
    rng = np.random.default_rng(2)
    b = 2
    x = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    n, o = x.shape[0] // b, w.shape[-1] // b

    @jax.jit
    def fn(x, w):
        ours = jl.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC,
                                       batch_group_count=b)
        per_group = [lax.conv_general_dilated(x[g * n:(g + 1) * n],
                                              w[..., g * o:(g + 1) * o], (1, 1),
                                              "SAME", dimension_numbers=NHWC)
                     for g in range(b)]
        theirs = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC,
                                          batch_group_count=b)
        return ours, jax.numpy.concatenate(per_group, axis=-1), theirs

    def by_definition(x, w):
        ours, expected, _ = fn(x, w)
        return ours, expected

    _assert_local(by_definition, x, w, rng)
    for where in ("input", "kernel"):
        for ours, lax_mask, pos in _finite_masks(lambda x, w: fn(x, w)[::2], x, w,
                                                 rng, where, np.nan):
            assert (ours | ~lax_mask).all(), f"NaN in {where} at {pos}"


def test_nonfinite_gradient_stays_local():
    """The input gradient of a NaN-free loss stays finite away from a NaN weight's
    reach exactly as lax's does (the backward pass must be exact too)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 12, 12, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 3)).astype(np.float32)
    x[0, 6, 6, 1] = np.nan
    kw = dict(dimension_numbers=NHWC, feature_group_count=3)

    def grads(mod):
        def loss(w):
            y = mod.conv_general_dilated(x, w, (1, 1), "SAME", **kw)
            # Only outputs far from the NaN enter the loss.
            return (y[:, :3, :3] ** 2).sum()
        return np.asarray(jax.jit(jax.grad(loss))(w))

    np.testing.assert_array_equal(np.isfinite(grads(jl)), np.isfinite(grads(lax)))


# Depthwise convs apply their padding inside the fused loop (exact zeros)
# and re-poison the border outputs whose taps read padding where a
# non-finite weight meets the zeros, as lax's products do.  Every
# tap of the kernel in turn is made non-finite; padding wider than the
# kernel's reach makes whole strips of outputs read nothing but padding.
BORDER_CASES = {
    "same3x3": ((2, 7, 6, 3), (3, 3, 1, 3), (1, 1), [(1, 1), (1, 1)], (1, 1)),
    "strided_dilated": ((1, 9, 8, 2), (3, 3, 1, 2), (2, 1), [(2, 0), (0, 3)], (1, 2)),
    "wide_padding": ((1, 5, 5, 2), (3, 2, 1, 2), (1, 1), [(4, 3), (0, 5)], (1, 1)),
    "causal1d": ((2, 9, 3), (4, 1, 3), (1,), [(3, 0)], (1,)),
    "dilated1d_s2": ((1, 11, 2), (3, 1, 2), (2,), [(5, 7)], (3,)),
    "volume": ((1, 4, 5, 3, 2), (2, 2, 2, 1, 2), (1, 1, 1), [(1, 0), (1, 1), (0, 2)],
               (1, 1, 1)),
}


@pytest.mark.parametrize("name", list(BORDER_CASES))
def test_depthwise_border_matches_lax_for_every_nonfinite_tap(name):
    xs, ws, s, p, rd = BORDER_CASES[name]
    nd = len(xs) - 2
    dn = {1: NWC, 2: NHWC, 3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    kw = dict(rhs_dilation=rd, dimension_numbers=dn, feature_group_count=xs[-1])

    @jax.jit
    def fn(x, w):
        return (jl.conv_general_dilated(x, w, s, p, **kw),
                lax.conv_general_dilated(x, w, s, p, **kw))

    (row,) = jaxconv.explain(lambda x, w: jl.conv_general_dilated(x, w, s, p, **kw),
                             x, w)
    assert row.formulation == "taps/depthwise"
    for tap in np.ndindex(*ws[:-2]):
        for bad in BAD:
            wb = w.copy()
            wb[(*tap, 0, 1)] = bad
            ours, theirs = (np.asarray(a) for a in fn(x, wb))
            np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs),
                                          err_msg=f"{bad} at tap {tap}")
            np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
            fin = np.isfinite(theirs)
            np.testing.assert_allclose(ours[fin], theirs[fin], rtol=1e-5, atol=1e-5)


# Kernel (and input) gradients: lax's kernel gradient ``dw[t] = sum_q
# x[q*s + t*d] (outer) ct[q]`` pairs each tap only with the input elements it
# reads, so a NaN near the border spoils only those taps' entries.  The
# shifted-sum forms ("alltaps", "wide", "shifted") contract every input
# position with every tap's cotangent (zero where the tap reads nothing),
# so their transposes need the border treatment of ``_primitive``; the
# profile variants put each form, blocked and unblocked, on these problems.
GRAD_CASES = {
    "1d_valid": ((2, 24, 6), (5, 6, 3), (1,), "VALID", (1,)),
    "1d_one_output_channel": ((2, 24, 8), (5, 8, 1), (1,), "VALID", (1,)),
    "1d_same_dilated": ((2, 24, 6), (3, 6, 3), (1,), "SAME", (3,)),
    "1d_causal": ((2, 24, 6), (4, 6, 3), (1,), [(3, 0)], (1,)),
    "1d_cropped": ((1, 24, 6), (3, 6, 3), (1,), [(-2, 1)], (1,)),
    "1d_dilated_tail": ((2, 25, 4), (5, 4, 8), (1,), "SAME", (3,)),
    "1d_k4_s2": ((1, 33, 8), (4, 8, 8), (2,), [(1, 2)], (1,)),  # space-to-depth
    "1d_k3_s2": ((1, 33, 8), (3, 8, 8), (2,), "VALID", (1,)),  # zero-padded taps
    "2d_same": ((2, 9, 8, 4), (3, 3, 4, 3), (1, 1), "SAME", (1, 1)),
    "2d_valid_5x5": ((1, 12, 12, 16), (5, 5, 16, 8), (1, 1), "VALID", (1, 1)),
    "2d_dilated": ((1, 12, 12, 4), (3, 3, 4, 3), (1, 1), "SAME", (2, 2)),
    "3d_same": ((1, 5, 6, 5, 4), (3, 3, 3, 4, 3), (1, 1, 1), "SAME", (1, 1, 1)),
    # transposed (lhs dilation, last): polyphase plans whose phases are one
    # GEMM against all their taps, shifted sums of its product
    "1d_transposed": ((2, 24, 16), (8, 16, 4), (1,), [(2, 5)], (1,), (4,)),
    "2d_transposed": ((1, 6, 5, 8), (4, 2, 8, 4), (1, 1), [(2, 2), (0, 1)], (1, 1),
                      (2, 2)),
    # 4x4 stride 2: phases of four taps that build patches ("im2col|gemm");
    # past "phase_taps_kernel_grad_min_positions" their kernel gradient is
    # the transpose of per-tap products
    "2d_transposed_k4": ((2, 5, 6, 8), (4, 4, 8, 4), (1, 1), [(2, 2), (1, 2)],
                         (1, 1), (2, 2)),
}
GRAD_PROFILES = {
    "cpu": {},
    "avx512": dict(CPU_FAMILIES["avx512"]),
    "wide": dict(alltaps_max_bytes=0),
    "shifted-blocks": dict(alltaps_max_bytes=0, wide_2d_max_i=0, block_min_bytes=1,
                           block_max_bytes=600, block_io_fraction=0,
                           im2col_unblocked_max_bytes=0),
    "shifted-2d": dict(shifted_2d_min_i=1, alltaps_max_bytes=0, block_min_bytes=1,
                       block_max_bytes=600, block_io_fraction=0),
    "alltaps-blocks": dict(alltaps_max_bytes=0, wide_2d_max_i=0, alltaps_max_i=64,
                           block_min_bytes=1, block_max_bytes=2000,
                           block_io_fraction=0, im2col_unblocked_max_bytes=0),
    "phase-taps": dict(phase_taps_kernel_grad_min_positions=1),
    # 1-D kernel gradients as one block-Hankel GEMM (blocks of 2: the reach
    # of 4-5 taps spans two blocks; "1d_dilated_tail" pads the cotangent,
    # guarded)
    "hankel": dict(hankel_kernel_grad_min_tap_channels=1, hankel_kernel_grad_min_i=1,
                   hankel_kernel_grad_blocks=(2,), tap_scan_min_o=1),
    "gpu": "gpu",  # branch-free: no conditional, the poisoned transpose
}
DNS = {1: NWC, 2: NHWC, 3: ("NDHWC", "DHWIO", "NDHWC")}


def _grad_profile(variant):
    fields = GRAD_PROFILES[variant]
    if isinstance(fields, str):
        return jaxconv.get_profile(fields)
    return jaxconv.get_profile("cpu").replace(**fields)


def _grad_fns(mod, name):
    """Jitted ``(x, w, ct) -> (input grad, kernel grad)`` and per-example
    kernel gradients (``vmap`` of ``grad`` over the examples) of ``mod``'s
    ``conv_general_dilated`` on case ``name``."""
    xs, ws, s, p, rd, *ld = GRAD_CASES[name]
    kw = dict(rhs_dilation=rd, dimension_numbers=DNS[len(xs) - 2])
    if ld:
        kw["lhs_dilation"] = ld[0]

    def f(x, w):
        return mod.conv_general_dilated(x, w, s, p, **kw)

    def grads(x, w, ct):
        return jax.vjp(f, x, w)[1](ct)

    def per_example(x, w, ct):
        return jax.vmap(lambda x, ct: jax.vjp(lambda w: f(x[None], w), w)[1](
            ct[None])[0])(x, ct)

    return jax.jit(grads), jax.jit(per_example)


def _reached_forms(name, profile):
    """The formulations of the gradient plans of case ``name``."""
    grads, _ = _grad_fns(jl, name)
    with jaxconv.use_profile(profile):
        return {r.formulation for r in jaxconv.explain(grads, *_grad_args(name))
                if r.plan}


def _grad_args(name):
    xs, ws = GRAD_CASES[name][:2]
    rng = np.random.default_rng(4)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    y = jax.eval_shape(lambda x, w: lax.conv_general_dilated(
        x, w, *GRAD_CASES[name][2:4], *GRAD_CASES[name][5:],
        rhs_dilation=GRAD_CASES[name][4], dimension_numbers=DNS[len(xs) - 2]), x, w)
    return x, w, rng.standard_normal(y.shape).astype(np.float32)


def _mismatch(ours, theirs):
    ours, theirs = np.isfinite(np.asarray(ours)), np.isfinite(np.asarray(theirs))
    return int((ours != theirs).sum())


def _gradient_mismatches(name, profile):
    """Every placement whose gradients' finiteness differs from lax's."""
    grads, per_example = _grad_fns(jl, name)
    lax_grads, lax_per_example = _grad_fns(lax, name)
    x, w, ct = _grad_args(name)
    found = []
    corners = [(0,) * x.ndim, tuple(n - 1 for n in x.shape),
               (x.shape[0] - 1, *(1 for _ in x.shape[1:-2]), 0, x.shape[-1] - 1),
               tuple(n // 2 for n in x.shape)]
    with jaxconv.use_profile(profile):
        for pos in corners:
            for bad in BAD:
                xb = x.copy()
                xb[pos] = bad
                (gx, gw), (lgx, lgw) = grads(xb, w, ct), lax_grads(xb, w, ct)
                if _mismatch(gw, lgw):
                    found.append(f"{bad} in input at {pos}: kernel gradient")
                if _mismatch(per_example(xb, w, ct), lax_per_example(xb, w, ct)):
                    found.append(f"{bad} in input at {pos}: per-example gradients")
        for pos in [(0,) * ct.ndim, tuple(n - 1 for n in ct.shape)]:
            cb = ct.copy()
            cb[pos] = np.nan
            (gx, gw), (lgx, lgw) = grads(x, w, cb), lax_grads(x, w, cb)
            if _mismatch(gx, lgx):
                found.append(f"NaN in cotangent at {pos}: input gradient")
            if _mismatch(gw, lgw):
                found.append(f"NaN in cotangent at {pos}: kernel gradient")
    return found


@pytest.mark.parametrize("variant", list(GRAD_PROFILES))
@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_nonfinite_gradients_stay_local(name, variant):
    """Kernel, per-example kernel and input gradients are non-finite exactly
    where lax's are, for NaN/Inf in the input at the corners and the centre
    and for NaN in the cotangent, under every formulation."""
    assert _gradient_mismatches(name, _grad_profile(variant)) == []


def test_gradient_locality_cases_reach_the_shifted_sum_forms(monkeypatch):
    """The cases above exercise each shifted-sum form, and without the border
    treatment their kernel gradients would spread (so the test can fail)."""
    from jaxconv import _primitive

    reached = set()
    for variant in GRAD_PROFILES:
        profile = _grad_profile(variant)
        for name in GRAD_CASES:
            reached |= {f.split("/")[-1] for f in _reached_forms(name, profile)}
    assert {"alltaps", "wide", "shifted", "s2d", "polyphase"} <= reached, reached
    # and the transposed kernel gradient by per-tap products
    grads, _ = _grad_fns(jl, "2d_transposed_k4")
    with jaxconv.use_profile(_grad_profile("phase-taps")):
        rows = jaxconv.explain(grads, *_grad_args("2d_transposed_k4"))
    assert any(r.plan and r.plan.param("kernel_grad") == "taps" for r in rows)
    # and the 1-D block-Hankel kernel gradient
    with jaxconv.use_profile(_grad_profile("hankel")):
        for name in ("1d_valid", "1d_causal", "1d_dilated_tail"):
            grads, _ = _grad_fns(jl, name)
            rows = jaxconv.explain(grads, *_grad_args(name))
            assert any(r.formulation == "taps/hankel" for r in rows), name

    monkeypatch.setattr(_primitive, "kernel_grad_spreads", lambda plan: False)
    jax.clear_caches()
    try:
        found = _gradient_mismatches("1d_one_output_channel",
                                     jaxconv.get_profile("cpu"))
        # (its per-example gradients are cotangent GEMMs, local by their own
        # border treatment: test_vmap; these run each example's plan)
        per_example = _gradient_mismatches("1d_valid", jaxconv.get_profile("cpu"))
        # transposed: the plan's own kernel gradient (polyphase.kernel_grad)
        # off, the "gemm" phases' transpose spreads
        monkeypatch.setattr(_primitive, "_direct_kernel_grad", lambda *a: None)
        jax.clear_caches()
        transposed = _gradient_mismatches("1d_transposed", jaxconv.get_profile("cpu"))
    finally:
        jax.clear_caches()
    assert any("kernel gradient" in f for f in found), found
    assert any("per-example" in f for f in per_example), per_example
    assert any("kernel gradient" in f for f in transposed), transposed


@pytest.mark.parametrize("kernel,pads,stride,dilation,lhs", [
    ((5,), ((0, 0),), (1,), (1,), (1,)),
    ((3,), ((2, 1),), (2,), (3,), (1,)),
    ((3, 4), ((1, 1), (0, 3)), (1, 2), (2, 1), (1, 1)),
    ((2, 2, 3), ((1, 0), (0, 0), (2, 2)), (1, 1, 2), (1, 2, 1), (1, 1, 1)),
    ((3,), ((1, 1),), (2,), (1,), (2,)),  # lhs-dilated
    ((4, 2), ((2, -1), (0, 1)), (1, 1), (1, 2), (2, 3)),
])
def test_tap_hits_match_the_definition(kernel, pads, stride, dilation, lhs):
    """``guards.tap_hits``: tap ``t`` and channel ``i`` are hit exactly when
    some image's flagged element of channel ``i`` sits at ``q*s + t*d`` (in
    lhs-dilated, padded coordinates) for some output ``q``."""
    from jaxconv.algorithms.guards import tap_hits

    rng = np.random.default_rng(5)
    spatial = (9, 8, 7)[:len(kernel)]
    bad = np.zeros((2, *spatial, 3), bool)
    for _ in range(3):  # a few flagged elements: some taps hit, not all
        bad[tuple(int(rng.integers(n)) for n in bad.shape)] = True
    padded = [(n - 1) * sl + 1 + lo + hi for n, (lo, hi), sl in zip(spatial, pads, lhs)]
    out = [(p - d * (k - 1) - 1) // s + 1
           for p, k, s, d in zip(padded, kernel, stride, dilation)]
    want = np.zeros((*kernel, 3), bool)
    for n, *pos, c in np.argwhere(bad):
        for tap in np.ndindex(*kernel):
            q = [(p * sl + lo - t * d)
                 for p, (lo, _), t, d, sl in zip(pos, pads, tap, dilation, lhs)]
            if all(v % s == 0 and 0 <= v // s < o for v, s, o in zip(q, stride, out)):
                want[(*tap, c)] = True
    got = tap_hits(bad.astype(np.float32), kernel, pads, stride, dilation, out, lhs)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert want.any() and not want.all()
