"""``vmap`` of jaxconv's convolutions: one folded convolution, right values.

Every case is a per-example function ``f(x, w)``; ``vmap`` over ``x``, ``w`` or
both must equal a Python loop over the examples (and, where one exists, the
same ``vmap`` of ``jax.lax``), per-example gradients (``vmap(grad)``) must
equal a loop of gradients, and the jaxpr of ``jit(vmap(f))`` must hold one
``jaxconv_conv`` equation on the folded problem.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax
from jax.extend.core import subjaxprs
from jax.test_util import check_grads

import jaxconv
from jaxconv import _primitive
from jaxconv import lax as jl

B = 3
NHWC = ("NHWC", "HWIO", "NHWC")


class Case(NamedTuple):
    name: str
    fn: Any  # jaxconv f(x, w)
    ref: Any  # the same with jax.lax, or None
    x: tuple[int, ...]  # one example's x
    w: tuple[int, ...]  # one example's w
    batched: bool = True  # f(x) with vmap over x == f on x with B folded into N


def _lax_pair(**kw):
    """The same ``conv_general_dilated`` call with jaxconv and with jax.lax."""
    return (lambda x, w: jl.conv_general_dilated(x, w, **kw),
            lambda x, w: lax.conv_general_dilated(x, w, **kw))


CASES = [
    Case("dense_nchw", *_lax_pair(window_strides=(1, 1), padding="SAME"),
         (2, 4, 7, 6), (5, 4, 3, 3)),
    Case("strided_dilated", *_lax_pair(
        window_strides=(2, 1), padding=((1, 0), (2, 1)), rhs_dilation=(1, 2),
        dimension_numbers=NHWC), (2, 9, 8, 3), (3, 2, 3, 4)),
    Case("depthwise", *_lax_pair(window_strides=(1, 1), padding="SAME",
                                 feature_group_count=4, dimension_numbers=NHWC),
         (2, 7, 6, 4), (3, 3, 1, 8)),
    Case("grouped", *_lax_pair(window_strides=(1, 2), padding="VALID",
                               feature_group_count=2, dimension_numbers=NHWC),
         (2, 7, 6, 4), (3, 3, 2, 6)),
    Case("batch_groups", *_lax_pair(window_strides=(1, 1), padding="SAME",
                                    batch_group_count=2, dimension_numbers=NHWC),
         (4, 6, 5, 3), (3, 3, 3, 4), batched=False),
    Case("lhs_dilated", *_lax_pair(
        window_strides=(1, 1), padding=((2, 1), (1, 1)), lhs_dilation=(2, 1),
        rhs_dilation=(2, 1), dimension_numbers=NHWC), (2, 5, 6, 3), (2, 3, 3, 4)),
    Case("lax_conv_transpose",
         lambda x, w: jl.conv_transpose(x, w, (2, 2), "SAME"),
         lambda x, w: lax.conv_transpose(x, w, (2, 2), "SAME"),
         (2, 4, 5, 3), (3, 3, 3, 4)),
    Case("conv2d_channels_first",
         lambda x, w: jaxconv.conv2d(x, w, stride=2, padding=1, groups=2,
                                     data_format="channels_first"),
         lambda x, w: lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                               feature_group_count=2),
         (2, 4, 7, 6), (6, 2, 3, 3)),
    Case("conv_transpose_grouped",
         lambda x, w: jaxconv.conv_transpose(x, w, stride=2, padding=1, groups=2),
         None, (2, 4, 5, 4), (3, 3, 4, 3)),
    Case("depthwise_conv", lambda x, w: jaxconv.depthwise_conv(x, w, padding="SAME"),
         None, (2, 7, 6, 3), (3, 3, 1, 6)),
    Case("conv1d_circular",
         lambda x, w: jaxconv.conv1d(x, w, padding=2, padding_mode="circular"),
         None, (2, 9, 3), (5, 3, 4)),
    Case("correlate", lambda x, w: jaxconv.correlate(x, w, mode="same"), None,
         (9, 7), (3, 4), batched=False),
    # one long 1-D image: its kernel gradient is one 2-D GEMM per tap
    Case("dense_1d_long", *_lax_pair(window_strides=(1,), padding=((4, 2),),
                                     rhs_dilation=(2,),
                                     dimension_numbers=("NWC", "WIO", "NWC")),
         (1, 600, 3), (4, 3, 5)),
    # a long 1-D depthwise kernel: FFT products behind a conditional
    Case("depthwise_1d_fft", *_lax_pair(window_strides=(1,), padding="SAME",
                                        feature_group_count=2,
                                        dimension_numbers=("NWC", "WIO", "NWC")),
         (1, 700, 2), (513, 1, 2)),
]
IDS = [c.name for c in CASES]
AXES = {"lhs": (0, None), "rhs": (None, 0), "both": (0, 0)}


def _args(case, axes, rng, dtype=np.float64):
    x = rng.standard_normal(((B,) if axes[0] == 0 else ()) + case.x)
    w = rng.standard_normal(((B,) if axes[1] == 0 else ()) + case.w)
    return jnp.asarray(x, dtype), jnp.asarray(w, dtype)


def _loop(f, axes, x, w):
    """``vmap(f, axes)(x, w)`` as a Python loop (outputs may be pytrees)."""
    outs = [f(x[i] if axes[0] == 0 else x, w[i] if axes[1] == 0 else w)
            for i in range(B)]
    return jax.tree.map(lambda *a: jnp.stack(a), *outs)


def _equations(jaxpr, name="jaxconv_conv"):
    """Every equation of primitive ``name`` in ``jaxpr`` and its sub-jaxprs."""
    found = [e for e in jaxpr.eqns if e.primitive.name == name]
    for sub in subjaxprs(jaxpr):
        found += _equations(sub, name)
    return found


# --- values ----------------------------------------------------------------------


@pytest.mark.parametrize("axes", list(AXES.values()), ids=list(AXES))
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vmap_equals_loop_and_lax(case, axes, rng):
    x, w = _args(case, axes, rng)
    got = jax.jit(jax.vmap(case.fn, axes))(x, w)
    assert_close(got, _loop(case.fn, axes, x, w))
    if case.ref is not None:
        assert_close(got, jax.vmap(case.ref, axes)(x, w))


@pytest.mark.parametrize("case", [c for c in CASES if c.batched],
                         ids=[c.name for c in CASES if c.batched])
def test_vmap_over_lhs_equals_batched_call(case, rng):
    x, w = _args(case, (0, None), rng)
    got = jax.jit(jax.vmap(case.fn, (0, None)))(x, w)
    out = case.fn(x.reshape(B * x.shape[1], *x.shape[2:]), w)
    assert_close(got, out.reshape(B, -1, *out.shape[1:]))


@pytest.mark.parametrize("axes", list(AXES.values()), ids=list(AXES))
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_per_example_gradients_equal_loop(case, axes, rng):
    x, w = _args(case, axes, rng)

    def loss(x, w, f=case.fn):
        return jnp.sum(jnp.sin(f(x, w)))

    grad = jax.grad(loss, (0, 1))
    got = jax.jit(jax.vmap(grad, axes))(x, w)
    want = _loop(grad, axes, x, w)
    for g, r in zip(got, want):
        assert_close(g, r)
    if case.ref is not None:
        ref = jax.vmap(jax.grad(lambda x, w: jnp.sum(jnp.sin(case.ref(x, w))),
                                (0, 1)), axes)(x, w)
        for g, r in zip(got, ref):
            assert_close(g, r)


PER_EXAMPLE = [c for c in CASES if c.name in (
    "dense_nchw", "strided_dilated", "depthwise", "depthwise_conv", "grouped",
    "dense_1d_long")]


PER_EXAMPLE_IDS = [c.name for c in PER_EXAMPLE] + ["grouped_folded"]
PER_EXAMPLE = PER_EXAMPLE + [c for c in PER_EXAMPLE if c.name == "grouped"]


@pytest.mark.parametrize("case,folded", zip(PER_EXAMPLE, [
    name == "grouped_folded" for name in PER_EXAMPLE_IDS]), ids=PER_EXAMPLE_IDS)
def test_per_example_kernel_gradients_differentiate_and_nest(case, folded, rng):
    # Per-example kernel gradients (one equation of role rhs_t_each for dense
    # kernels with several taps, depthwise ones and grouped ones of small
    # patches; a folded grouped rhs_t beyond per_example_grouped_patch_bytes)
    # are differentiable in both operands, forward and reverse, and vmap
    # again (a second axis of examples merges into the first).
    x, w = _args(case, (0, None), rng)
    profile = jaxconv.get_profile("cpu")
    if folded:
        profile = profile.replace(per_example_grouped_patch_bytes=0)
    jax.clear_caches()  # the profile is read when a function is traced

    def per_example(w, x):
        def loss(w, x1):
            with jaxconv.use_profile(profile):
                return jnp.sum(jnp.sin(case.fn(x1, w)))
        return jax.vmap(jax.grad(loss), (None, 0))(w, x)

    roles = [e.params["role"] for e in
             _equations(jax.make_jaxpr(per_example)(w, x).jaxpr)]
    assert roles == ["fwd", "rhs_t" if folded else "rhs_t_each"]
    if case.name == "dense_1d_long":  # each example planned as one image
        rows = jaxconv.explain(per_example, w, x)
        assert [r.plan.param("kernel_tangent") for r in rows] == ["im2col",
                                                                  "tap-gemms"]
    check_grads(per_example, (w, x), order=1, modes=("fwd", "rev"))
    x2 = jnp.stack([x, jnp.flip(x, 0)])
    got = jax.jit(jax.vmap(per_example, (None, 0)))(w, x2)
    assert_close(got, jnp.stack([per_example(w, x2[0]), per_example(w, x2[1])]))
    assert_close(per_example(w, x), _loop(lambda x1, w: jax.grad(
        lambda w: jnp.sum(jnp.sin(case.fn(x1, w))))(w), (0, None), x, w))


def test_transpose_with_unbatched_cotangent(rng):
    # vmap over w of the x-gradient (and over x of the w-gradient) with a
    # cotangent shared by all examples: the cotangent is broadcast.
    case = CASES[0]
    x, w = _args(case, (0, 0), rng)
    ct = jnp.asarray(rng.standard_normal(jax.eval_shape(case.fn, x[0], w[0]).shape))

    def gx(x, w):
        return jax.vjp(lambda x: case.fn(x, w), x)[1](ct)[0]

    def gw(x, w):
        return jax.vjp(lambda w: case.fn(x, w), w)[1](ct)[0]

    for f, axes in ((gx, (None, 0)), (gw, (0, None))):
        xa, wa = (x if axes[0] == 0 else x[0]), (w if axes[1] == 0 else w[0])
        assert_close(jax.jit(jax.vmap(f, axes))(xa, wa), _loop(f, axes, xa, wa))


def test_nested_vmap(rng):
    # Two vmapped axes (x over the outer, w over the inner) fold twice.
    case = CASES[2]  # depthwise
    x = jnp.asarray(rng.standard_normal((B, *case.x)))
    w = jnp.asarray(rng.standard_normal((2, *case.w)))
    got = jax.jit(jax.vmap(jax.vmap(case.fn, (None, 0)), (0, None)))(x, w)
    want = jnp.stack([jnp.stack([case.fn(x[i], w[j]) for j in range(2)])
                      for i in range(B)])
    assert_close(got, want)
    eqns = _equations(jax.make_jaxpr(jax.vmap(jax.vmap(case.fn, (None, 0)),
                                              (0, None)))(x, w).jaxpr)
    assert len(eqns) == 1


def test_eager_vmap_and_empty_axis(rng):
    case = CASES[1]
    x, w = _args(case, (0, 0), rng)
    assert_close(jax.vmap(case.fn)(x, w), _loop(case.fn, (0, 0), x, w))
    empty = jax.vmap(case.fn)(x[:0], w[:0])
    assert empty.shape == (0, *jax.eval_shape(case.fn, x[0], w[0]).shape)


def test_dtypes_under_vmap(rng):
    # int8 -> int32 exactly; bfloat16 accumulated in float32 (gradients keep
    # the operand dtype); complex.
    f = CASES[0].fn
    xi = jnp.asarray(rng.integers(-8, 8, (B, 2, 4, 7, 6)), jnp.int8)
    wi = jnp.asarray(rng.integers(-8, 8, (B, 5, 4, 3, 3)), jnp.int8)

    def fi(x, w):
        return jl.conv_general_dilated(x, w, (1, 1), "SAME",
                                       preferred_element_type=jnp.int32)

    got = jax.jit(jax.vmap(fi))(xi, wi)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, _loop(fi, (0, 0), xi, wi))

    def fb(x, w):
        return jl.conv_general_dilated(x, w, (1, 1), "SAME",
                                       preferred_element_type=jnp.float32)

    xb, wb = xi.astype(jnp.bfloat16), wi.astype(jnp.bfloat16)
    grad = jax.grad(lambda x, w: jnp.sum(fb(x, w) ** 2) / 100, (0, 1))
    got = jax.jit(jax.vmap(grad, (0, None)))(xb, wb[0])
    want = _loop(grad, (0, None), xb, wb[0])
    assert got[0].dtype == got[1].dtype == jnp.bfloat16
    for g, r in zip(got, want):
        assert_close(g, r, dtype=jnp.bfloat16)

    xc = jnp.asarray(rng.standard_normal((B, 2, 4, 7, 6))
                     + 1j * rng.standard_normal((B, 2, 4, 7, 6)))
    wc = jnp.asarray(rng.standard_normal((5, 4, 3, 3))
                     + 1j * rng.standard_normal((5, 4, 3, 3)))
    gradc = jax.grad(lambda w, x: jnp.sum(jnp.abs(f(x, w)) ** 2))
    got = jax.jit(jax.vmap(gradc, (None, 0)))(wc, xc)
    ref = jax.vmap(jax.grad(lambda w, x: jnp.sum(jnp.abs(
        lax.conv_general_dilated(x, w, (1, 1), "SAME")) ** 2)), (None, 0))(wc, xc)
    assert_close(got, ref)


# --- transformations -----------------------------------------------------------------


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]],
                         ids=["strided_dilated", "grouped", "lhs_dilated"])
def test_check_grads_through_vmap(case, rng):
    # Second order, forward and reverse: every role and its batching rule.
    x, w = _args(case, (0, 0), rng)
    for axes in AXES.values():
        xa, wa = (x if axes[0] == 0 else x[0]), (w if axes[1] == 0 else w[0])
        check_grads(jax.vmap(case.fn, axes), (xa, wa), order=2, modes=("fwd", "rev"))


def test_jvp_and_vmap_commute_with_lax(rng):
    case = CASES[0]
    x, w = _args(case, (0, 0), rng)
    tx, tw = _args(case, (0, 0), rng)
    for f, ref in ((case.fn, case.ref),):
        got = jax.jit(jax.vmap(lambda *a: jax.jvp(f, a[:2], a[2:])))(x, w, tx, tw)
        want = jax.vmap(lambda *a: jax.jvp(ref, a[:2], a[2:]))(x, w, tx, tw)
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])
        got = jax.jvp(jax.vmap(f), (x, w), (tx, tw))
        assert_close(got[1], want[1])


def test_export_of_vmap(rng):
    case = CASES[0]
    x, w = _args(case, (0, 0), rng)
    (b,) = jax.export.symbolic_shape("b")
    for axes in AXES.values():
        xa, wa = (x if axes[0] == 0 else x[0]), (w if axes[1] == 0 else w[0])
        for f in (jax.vmap(case.fn, axes), jax.vmap(jax.grad(
                lambda x, w: jnp.sum(jnp.sin(case.fn(x, w))), (0, 1)), axes)):
            f = jax.jit(f)
            jax.tree.map(assert_close, jax.export.export(f)(xa, wa).call(xa, wa),
                         f(xa, wa))
            # A symbolic vmapped size (per-example kernels: op by op).
            shapes = [jax.ShapeDtypeStruct((b, *a.shape[1:]) if ax == 0 else a.shape,
                                           a.dtype) for a, ax in zip((xa, wa), axes)]
            exported = jax.export.export(f)(*shapes)
            for n in (1, 2):
                args = [a[:n] if ax == 0 else a for a, ax in zip((xa, wa), axes)]
                jax.tree.map(assert_close, exported.call(*args), f(*args))


# --- structure: one folded equation, the batched call's GEMMs ---------------------


def _dot_generals(f, *args):
    """The result types of every ``dot_general`` in ``f``'s lowered module."""
    text = jax.jit(f).lower(*args).as_text()
    return sorted(re.findall(r"stablehlo\.dot_general.*?->\s*(tensor<[^>]*>)", text))


# (case, profile changes, whether the examples' kernel gradients loop)
LOOPS = [
    ("dense_1d_long", {}, True),  # per-tap GEMMs on each image: a loop plan
    ("dense_1d_long", {"per_example_loop": False}, False),  # the gpu/tpu way
    ("dense_nchw", {}, False),  # one patch GEMM per example
    ("depthwise", {}, False),  # few positions: one fused loop for all
    # a small fused row scan, and a large one
    ("depthwise", {"kernel_grad_positions_max": 0}, False),
    ("depthwise", {"kernel_grad_positions_max": 0, "per_example_loop_min_bytes": 1},
     True),
    ("depthwise_conv", {"kernel_grad_positions_max": 0,
                        "per_example_loop_min_bytes": 1}, True),
    # vmapped, the guard's conditional would run both branches
    ("depthwise_1d_fft", {}, True),
]


@pytest.mark.parametrize("name,changes,loop", LOOPS,
                         ids=[f"{n}-{'-'.join(c) or 'cpu'}" for n, c, _ in LOOPS])
def test_per_example_kernel_gradients_loop_or_side_by_side(name, changes, loop, rng):
    # Per-example kernel gradients run one example after another (a scan
    # over the examples) or vmapped side by side, as the plan rule says;
    # both equal lax's per-example gradients (or a loop of gradients).
    (case,) = [c for c in CASES if c.name == name]
    x, w = _args(case, (0, None), rng)

    def per_example(w, x, f=case.fn):
        return jax.vmap(jax.grad(lambda w, x1: jnp.sum(jnp.sin(f(x1, w)))),
                        (None, 0))(w, x)

    profile = jaxconv.get_profile("cpu").replace(**changes)
    with jaxconv.use_profile(profile):
        got = jax.jit(per_example)(w, x)
        (eqn,) = [e for e in _equations(jax.make_jaxpr(per_example)(w, x).jaxpr)
                  if e.params["role"] == "rhs_t_each"]
        rows = jaxconv.explain(per_example, w, x)
    (row,) = [r for r in rows if "per-example" in r.op]
    assert row.op.endswith(", looped)" if loop else "kernel grads)")
    a, b = (jnp.zeros(v.aval.shape, v.aval.dtype) for v in eqn.invars)
    impl = jax.make_jaxpr(lambda a, b: _primitive._impl(a, b, **eqn.params))(a, b)
    scans = [e for e in impl.jaxpr.eqns if e.primitive.name == "scan"]
    # looped: one scan over the examples holds everything; side by side, the
    # plan's own loops (if any) run over other lengths
    lengths = [e.params["length"] for e in scans]
    assert lengths == [B] if loop else B not in lengths
    if case.ref is not None:
        want = jax.vmap(jax.grad(lambda w, x1: jnp.sum(jnp.sin(case.ref(x1, w)))),
                        (None, 0))(w, x)
    else:
        want = _loop(lambda x1, w: jax.grad(
            lambda w: jnp.sum(jnp.sin(case.fn(x1, w))))(w), (0, None), x, w)
    assert_close(got, want)


@pytest.mark.parametrize("budget,folded", [(1 << 20, False), (4000, True)])
def test_depthwise_per_example_row_scans_past_the_carry_budget_fold(budget, folded,
                                                                    rng):
    """A depthwise kernel gradient planned as a row scan keeps one example's
    accumulators within ``rowscan_carry_bytes``; vmapped side by side every
    example adds its own, so past the budget the examples fold into the
    channels (one kernel gradient of B x C channels, its row width planned
    for all of them) instead.  Both equal lax's per-example gradients."""
    (case,) = [c for c in CASES if c.name == "depthwise"]
    x, w = _args(case, (0, None), rng)

    def per_example(w, x, f=case.fn):
        return jax.vmap(jax.grad(lambda w, x1: jnp.sum(jnp.sin(f(x1, w)))),
                        (None, 0))(w, x)

    # one example's carry: 6 columns x 9 taps x 8 channels x 8 bytes = 3456
    profile = jaxconv.get_profile("cpu").replace(
        kernel_grad_positions_max=0, rowscan_carry_bytes=budget)
    with jaxconv.use_profile(profile):
        got = jax.jit(per_example)(w, x)
        roles = [e.params["role"] for e in _equations(
            jax.make_jaxpr(per_example)(w, x).jaxpr)]
        rows = jaxconv.explain(per_example, w, x)
    (row,) = [r for r in rows if "kernel grad" in r.op]
    assert row.plan.param("kernel_grad") == "rowscan"
    if folded:
        assert "rhs_t_each" not in roles
        assert row.op == "depthwise conv (kernel grad)"
        assert row.plan.problem.groups == B * 4  # the examples join the channels
    else:
        assert "rhs_t_each" in roles and row.op.endswith("(per-example kernel grads)")
    want = jax.vmap(jax.grad(lambda w, x1: jnp.sum(jnp.sin(case.ref(x1, w)))),
                    (None, 0))(w, x)
    assert_close(got, want)


def test_vmap_is_one_folded_convolution(rng):
    # Equinox style: an unbatched (C, H, W) example, vmapped over a batch of 8.
    x = jnp.asarray(rng.standard_normal((8, 8, 12, 12)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((8, 8, 3, 3)), jnp.float32)

    def single(x1, w):
        return jl.conv_general_dilated(x1[None], w, (1, 1), "SAME")[0]

    def batched(x, w):
        return jl.conv_general_dilated(x, w, (1, 1), "SAME")

    vm = jax.vmap(single, (0, None))
    (eqn,) = _equations(jax.make_jaxpr(jax.jit(vm))(x, w).jaxpr)
    assert eqn.params["role"] == "fwd"
    assert eqn.invars[0].aval.shape == (8, 12, 12, 8)  # canonical, folded batch
    assert _dot_generals(vm, x, w) == _dot_generals(batched, x, w)

    # The kernel gradient through the vmap and per-example gradients: one
    # forward and one kernel-gradient equation, each on the folded problem.
    def wgrad(w, x):
        return jax.grad(lambda w: jnp.sum(vm(x, w) ** 2))(w)

    def wgrad_batched(w, x):
        return jax.grad(lambda w: jnp.sum(batched(x, w) ** 2))(w)

    eqns = _equations(jax.make_jaxpr(wgrad)(w, x).jaxpr)
    assert [e.params["role"] for e in eqns] == ["fwd", "rhs_t"]
    assert _dot_generals(wgrad, w, x) == _dot_generals(wgrad_batched, w, x)
    # Input and kernel gradients through the vmap (a layer inside a model):
    # the batched call's three equations, each on the folded problem.
    def grads(w, x):
        return jax.grad(lambda w, x: jnp.sum(vm(x, w) ** 2), (0, 1))(w, x)

    def grads_batched(w, x):
        return jax.grad(lambda w, x: jnp.sum(batched(x, w) ** 2), (0, 1))(w, x)

    eqns = _equations(jax.make_jaxpr(grads)(w, x).jaxpr)
    assert sorted(e.params["role"] for e in eqns) == ["fwd", "lhs_t", "rhs_t"]
    assert all(e.invars[0].aval.shape[0] == 8 for e in eqns)
    assert _dot_generals(grads, w, x) == _dot_generals(grads_batched, w, x)
    # Per-example gradients of a 3x3 kernel: one equation of per-example
    # kernel gradients, each on its own example (a batch of GEMMs, no
    # transposes into groups).
    per_example = jax.vmap(jax.grad(lambda w, x1: jnp.sum(single(x1, w) ** 2)),
                           (None, 0))
    eqns = _equations(jax.make_jaxpr(per_example)(w, x).jaxpr)
    assert [e.params["role"] for e in eqns] == ["fwd", "rhs_t_each"]
    assert eqns[1].invars[0].aval.shape == (8, 1, 12, 12, 8)
    assert eqns[1].params["operand_shape"] == (3, 3, 8, 8)
    assert eqns[1].outvars[0].aval.shape == (8, 3, 3, 8, 8)
    rows = jaxconv.explain(per_example, w, x)
    assert [r.op for r in rows] == ["conv", "conv (per-example kernel grads)"]
    assert rows[1].input_shape == (1, 12, 12, 8)

    # A 1x1 kernel folds: per-example kernels are 8 groups of 8 -> 8 channels.
    w1 = w[:, :, :1, :1]
    eqns = _equations(jax.make_jaxpr(per_example)(w1, x).jaxpr)
    assert [e.params["role"] for e in eqns] == ["fwd", "rhs_t"]
    assert eqns[1].params["feature_group_count"] == 8
    assert eqns[1].params["operand_shape"] == (1, 1, 8, 64)


@pytest.mark.parametrize("profile,role", [("cpu", "rhs_t_each"), ("gpu", "rhs_t")])
def test_per_example_gradients_of_wide_1x1_kernels(profile, role, rng):
    # 1x1 kernels with per_example_pointwise_min_o (64) output channels or
    # more: each example's x_e^T @ ct_e on the cpu profile, folded into
    # feature groups on the accelerators'; both equal lax's.
    x = jnp.asarray(rng.standard_normal((8, 6, 6, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((1, 1, 8, 64)), jnp.float32)

    def per_example(conv, w, x):
        one = lambda w, x1: jnp.sum(jnp.sin(conv(  # noqa: E731
            x1[None], w, (1, 1), "VALID", dimension_numbers=NHWC)[0]))
        return jax.vmap(jax.grad(one), (None, 0))(w, x)

    with jaxconv.use_profile(profile):
        f = functools.partial(per_example, jl.conv_general_dilated)
        eqns = _equations(jax.make_jaxpr(f)(w, x).jaxpr)
        assert [e.params["role"] for e in eqns] == ["fwd", role]
        got = jax.jit(f)(w, x)
    assert got.shape == (8, 1, 1, 8, 64)
    assert_close(got, per_example(lax.conv_general_dilated, w, x))
    # narrower 1x1 kernels fold on every profile
    eqns = _equations(jax.make_jaxpr(f)(w[..., :63], x).jaxpr)
    assert [e.params["role"] for e in eqns] == ["fwd", "rhs_t"]


@pytest.mark.parametrize("stride,images", [((1, 1), 1), ((2, 1), 1), ((1, 1), 2)],
                         ids=["stride1", "strided", "two-images"])
def test_depthwise_kernel_gradients_over_few_positions(stride, images, rng):
    # A 5x5 depthwise kernel (channel multiplier 2) on a 3x4 map: fewer
    # output positions than taps, so the kernel gradient is one fused loop
    # over the positions, all examples at once per example (one image each)
    # or a few examples per scan step (batched); values as lax's.
    x = jnp.asarray(rng.standard_normal((6, images, 3, 4, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 5, 1, 8)), jnp.float32)

    def per_example(conv, w, x):
        def one(w, x1):
            y = conv(x1, w, stride, "SAME", dimension_numbers=NHWC,
                     feature_group_count=4)
            return jnp.sum(jnp.sin(y))
        return jax.vmap(jax.grad(one), (None, 0))(w, x)

    f = functools.partial(per_example, jl.conv_general_dilated)
    roles = [e.params["role"] for e in _equations(jax.make_jaxpr(f)(w, x).jaxpr)]
    assert roles == ["fwd", "rhs_t_each"]
    (row,) = [r for r in jaxconv.explain(f, w, x) if "kernel grads" in r.op]
    assert row.plan.param("kernel_grad") == "positions"
    got = jax.jit(f)(w, x)
    assert got.shape == (6, 5, 5, 1, 8)
    assert_close(got, per_example(lax.conv_general_dilated, w, x))
    # the batched kernel gradient: 12 examples of 6 or 12 positions
    batched = lambda conv, w: per_example(conv, w, x.reshape(1, -1, *x.shape[2:]))[0]  # noqa: E731
    assert_close(jax.jit(functools.partial(batched, jl.conv_general_dilated))(w),
                 batched(lax.conv_general_dilated, w))


@pytest.mark.parametrize("kernel,stride,spatial,out_c,positions", [
    ((1, 1), (1, 1), (2, 2), 16, True),  # narrow 1x1: was folded into groups
    ((1, 1), (2, 2), (4, 4), 96, True),
    ((3, 3), (2, 1), (6, 4), 8, True),   # 3x4 positions, overlapping windows
    ((2, 2), (2, 2), (4, 4), 8, False),  # disjoint windows keep the GEMM
    ((3, 3), (1, 1), (5, 4), 8, False),  # 20 positions
], ids=["1x1", "1x1-strided", "3x3", "2x2-disjoint", "20-positions"])
def test_dense_per_example_kernel_gradients_over_few_positions(
        kernel, stride, spatial, out_c, positions, rng):
    # Layers written for one image with at most per_example_positions_max
    # (16) output positions: each example's kernel gradient is a sum of
    # products over its positions, every example at once, no GEMM; values
    # as lax's per-example gradients.
    x = jnp.asarray(rng.standard_normal((6, 1, *spatial, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*kernel, 5, out_c)), jnp.float32)

    def per_example(conv, w, x):
        def one(w, x1):
            return jnp.sum(jnp.sin(conv(x1, w, stride, "SAME", dimension_numbers=NHWC)))
        return jax.vmap(jax.grad(one), (None, 0))(w, x)

    f = functools.partial(per_example, jl.conv_general_dilated)
    (row,) = [r for r in jaxconv.explain(f, w, x) if "per-example" in r.op]
    assert ("by positions" in row.op) == positions
    grads = [e for e in _equations(jax.make_jaxpr(f)(w, x).jaxpr)
             if e.params["role"] == "rhs_t_each"]
    assert len(grads) == 1
    if positions:
        a, b = (jnp.zeros(v.aval.shape, v.aval.dtype) for v in grads[0].invars)
        text = jax.jit(lambda a, b: _primitive._impl(a, b, **grads[0].params)).lower(
            a, b).as_text()
        assert "dot_general" not in text
    assert_close(jax.jit(f)(w, x), per_example(lax.conv_general_dilated, w, x))
    with jaxconv.use_profile("gpu"):  # unmeasured on accelerators
        rows = jaxconv.explain(f, w, x)
    assert not any("by positions" in r.op for r in rows)


def _assert_same_non_finite(got, want):
    """NaN, +Inf and -Inf in the same places (and some there), the rest close."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    assert np.isnan(want).any() or np.isinf(want).any()
    finite = np.isfinite(want)
    assert_close(got[finite], want[finite])


NWC = ("NWC", "WIO", "NWC")
TAP_GEMMS = {  # one example's x, its kernel, the conv, whether by tap GEMMs
    "transposed": ((1, 2, 3, 4), (2, 2, 4, 16), lambda x, w, c: c(
        x, w, (2, 2), "VALID", dimension_numbers=NHWC), True),
    "transposed-same": ((1, 2, 2, 4), (4, 4, 4, 16), lambda x, w, c: c(
        x, w, (2, 2), "SAME", dimension_numbers=NHWC), True),
    "transposed-1d": ((1, 4, 6), (16, 6, 16), lambda x, w, c: c(
        x, w, (8,), ((4, 4),), dimension_numbers=NWC), True),
    "two-images": ((2, 2, 2, 4), (2, 2, 4, 16), lambda x, w, c: c(
        x, w, (2, 2), "VALID", dimension_numbers=NHWC), True),
    "transposed-many-positions": ((1, 4, 4, 4), (2, 2, 4, 16), lambda x, w, c: c(
        x, w, (2, 2), "VALID", dimension_numbers=NHWC), False),
    "ordinary": ((1, 5, 4, 4), (3, 3, 4, 48), lambda x, w, c: c(
        x, w, (1, 1), "SAME", dimension_numbers=NHWC), False),
    "grouped": ((1, 6, 5, 8), (3, 3, 2, 12), lambda x, w, c: c(
        x, w, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=4), True),
    "grouped-strided": ((1, 7, 6, 6), (3, 2, 2, 9), lambda x, w, c: c(
        x, w, (2, 1), "SAME", dimension_numbers=NHWC, feature_group_count=3), True),
}


@pytest.mark.parametrize("name", list(TAP_GEMMS))
def test_per_example_kernel_gradients_by_tap_gemms(name, rng):
    # Layers of few positions and many channels: every example's kernel
    # gradient is one GEMM per example and tap, all at once (one
    # dot_general); transposed layers no longer fold the examples into
    # feature groups.  Ordinary layers do so only for kernels of at least
    # per_example_patches_min_bytes (16 MiB) each: smaller ones loop.
    # Grouped layers with patches of at most per_example_grouped_patch_bytes
    # per example: one GEMM per example and group, else folded.
    xs, ws, conv, tap_gemms = TAP_GEMMS[name]
    transposed = name.startswith("transposed") or name == "two-images"
    x = jnp.asarray(rng.standard_normal((5, *xs)), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)

    def per_example(c, w, x):
        def one(w, x1):
            return jnp.sum(jnp.sin(conv(x1, w, c)))
        return jax.vmap(jax.grad(one), (None, 0))(w, x)

    ours = functools.partial(
        per_example, jl.conv_transpose if transposed else jl.conv_general_dilated)
    want = per_example(lax.conv_transpose if transposed else lax.conv_general_dilated,
                       w, x)
    profiles = [jaxconv.get_profile("cpu")]
    if name == "ordinary":  # the same layer with a large enough kernel
        profiles.append(profiles[0].replace(per_example_patches_min_bytes=0))
    if name.startswith("grouped"):  # patches beyond the bound: folded
        profiles.append(profiles[0].replace(per_example_grouped_patch_bytes=0))
    for k, profile in enumerate(profiles):
        expect = tap_gemms != (k == 1)
        jax.clear_caches()  # the profile is read when a function is traced
        with jaxconv.use_profile(profile):
            ops = [r.op for r in jaxconv.explain(ours, w, x)]
            assert any("by tap GEMMs" in op for op in ops) == expect, ops
            grads = [e for e in _equations(jax.make_jaxpr(ours)(w, x).jaxpr)
                     if e.params["role"] == "rhs_t_each"]
            assert len(grads) == (1 if expect or name == "ordinary" else 0)
            if expect:
                a, b = (jnp.zeros(v.aval.shape, v.aval.dtype) for v in grads[0].invars)
                text = jax.jit(lambda a, b: _primitive._impl(
                    a, b, **grads[0].params)).lower(a, b).as_text()
                assert text.count("dot_general") == 1
            assert_close(jax.jit(ours)(w, x), want)
    with jaxconv.use_profile("gpu"):  # unmeasured on accelerators
        rows = jaxconv.explain(ours, w, x)
    assert not any("by tap GEMMs" in r.op for r in rows)


def test_per_example_kernel_gradients_of_small_row_blocked_patch_matrices(rng):
    # A 3x3x3 conv of 3 input channels plans one example as a patch matrix
    # built in row blocks (a loop each example would run on its own); where
    # that matrix takes at most per_example_patches_cache_bytes per example
    # and every example's together at most per_example_patches_total_bytes,
    # the examples run at once, one GEMM per example over its whole matrix.
    b, dn = 5, ("NDHWC", "DHWIO", "NDHWC")
    x = jnp.asarray(rng.standard_normal((b, 1, 10, 10, 10, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 3, 8)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((b, 1, 10, 10, 10, 8)), jnp.float32)

    def per_example(conv, w, x):
        def one(w, x1, c1):
            return jnp.sum(conv(x1, w, (1, 1, 1), "SAME", dimension_numbers=dn) * c1)
        return jax.vmap(jax.grad(one), (None, 0, 0))(w, x, c)

    ours = functools.partial(per_example, jl.conv_general_dilated)
    theirs = functools.partial(per_example, lax.conv_general_dilated)
    base = jaxconv.get_profile("cpu").replace(
        per_example_patches_cache_bytes=2 << 20,
        per_example_patches_total_bytes=12 << 20)
    patch_bytes = 10 ** 3 * 27 * 3 * 4  # one example's patch matrix (324 KB)
    cases = [  # (profile, all at once?)
        (base, True),
        (base.replace(per_example_patches_cache_bytes=patch_bytes - 1), False),
        (base.replace(per_example_patches_total_bytes=b * patch_bytes - 1), False),
        (base.replace(per_example_patches_total_bytes=b * patch_bytes), True),
        # ... and they come out of the workspace
        (base.replace(per_example_patches_total_bytes=b * patch_bytes,
                      workspace_bytes=b * patch_bytes - 1), False),
    ]
    bad = x.at[1, 0, 0, 4, 5, 1].set(jnp.nan).at[3, 0, 5, 5, 5, 2].set(jnp.inf)
    for profile, at_once in cases:
        jax.clear_caches()  # the profile is read when a function is traced
        with jaxconv.use_profile(profile):
            rows = jaxconv.explain(ours, w, x)
            grad_row = [r for r in rows if "per-example" in r.op][-1]
            # the precondition: one example's plan loops over row blocks
            assert grad_row.formulation == "taps/im2col", rows
            assert grad_row.loop_steps > 0, rows
            assert ("by tap GEMMs" in grad_row.op) == at_once, grad_row.op
            assert ("looped" in grad_row.op) == (not at_once), grad_row.op
            assert_close(jax.jit(ours)(w, x), theirs(w, x))
            # NaN/Inf stay local: non-finite exactly where lax's are
            want = np.asarray(theirs(w, bad))
            assert not np.isnan(want).all()
            _assert_same_non_finite(np.asarray(jax.jit(ours)(w, bad)), want)
    with jaxconv.use_profile("gpu"):  # not on accelerators
        rows = jaxconv.explain(ours, w, x)
    assert not any("by tap GEMMs" in r.op for r in rows)


def test_per_example_kernel_gradients_of_grouped_row_scans(rng):
    # A grouped 3x3 conv of 4 input channels per group plans one example as
    # fused multiply-adds with the row-scan kernel gradient.  Per-example
    # gradients run each example's row scan, side by side while all
    # examples' accumulator rows take at most per_example_grouped_carry_bytes,
    # one example after another beyond, and fold into B * G feature groups
    # with the field at 0 (and on accelerators) unless the accumulators
    # reach per_example_grouped_loop_min_bytes.
    b, groups = 4, 4
    x = jnp.asarray(rng.standard_normal((b, 1, 9, 8, 16)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 16)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((b, 1, 9, 8, 16)), jnp.float32)

    def per_example(conv, w, x):
        def one(w, x1, c1):
            y = conv(x1, w, (1, 1), "SAME", dimension_numbers=NHWC,
                     feature_group_count=groups)
            return jnp.sum(y * c1)
        return jax.vmap(jax.grad(one), (None, 0, 0))(w, x, c)

    ours = functools.partial(per_example, jl.conv_general_dilated)
    theirs = functools.partial(per_example, lax.conv_general_dilated)
    # one example's accumulators: a row of 8 columns, 9 taps x 4 channels,
    # 16 outputs each, float32
    carry = 8 * 9 * 4 * 16 * 4
    # (each example's patches would be small enough for one GEMM per group:
    # that form off here)
    base = jaxconv.get_profile("cpu").replace(per_example_grouped_carry_bytes=b * carry,
                                              per_example_grouped_patch_bytes=0)
    cases = [  # (profile, how: "side by side", "looped" or "folded")
        (base, "side by side"),
        (base.replace(per_example_grouped_carry_bytes=b * carry - 1), "looped"),
        (base.replace(per_example_grouped_carry_bytes=0), "folded"),
        # with that field 0: one after another from
        # per_example_grouped_loop_min_bytes of accumulators, folded below
        (base.replace(per_example_grouped_carry_bytes=0,
                      per_example_grouped_loop_min_bytes=b * carry), "looped"),
        (base.replace(per_example_grouped_carry_bytes=0,
                      per_example_grouped_loop_min_bytes=b * carry + 1), "folded"),
    ]
    bad = x.at[1, 0, 0, 4, 5].set(jnp.nan).at[3, 0, 5, 5, 2].set(jnp.inf)
    for profile, how in cases:
        jax.clear_caches()  # the profile is read when a function is traced
        with jaxconv.use_profile(profile):
            rows = jaxconv.explain(ours, w, x)
            grad_row = [r for r in rows if "kernel grad" in r.op][-1]
            # the precondition: the fused multiply-adds, one example each or
            # B * G groups folded on one image
            assert grad_row.formulation == "taps/grouped", rows
            assert ("per-example" in grad_row.op) == (how != "folded"), grad_row.op
            assert ("looped" in grad_row.op) == (how == "looped"), grad_row.op
            if how == "folded":
                assert grad_row.input_shape == (1, 9, 8, b * 16), grad_row
            assert_close(jax.jit(ours)(w, x), theirs(w, x))
            # NaN/Inf stay local: non-finite exactly where lax's are
            want = np.asarray(theirs(w, bad))
            assert not np.isnan(want).all()
            _assert_same_non_finite(np.asarray(jax.jit(ours)(w, bad)), want)
    with jaxconv.use_profile("gpu"):  # not on accelerators: folded
        rows = jaxconv.explain(ours, w, x)
    assert not any("per-example" in r.op for r in rows), rows


COTANGENT_GEMMS = {
    # input (one example), kernel, padding, rhs dilation[, lhs dilation]
    "1d-valid": ((40, 12), (5, 12, 1), "VALID", (1,)),
    "1d-same-dilated": ((40, 16), (3, 16, 2), ((2, 2),), (2,)),
    "2d-same": ((9, 7, 24), (3, 3, 24, 2), "SAME", (1, 1)),
    # transposed (T * O <= I * s): the copies are strided slices of the
    # cotangent at the undilated input's positions
    "1d-transposed": ((24, 16), (8, 16, 4), ((2, 5),), (1,), (4,)),
    "2d-transposed-valid": ((6, 5, 16), (3, 3, 16, 4), ((0, 0), (0, 0)), (1, 1),
                            (2, 2)),
    # 4x4 stride 2 with one row and column cropped on each side: the taps
    # pair three boxes of input elements per axis
    "2d-transposed-cropped": ((5, 4, 16), (4, 4, 16, 4), ((2, 2), (2, 2)), (1, 1),
                              (2, 2)),
}


def test_transposed_kernel_gradients_by_cotangent_gemms_group_taps_by_box(rng):
    """A transposed layer's taps pair contiguous boxes of input elements:
    kernel 16, stride 8, cropped by 4 on each side (HiFi-GAN's upsampler)
    has three, every element, all but the last, all but the first, of 4, 8
    and 4 taps.  With ``cotangent_box_min_taps`` (4 on the cpu profile) or
    fewer, its kernel gradient is one GEMM per box, with no masked border:
    three ``dot_general``s and no ``select_n``; values as the definition
    ``g[t] = sum_q x[q] (outer) ct[11 + 8 q - t]``.  Above it (and for
    kernel 4, stride 2: boxes of 1, 2 and 1 taps) one GEMM over every
    element and the border's products tap by tap."""
    from jaxconv.algorithms import tapgemm

    x = jnp.asarray(rng.standard_normal((2, 1, 12, 8)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((2, 1, 96, 4)), jnp.float32)
    box = jaxconv.get_profile("cpu").cotangent_box_min_taps
    assert box == 4

    def grads(x, c, box=box, kernel=16, stride=8, crop=4):
        lo = kernel - 1 - crop
        return tapgemm.kernel_grads_by_cotangent(
            x, c, (kernel,), ((lo, lo),), (1,), None, jnp.float32, (stride,), box)

    def count(f, name, *args):
        return len(_equations(jax.make_jaxpr(f)(*args).jaxpr, name))

    assert count(grads, "dot_general", x, c) == 3
    assert count(grads, "select_n", x, c) == 0
    for other in (functools.partial(grads, box=5), functools.partial(grads, box=0)):
        assert count(other, "dot_general", x, c) == 2  # the GEMM + border
        assert count(other, "select_n", x, c) > 0  # the border masked
        assert_close(other(x, c), grads(x, c))
    c4 = jnp.asarray(rng.standard_normal((2, 1, 24, 4)), jnp.float32)
    small = functools.partial(grads, kernel=4, stride=2, crop=1)
    assert count(small, "dot_general", x, c4) == 2
    want = np.zeros((2, 16, 8, 4))
    xn, cn = np.asarray(x[:, 0], np.float64), np.asarray(c[:, 0], np.float64)
    for t in range(16):
        for q in range(12):
            if 0 <= 11 + 8 * q - t < 96:
                want[:, t] += np.einsum("bi,bo->bio", xn[:, q], cn[:, 11 + 8 * q - t])
    assert_close(grads(x, c), want)


@pytest.mark.parametrize("name", list(COTANGENT_GEMMS))
def test_per_example_kernel_gradients_by_cotangent_gemms(name, rng):
    # Layers with few outputs (T * O <= I): every example's kernel gradient
    # is one GEMM against the cotangent's T shifted copies, all at once; the
    # copies' zeros meet input elements that a tap pairs with no output
    # (VALID edges), so that border's products are added tap by tap.
    xs, ws, padding, dilation, *lhs = COTANGENT_GEMMS[name]
    nd = len(ws) - 2
    lhs_dilation = tuple(lhs[0]) if lhs else (1,) * nd
    dn = (("NWC", "WIO", "NWC"), NHWC)[nd - 1]
    x = jnp.asarray(rng.standard_normal((4, 1, *xs)), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)

    def conv_of(conv):
        return lambda x1, w: conv(x1, w, (1,) * nd, padding, lhs_dilation=lhs_dilation,
                                  rhs_dilation=dilation, dimension_numbers=dn)

    # a cotangent of its own per example, independent of the input (so that
    # a non-finite input reaches the kernel gradient only through products)
    y = jax.eval_shape(conv_of(lax.conv_general_dilated), x[0], w)
    c = jnp.asarray(rng.standard_normal((4, *y.shape)), jnp.float32)

    def per_example(conv, w, x):
        def one(w, x1, c1):
            return jnp.sum(conv_of(conv)(x1, w) * c1)
        return jax.vmap(jax.grad(one), (None, 0, 0))(w, x, c)

    ours = functools.partial(per_example, jl.conv_general_dilated)
    theirs = functools.partial(per_example, lax.conv_general_dilated)
    jax.clear_caches()
    ops = [r.op for r in jaxconv.explain(ours, w, x)]
    assert any("by cotangent GEMMs" in op for op in ops), ops
    assert_close(jax.jit(ours)(w, x), theirs(w, x))
    # non-finite inputs at an edge and inside one example: non-finite where
    # lax's gradients are (the form is still the one taken), the rest as
    # with the form off
    bad = x.at[(1, 0, *(0,) * nd, 2)].set(jnp.nan)
    bad = bad.at[(2, 0, *(3,) * nd, 0)].set(jnp.inf)
    assert any("by cotangent GEMMs" in r.op for r in jaxconv.explain(ours, w, bad))
    got = np.asarray(jax.jit(ours)(w, bad))
    jax.clear_caches()
    with jaxconv.use_profile(jaxconv.get_profile("cpu").replace(
            per_example_cotangent_ratio=0.0)):
        assert not any("by cotangent GEMMs" in r.op
                       for r in jaxconv.explain(ours, w, bad))
        off = np.asarray(jax.jit(ours)(w, bad))
    want = np.asarray(theirs(w, bad))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], off[fin], rtol=1e-5, atol=1e-5)
    # (without the border's own products, the copies' zeros would meet the
    # edge NaN in every tap, where lax's products reach only the tap that
    # pairs it with an output)
    if padding in ("VALID", ((0, 0),) * nd):
        from jaxconv.algorithms import tapgemm

        def raw(x):
            return np.asarray(tapgemm.kernel_grads_by_cotangent(
                x, c, ws[:-2], ((0, 0),) * nd, dilation, None, jnp.float32,
                lhs_dilation))

        np.testing.assert_array_equal(np.isnan(raw(bad)), np.isnan(want))
        assert_close(raw(x), theirs(w, x))
        rows, masks = tapgemm.dilated_cotangent_rows(
            c[:, 0], bad.shape[2:-1], ws[:-2], ((0, 0),) * nd,
            lhs_dilation, dilation)
        assert not np.logical_and.reduce(masks).all()  # the case has a border
        n_b = bad.shape[0]
        plain = np.einsum("bqi,bqto->bito",
                          np.asarray(bad[:, 0]).reshape(n_b, -1, ws[-2]),
                          np.stack([np.asarray(r) for r in rows], axis=-2).reshape(
                              n_b, -1, len(rows), ws[-1]))
        assert np.isnan(plain[1]).sum() > np.isnan(want[1]).sum()
    # more outputs than T * O <= I allows, and the gpu profile: not this form
    wide = jnp.asarray(rng.standard_normal((*ws[:-1], ws[-2])), jnp.float32)

    def per_example_sum(w, x):
        def one(w, x1):
            return jnp.sum(conv_of(jl.conv_general_dilated)(x1, w))
        return jax.vmap(jax.grad(one), (None, 0))(w, x)

    assert any("by cotangent GEMMs" in r.op
               for r in jaxconv.explain(per_example_sum, w, x))
    assert not any("by cotangent GEMMs" in r.op
                   for r in jaxconv.explain(per_example_sum, wide, x))
    with jaxconv.use_profile("gpu"):
        assert not any("by cotangent GEMMs" in r.op
                       for r in jaxconv.explain(ours, w, x))


@pytest.mark.parametrize("padding", [((0, 0),), ((2, 5),), ((7, 7),), ((9, -3),),
                                     ((1, 2), (3, 0))])
@pytest.mark.parametrize("lhs", [1, 2, 3])
def test_border_is_the_elements_some_tap_never_pairs(padding, lhs):
    # The guard of the cotangent GEMMs (and of the shifted-sum forms' kernel
    # gradients) reads the input elements that some tap pairs with no output
    # position: checked against that definition, for plans that carry an
    # lhs dilation (transposed) and plans that don't.
    from jaxconv._canonical import canonical_plan, planned_input
    from jaxconv._primitive import _border

    nd = len(padding)
    sp, kernel, dil = (9, 7)[:nd], (4, 3)[:nd], (2, 1)[:nd]
    x = jnp.zeros((1, *sp, 1), jnp.float32)
    w = jnp.zeros((*kernel, 1, 1), jnp.float32)
    params = dict(stride=(1,) * nd, padding=padding, lhs_dilation=(lhs,) * nd,
                  rhs_dilation=dil, feature_group_count=1, batch_group_count=1)
    plan = canonical_plan(x, w, **params)
    # element q sits at lo + q * s of the dilated, padded input; tap u at
    # output j reads j + u * d: q is unpaired by u when lo + q*s - u*d is no
    # output position
    dn = NHWC if nd == 2 else ("NWC", "WIO", "NWC")
    out = jax.eval_shape(lambda x, w: lax.conv_general_dilated(
        x, w, (1,) * nd, padding, (lhs,) * nd, dil, dimension_numbers=dn),
        x, w).shape[1:-1]
    want = np.zeros(sp, bool)
    for q in np.ndindex(*sp):
        for u in np.ndindex(*kernel):
            pos = [lo + qa * lhs - ua * d
                   for (lo, _), qa, ua, d in zip(padding, q, u, dil)]
            if any(not 0 <= p_ < o for p_, o in zip(pos, out)):
                want[q] = True
    # mark the slabs _border returns on an index array
    idx = jnp.arange(np.prod(sp), dtype=jnp.float32).reshape(1, *sp, 1) + 1
    got = np.zeros(np.prod(sp) + 1, bool)
    for slab in _border(idx, plan, params):
        got[np.asarray(slab).astype(int).ravel()] = True
    carried = (plan.problem.lhs_dilation == (lhs,) * nd
               and plan.problem.pads == tuple(padding))
    if carried:
        np.testing.assert_array_equal(got[1:].reshape(sp), want)
    else:
        # materialised (dilated, padded or cropped): the slabs are of that
        # input; a cropped element is no part of it and reaches nothing
        present = np.zeros(np.prod(sp) + 1, bool)
        present[np.asarray(planned_input(
            idx, plan, padding=padding, lhs_dilation=(lhs,) * nd,
            batch_group_count=1)).astype(int).ravel()] = True
        np.testing.assert_array_equal(got[1:].reshape(sp),
                                      want & present[1:].reshape(sp))


@pytest.mark.parametrize("algorithm", ["direct", "patches", "taps"])
@pytest.mark.parametrize("groups", [1, 4])
def test_per_example_gradients_of_requested_algorithms(algorithm, groups, rng):
    # A requested formulation runs example by example ("direct", "patches"
    # materialise the lhs dilation: their problem shows none, yet the input
    # is dilated); "taps" is the library's own family, tap GEMMs included.
    x = jnp.asarray(rng.standard_normal((5, 1, 2, 3, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 8 // groups, 48)), jnp.float32)

    def per_example(conv, w, x, **kw):
        def one(w, x1):
            return jnp.sum(jnp.sin(conv(
                x1, w, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                dimension_numbers=NHWC, feature_group_count=groups, **kw)))
        return jax.vmap(jax.grad(one), (None, 0))(w, x)

    ours = functools.partial(per_example, jl.conv_general_dilated, algorithm=algorithm)
    ops = [r.op for r in jaxconv.explain(ours, w, x)]
    assert any("by tap GEMMs" in op for op in ops) == (
        algorithm == "taps" and groups == 1), ops
    assert_close(jax.jit(ours)(w, x), per_example(lax.conv_general_dilated, w, x))


@pytest.mark.parametrize("where", ["input", "cotangent"])
def test_tap_gemm_kernel_gradients_keep_non_finite_values(where, rng):
    # A transposed layer that crops its output: some input elements meet
    # only some taps, and a NaN/Inf there must reach just those taps' kernel
    # entries, as in lax's gradient of each example.
    x = np.asarray(rng.standard_normal((3, 1, 3, 3, 2)), np.float32)
    ct = np.asarray(rng.standard_normal((3, 1, 3, 2, 32)), np.float32)
    if where == "input":
        x[0, 0, 0, 0, 0], x[1, 0, 2, 1, 1], x[2, 0, 1, 2, 0] = np.nan, np.inf, -np.inf
    else:
        ct[0, 0, 0, 0, 0], ct[2, 0, 2, 1, 5] = np.inf, -np.inf
    w = jnp.ones((3, 3, 2, 32), jnp.float32)
    geometry = dict(window_strides=(1, 1), padding=((-1, 1), (0, -1)),
                    lhs_dilation=(2, 2), dimension_numbers=NHWC)

    def per_example(conv, x, ct):
        def one(x1, ct1):
            return jax.vjp(lambda w: conv(x1, w, **geometry), w)[1](ct1)[0]
        return jax.vmap(one)(x, ct)

    ours = functools.partial(per_example, jl.conv_general_dilated)
    (row,) = [r for r in jaxconv.explain(ours, x, ct) if "per-example" in r.op]
    assert "by tap GEMMs" in row.op
    got = np.asarray(jax.jit(ours)(x, ct))
    # The oracle is lax's gradient example by example: vmapped, XLA:CPU's
    # batch-grouped kernel gradient also multiplies the inserted zeros by an
    # Inf cotangent (NaN in taps the definition keeps finite).
    one = lambda x1, ct1: jax.vjp(  # noqa: E731
        lambda w: lax.conv_general_dilated(x1, w, **geometry), w)[1](ct1)[0]
    want = np.stack([np.asarray(one(x[e], ct[e])) for e in range(3)])
    _assert_same_non_finite(got, want)


@pytest.mark.parametrize("where", ["input", "cotangent"])
def test_depthwise_kernel_gradient_over_positions_keeps_non_finite_values(where, rng):
    # Every product lax forms is formed (padding zeros times the cotangent
    # included), so NaN and Inf land on the same kernel entries.
    x = np.asarray(rng.standard_normal((3, 4, 3, 2)), np.float32)
    ct = np.asarray(rng.standard_normal((3, 4, 3, 2)), np.float32)
    if where == "input":
        x[1, 2, 1, 0], x[2, 0, 0, 1] = np.nan, np.inf
    else:
        ct[0, 0, 0, 0], ct[2, 3, 2, 1] = np.inf, -np.inf
    w = jnp.ones((3, 3, 1, 2), jnp.float32)

    def kernel_grad(conv, x, ct):
        f = lambda w: conv(x, w, (1, 1), "SAME", dimension_numbers=NHWC,  # noqa: E731
                           feature_group_count=2)
        return jax.vjp(f, w)[1](ct)[0]

    (row,) = [r for r in jaxconv.explain(
        functools.partial(kernel_grad, jl.conv_general_dilated), x, ct)
        if "kernel grad" in r.op]
    assert row.plan.param("kernel_grad") == "positions"
    ours = functools.partial(kernel_grad, jl.conv_general_dilated)
    got = np.asarray(jax.jit(ours)(x, ct))
    want = np.asarray(kernel_grad(lax.conv_general_dilated, x, ct))
    _assert_same_non_finite(got, want)


def _depthwise_single(x1, w):
    return jl.conv_general_dilated(x1, w, (1, 1), "SAME", dimension_numbers=NHWC,
                                   feature_group_count=x1.shape[-1])


def _depthwise_one_image(x1, w):
    # a layer written for one image, as Equinox's are: add the batch axis,
    # convolve, drop it again
    return _depthwise_single(x1[None], w)[0]


def test_vmapped_depthwise_result_is_not_copied(rng):
    # XLA:CPU copies a whole output updated in place first when it is
    # returned reshaped.  One image per vmapped slice (the unit batch axis
    # dropped again, so the unfolding reshape cancels): the batched call's
    # plan, strips re-poisoned in place.  Several examples per slice (a
    # (B, N, ...) result): the loop leaves its border strips to the batching
    # rule, which re-poisons them on the unfolded result (in place); a
    # folded input gradient, whose unfold is not a plain split of the batch,
    # recomputes them instead.
    x = jnp.asarray(rng.standard_normal((8, 16, 16, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 8)), jnp.float32)
    vm = jax.vmap(_depthwise_one_image, (0, None))
    (eqn,) = _equations(jax.make_jaxpr(vm)(x, w).jaxpr)
    assert eqn.params["reshaped"] is False
    (row,) = jaxconv.explain(vm, x, w)
    assert row.plan.param("guard") == "re-poisoned borders"
    x2 = x.reshape(4, 2, 16, 16, 8)
    vm2 = jax.vmap(_depthwise_single, (0, None))
    (eqn,) = _equations(jax.make_jaxpr(vm2)(x2, w).jaxpr)
    assert eqn.params["reshaped"] == "batch"
    (row,) = jaxconv.explain(vm2, x2, w)
    assert row.plan.param("guard") == "re-poisoned borders, after unfolding"
    for f, a in ((vm, x), (vm2, x2)):
        compiled = jax.jit(f).lower(a, w).compile()
        assert not re.findall(r"f32\[[0-9,]*16,16,8\][^=]*copy\(", compiled.as_text())
        assert compiled.memory_analysis().temp_size_in_bytes < x.nbytes // 4
    # the re-poisoned strips stay out of reverse mode: the kernel gradient
    # through the vmap holds no more temporaries than the batched one's
    ct = jnp.ones((8, 16, 16, 8), jnp.float32)

    def kernel_grad(f, x, ct):
        return jax.vjp(lambda w: f(x, w), w)[1](ct)[0]

    temps = [jax.jit(kernel_grad, static_argnums=0).lower(f, a, c).compile()
             .memory_analysis().temp_size_in_bytes
             for f, a, c in ((vm, x, ct), (vm2, x2, ct.reshape(x2.shape)),
                             (_depthwise_single, x, ct))]
    assert max(temps[:2]) <= temps[2] + 4096, temps
    # per-example input gradients: the flipped-kernel conv is folded too
    gx = jax.vmap(jax.grad(lambda x1, w: jnp.sum(_depthwise_single(x1, w) ** 2)),
                  (0, None))
    guards = [r.plan.param("guard") for r in jaxconv.explain(gx, x2, w)]
    assert guards == ["re-poisoned borders, after unfolding", "recomputed borders"]
    # the kernel gradient differentiates the forward loop: its result is a
    # kernel, not reshaped, and its row shows the plan that runs
    gw = jax.grad(lambda w: jnp.sum(vm2(x2, w) ** 2))
    rows = jaxconv.explain(gw, w)
    assert [(r.op, r.plan.param("guard")) for r in rows] == [
        ("depthwise conv", "re-poisoned borders, after unfolding"),
        ("depthwise conv (kernel grad)", "re-poisoned borders")]


@pytest.mark.parametrize("groups,length,c", [(16, 256, 16), (1, 1024, 64)],
                         ids=["depthwise", "dense"])
def test_per_example_gradients_of_one_image_layers_copy_nothing(groups, length, c,
                                                                 rng):
    # vmap(grad) of a layer written for one image: each example's cotangent
    # reaches the conv as a broadcast (B, *out, O) -> (B, 1, *out, O), which
    # XLA:CPU copied whole (the input too) before the per-example loop
    # sliced examples out of it; the rule drops the unit axis first.
    x = jnp.asarray(rng.standard_normal((8, length, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, c // groups, c)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((8, length, c)), jnp.float32)
    dn = ("NWC", "WIO", "NWC")

    def one(conv, x1, w):
        return conv(x1[None], w, (1,), "SAME", dimension_numbers=dn,
                    feature_group_count=groups)[0]

    def per_example(conv, x, w, ct):
        return jax.vmap(lambda x1, c1: jax.vjp(lambda w_: one(conv, x1, w_), w)[1](
            c1)[0])(x, ct)

    ops = [r.op for r in jaxconv.explain(
        functools.partial(per_example, jl.conv_general_dilated), x, w, ct)]
    assert any("per-example kernel grads, looped" in op for op in ops), ops
    compiled = jax.jit(per_example, static_argnums=0).lower(
        jl.conv_general_dilated, x, w, ct).compile()
    assert not re.findall(rf"f32\[8,1,{length},{c}\][^=]*copy\(", compiled.as_text())
    assert compiled.memory_analysis().temp_size_in_bytes < ct.nbytes
    np.testing.assert_allclose(compiled(x, w, ct),
                               per_example(lax.conv_general_dilated, x, w, ct),
                               rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_vmapped_depthwise_border_keeps_non_finite_weights(bad, rng):
    # Both borders give lax's values: a non-finite weight spoils exactly the
    # outputs whose tap reads it (padding zeros included: 0 * Inf is NaN).
    x = jnp.asarray(rng.standard_normal((3, 1, 6, 5, 4)), jnp.float32)
    w = np.asarray(rng.standard_normal((3, 3, 1, 4)), np.float32)
    w[0, 2, 0, 1] = bad
    w[1, 1, 0, 3] = bad
    w = jnp.asarray(w)

    def ref(x1, w):
        return lax.conv_general_dilated(x1, w, (1, 1), "SAME", dimension_numbers=NHWC,
                                        feature_group_count=4)

    def assert_same(got, want):
        got, want = np.asarray(got), np.asarray(want)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        finite = np.isfinite(want)
        assert (~finite).any() and finite.any()
        assert_close(np.where(finite, got, 0), np.where(finite, want, 0))

    want = jax.vmap(ref, (0, None))(x, w)
    assert_same(jax.jit(jax.vmap(_depthwise_single, (0, None)))(x, w), want)
    # the per-example input gradient (the flipped kernel, also folded)
    ct = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)

    def gx(f):
        return jax.vmap(lambda x1, c: jax.vjp(lambda x1: f(x1, w), x1)[1](c)[0])(x, ct)

    assert_same(jax.jit(lambda: gx(_depthwise_single))(), gx(ref))
    # derivatives of the vmapped conv: their tangent and transposed
    # equations mend their own borders (no caller re-poisons them)
    tx = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

    def jvp(f):
        return jax.jvp(lambda x: jax.vmap(f, (0, None))(x, w), (x,), (tx,))

    for got, want_ in zip(jax.jit(lambda: jvp(_depthwise_single))(), jvp(ref)):
        assert_same(got, want_)

    def grad_x(f):
        return jax.vjp(lambda x: jax.vmap(f, (0, None))(x, w), x)[1](ct)[0]

    assert_same(jax.jit(lambda: grad_x(_depthwise_single))(), grad_x(ref))
    # vmap of vmap: the inner border strips are re-poisoned at both levels
    xx = jnp.stack([x, x[::-1]])
    assert_same(jax.jit(jax.vmap(jax.vmap(_depthwise_single, (0, None)), (0, None)))(
        xx, w), jax.vmap(jax.vmap(ref, (0, None)), (0, None))(xx, w))


def test_equinox_style_model(rng):
    # A model written for one (C, H, W) example: conv, stride-2 conv, 4x4
    # stride-2 transposed conv; vmapped over the batch it binds one equation
    # per conv and its per-example gradients equal a loop.
    def model(params, x1):
        w1, w2, w3 = params
        h = jnp.tanh(jl.conv_general_dilated(x1[None], w1, (1, 1), "SAME"))
        h = jnp.tanh(jl.conv_general_dilated(h, w2, (2, 2), ((1, 1), (1, 1))))
        h = jl.conv_transpose(h, w3, (2, 2), "SAME",
                              dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return h[0]

    params = tuple(jnp.asarray(rng.standard_normal(s) / 3) for s in
                   ((4, 3, 3, 3), (5, 4, 3, 3), (2, 5, 4, 4)))
    x = jnp.asarray(rng.standard_normal((B, 3, 8, 8)))
    out = jax.jit(jax.vmap(model, (None, 0)))(params, x)
    assert_close(out, _loop(lambda x, p: model(p, x), (0, None), x, params))
    eqns = _equations(jax.make_jaxpr(jax.vmap(model, (None, 0)))(params, x).jaxpr)
    assert [e.invars[0].aval.shape[0] for e in eqns] == [B, B, B]

    grad = jax.grad(lambda p, x1: jnp.sum(model(p, x1) ** 2))
    got = jax.jit(jax.vmap(grad, (None, 0)))(params, x)
    want = _loop(lambda x, p: grad(p, x), (0, None), x, params)
    for g, r in zip(got, want):
        assert_close(g, r)


# --- meshes (a subprocess with two simulated devices) ---------------------------------

MESH_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from jaxconv import lax as jl

NHWC = ("NHWC", "HWIO", "NHWC")
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 6, 6, 3)).astype(np.float32)
w = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)


def single(conv):
    return lambda x1, w: conv(x1[None], w, (1, 1), "SAME", dimension_numbers=NHWC)[0]


def grad_psum(conv):
    def f(x, w):
        g = jax.grad(lambda w: jnp.sum(jax.vmap(single(conv), (0, None))(x, w) ** 2))
        return lax.psum(g(w), "d")
    return f


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


for kind in (AxisType.Auto, AxisType.Explicit):
    mesh = jax.make_mesh((2,), ("d",), axis_types=(kind,))
    xs = jax.device_put(x, NamedSharding(mesh, P("d")))
    ws = jax.device_put(w, NamedSharding(mesh, P()))
    with jax.set_mesh(mesh):
        vm = [jax.jit(jax.vmap(single(c), (0, None))) for c in (jl.conv_general_dilated,
                                                             lax.conv_general_dilated)]
        out = vm[0](xs, ws)
        close(out, vm[1](xs, ws))
        assert out.sharding.spec[0] == "d", (kind, out.sharding)
        sm = [jax.jit(jax.shard_map(grad_psum(c), mesh=mesh, in_specs=(P("d"), P()),
                                    out_specs=P()))
              for c in (jl.conv_general_dilated, lax.conv_general_dilated)]
        close(sm[0](xs, ws), sm[1](xs, ws))
print("mesh checks passed")
"""


def test_vmap_and_grad_on_meshes():
    # Auto and Explicit mesh axes, and per-device gradients inside shard_map.
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", MESH_SCRIPT], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mesh checks passed" in proc.stdout


# --- pooling and patches (slicing ops: vmapped op by op) ------------------------


POOLING = {
    "max_pool": lambda x: jaxconv.max_pool(x, (2, 3), stride=(2, 1), padding="SAME"),
    "avg_pool": lambda x: jaxconv.avg_pool(x, (3, 3), stride=2, padding=1),
    "lp_pool": lambda x: jaxconv.lp_pool(x, 2.0, (2, 2)),
    "adaptive_avg_pool": lambda x: jaxconv.adaptive_avg_pool(x, (3, 2)),
    "unfold": lambda x: jaxconv.unfold(x, (3, 2), stride=(1, 2), padding=1),
    "fold": lambda x: jaxconv.fold(x, (8, 7), (2, 2), stride=2, padding=(0, 1)),
}


@pytest.mark.parametrize("name", list(POOLING))
def test_pooling_and_patches_vmap_equals_batched_call(name, rng):
    f = POOLING[name]
    shape = (2, 4, 4, 12) if name == "fold" else (2, 8, 7, 3)
    x = jnp.asarray(rng.standard_normal((B, *shape)))
    got = jax.jit(jax.vmap(f))(x)
    out = f(x.reshape(B * 2, *shape[1:]))
    assert_close(got, out.reshape(B, 2, *out.shape[1:]))
    g = jax.jit(jax.vmap(jax.grad(lambda x: jnp.sum(jnp.sin(f(x))))))(x)
    assert_close(g, jax.grad(lambda x: jnp.sum(jnp.sin(f(x))))(x))
