"""Grouped convolutions with wide groups: GEMMs batched over groups ("groupgemm").

The plan sends grouped kernels with more than ``grouped_max_terms`` products
per output (``T * I``) to one patch GEMM per group, batched over the groups
(ResNeXt-50 stages 3 and 4: 16 and 32 channels per group).  Values, first
and second order gradients against ``jax.lax`` (stride, padding, dilation,
1-D to 3-D, batch 1 and 3, float32 and bfloat16), the row-blocked form,
NaN/Inf locality, and the plan's choice on the ResNeXt layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, assert_non_finite_local, second_order
from jax import lax

import jaxconv
from jaxconv import _zoo, bench
from jaxconv import lax as jl
from jaxconv.algorithms import plan as planning
from jaxconv.algorithms.problem import Problem

CPU = jaxconv.get_profile("cpu")
HI = lax.Precision.HIGHEST
# Blocks of a few output rows (and columns), so the scan and the blocked
# derivative rule run on small problems.
TINY_BLOCKS = CPU.replace(block_min_bytes=1, block_max_bytes=6000)
DN = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC"),
      3: ("NDHWC", "DHWIO", "NDHWC")}

# (x shape, w shape, strides, padding, rhs_dilation, groups): every case has
# T * I > grouped_max_terms (100), so "auto" plans "groupgemm".
CASES = [
    ((1, 8, 8, 64), (3, 3, 16, 64), (2, 2), [(1, 1), (1, 1)], None, 4),
    ((3, 6, 7, 64), (3, 3, 32, 16), (1, 1), "SAME", None, 2),
    ((3, 9, 8, 48), (3, 3, 12, 8), (1, 2), [(2, 0), (1, 3)], (2, 1), 4),
    ((1, 5, 5, 34), (4, 4, 17, 4), (1, 1), "VALID", None, 2),
    ((3, 30, 72), (5, 24, 6), (2,), "SAME", (2,), 3),
    ((1, 4, 5, 6, 32), (2, 3, 3, 16, 4), (1, 2, 1), "SAME", (1, 1, 2), 2),
]


def _ids(case):
    return f"{case[0]}-{case[1]}-s{case[2]}-g{case[5]}"


def _key(case):
    xs, ws, s, p, rd, g = case
    if not isinstance(p, str):
        p = tuple(tuple(q) for q in p)
    return (xs, ws, s, p, rd, g)


def _conv(mod, case, **extra):
    """The conv of ``case``, not jitted: the profile is read when it is traced,
    so each test jits its own under the profile it sets."""
    xs, _, s, p, rd, g = case
    return lambda x, w: mod.conv_general_dilated(
        x, w, s, p, rhs_dilation=rd, dimension_numbers=DN[len(xs) - 2],
        feature_group_count=g, precision=HI, **extra)


@functools.cache
def _jf(mod, case, extra=()):
    return jax.jit(_conv(mod, case, **dict(extra)))


def _f(mod, case, **extra):
    """The jitted conv of ``case`` (cached: for lax, and jaxconv on the cpu
    preset)."""
    return _jf(mod, _key(case), tuple(sorted(extra.items())))


def _args(case, rng, dtype=np.float64):
    xs, ws, *_ = case
    return rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)


def _structs(case, dtype=jnp.float32):
    xs, ws, *_ = case
    return jax.ShapeDtypeStruct(xs, dtype), jax.ShapeDtypeStruct(ws, dtype)


def _loss(f):
    return lambda x, w: jnp.sum(jnp.sin(f(x, w)))


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_auto_plans_groupgemm(case):
    (row,) = jaxconv.explain(_conv(jl, case), *_structs(case))
    assert row.formulation == "taps/groupgemm"
    assert "batched over groups" in row.reason
    with jaxconv.use_profile(TINY_BLOCKS):
        (row,) = jaxconv.explain(_conv(jl, case), *_structs(case))
    assert row.formulation == "taps/groupgemm" and row.plan.loop_steps > 1


@pytest.mark.parametrize("blocks", ["unblocked", "tiny-blocks"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_values_and_gradients_match_lax(case, blocks, rng):
    x, w = _args(case, rng)
    profile = CPU if blocks == "unblocked" else TINY_BLOCKS
    with jaxconv.use_profile(profile):
        ours = jax.jit(_conv(jl, case))
        got = ours(x, w)
        grads = jax.jit(jax.grad(_loss(ours), (0, 1)))(x, w)
    assert_close(got, _f(lax, case)(x, w))
    want = jax.jit(jax.grad(_loss(_f(lax, case)), (0, 1)))(x, w)
    for a, b in zip(grads, want):
        assert_close(a, b)


@pytest.mark.parametrize("case", CASES[:2] + CASES[4:5], ids=_ids)
def test_matches_direct(case, rng):
    x, w = _args(case, rng)
    assert_close(_f(jl, case)(x, w), _f(jl, case, algorithm="direct")(x, w))


@pytest.mark.parametrize("blocks", ["unblocked", "tiny-blocks"])
@pytest.mark.parametrize("case", CASES[:1] + CASES[2:3], ids=_ids)
def test_second_order_and_jvp(case, blocks, rng):
    x, w = _args(case, rng)
    tx, tw = _args(case, rng)

    profile = CPU if blocks == "unblocked" else TINY_BLOCKS
    with jaxconv.use_profile(profile):
        got = second_order(_conv(jl, case), tx, tw)(x, w)
    for a, b in zip(got, second_order(_f(lax, case), tx, tw)(x, w)):
        assert_close(a, b)


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16])
@pytest.mark.parametrize("case", CASES[:2] + CASES[4:5], ids=_ids)
def test_low_precision_dtypes(case, dtype, rng):
    x, w = _args(case, rng, np.float32)
    xd, wd = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    got = _f(jl, case)(xd, wd)
    assert got.dtype == jnp.dtype(dtype)
    # Against lax on the same (rounded) operands, in float32.
    ref = _f(lax, case)(xd.astype(np.float32), wd.astype(np.float32))
    assert_close(got.astype(np.float32), ref, dtype=dtype)
    grads = jax.grad(lambda x, w: jnp.sum(_f(jl, case)(x, w).astype(jnp.float32)),
                     (0, 1))(xd, wd)
    want = jax.grad(lambda x, w: jnp.sum(_f(lax, case)(x, w).astype(jnp.float32)),
                    (0, 1))(xd, wd)
    for a, b in zip(grads, want):
        assert a.dtype == jnp.dtype(dtype)
        assert_close(a.astype(np.float32), b.astype(np.float32), dtype=dtype)


@pytest.mark.parametrize("blocks", ["unblocked", "tiny-blocks"])
@pytest.mark.parametrize("case", CASES[:3], ids=_ids)
def test_non_finite_values_stay_local(case, blocks, rng):
    x, w = _args(case, rng, np.float32)
    profile = CPU if blocks == "unblocked" else TINY_BLOCKS
    with jaxconv.use_profile(profile):
        assert_non_finite_local(jax.jit(_conv(jl, case)), _f(lax, case), x, w)


# --- the plan on real layers ------------------------------------------------------


def _zoo_plan(case, profile="cpu"):
    x, w = (jax.ShapeDtypeStruct(a.shape, a.dtype) for a in bench.make_args(case))
    with jaxconv.use_profile(profile):
        (row,) = jaxconv.explain(bench.make_fn(case, jl), x, w)
    return row


RESNEXT = [c for c in _zoo.zoo_cases()
           if c.layer.arch == "resnext50_32x4d" and c.layer.groups > 1]


@pytest.mark.parametrize("profile", ["cpu", "gpu", "tpu"])
@pytest.mark.parametrize("case", RESNEXT, ids=lambda c: c.id)
def test_resnext_grouped_layers(case, profile):
    # Stages 1 and 2 (4 and 8 channels per group, 36 and 72 products per
    # output): fused multiply-adds; stages 3 and 4 (16 and 32, 144 and 288):
    # GEMMs batched over groups, unblocked at the zoo's resolution.  On cpu
    # the 72-product sums of stage 2 at stride 1 scan over the three kernel
    # rows (tests/test_grouped.py).
    row = _zoo_plan(case, profile)
    i = case.layer.c_in // case.layer.groups
    want = "grouped" if 9 * i <= CPU.grouped_max_terms else "groupgemm"
    assert row.formulation == "taps/" + want
    rows = row.plan.param("form") == "rows-scan"
    assert rows == (want == "grouped" and profile == "cpu" and 9 * i >= 64
                    and case.layer.stride[0] == 1)
    assert row.plan.loop_steps == (3 if rows else 0)


@pytest.mark.parametrize("shape, want", [
    # ResNeXt-50 32x4d at 224x224, batch 8: layer3 (14x14, 16 per group),
    # its strided first block, layer4 (7x7, 32 per group).
    (((8, 14, 14, 512), (3, 3, 16, 512), (1, 1)), "groupgemm"),
    (((8, 28, 28, 512), (3, 3, 16, 512), (2, 2)), "groupgemm"),
    (((8, 7, 7, 1024), (3, 3, 32, 1024), (1, 1)), "groupgemm"),
    # 12 channels per group (108 products), a 5x5 kernel on 8 (200): GEMMs.
    (((1, 28, 28, 384), (3, 3, 12, 384), (1, 1)), "groupgemm"),
    (((1, 28, 28, 256), (5, 5, 8, 256), (1, 1)), "groupgemm"),
    # 10 channels per group (90), a 5x5 kernel on 4 (100): fused.
    (((1, 28, 28, 320), (3, 3, 10, 320), (1, 1)), "grouped"),
    (((1, 28, 28, 128), (5, 5, 4, 128), (1, 1)), "grouped"),
    # Two groups of 128 channels, strided.
    (((1, 28, 28, 256), (3, 3, 128, 256), (2, 2)), "groupgemm"),
])
def test_plan_rule_on_grouped_shapes(shape, want):
    xs, ws, stride = shape
    groups = xs[-1] // ws[-2]
    p = Problem.of(jax.ShapeDtypeStruct(xs, jnp.float32),
                   jax.ShapeDtypeStruct(ws, jnp.float32), stride=stride,
                   dilation=(1, 1), groups=groups, pads=((1, 1), (1, 1)))
    plan = planning.plan(p, CPU)
    assert plan.formulation == want
    assert want in [c.formulation for c in planning.candidates(p, CPU)]
    if want == "groupgemm":
        # Cache-sized row blocks on cpu: the estimated temporaries stay
        # within the block budget plus the groups-first copy of the input.
        assert plan.temp_bytes <= CPU.block_max_bytes + p.in_bytes
        # One GEMM program on the accelerator profiles.
        assert planning.plan(p, jaxconv.get_profile("gpu")).loop_steps == 0


def test_profile_threshold_steers_grouped_and_groupgemm():
    p = Problem.of(jax.ShapeDtypeStruct((1, 8, 8, 64), jnp.float32),
                   jax.ShapeDtypeStruct((3, 3, 8, 64), jnp.float32), stride=(1, 1),
                   dilation=(1, 1), groups=8, pads=((1, 1), (1, 1)))
    assert planning.plan(p, CPU).formulation == "grouped"
    fewer = CPU.replace(grouped_max_terms=64)
    assert planning.plan(p, fewer).formulation == "groupgemm"
    # Kernels beyond the unroll limit keep the per-tap scan.
    assert planning.plan(p, fewer.replace(unroll_limit=4)).formulation == "taps"
    # Every formulation autotune times computes the same values.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 8, 8, 64)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 8, 64)), jnp.float32)
    ref = lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)],
                                   dimension_numbers=DN[2], feature_group_count=8,
                                   precision=HI)
    names = [c.formulation for c in planning.candidates(p, CPU)]
    assert names == ["grouped", "groupgemm", "taps"]
    for c in planning.candidates(p, CPU):
        assert_close(planning.execute(x, w, c, HI), ref)


def _nbytes(*avals):
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in avals)


@pytest.mark.parametrize("shape", [
    ((2, 28, 28, 512), (3, 3, 16, 512), (2, 2)),
    ((2, 14, 14, 512), (3, 3, 16, 512), (1, 1)),
    ((2, 7, 7, 1024), (3, 3, 32, 1024), (1, 1)),
    ((8, 14, 14, 512), (3, 3, 16, 512), (1, 1)),
], ids=str)
def test_temporaries_within_the_memory_rule(shape):
    # ResNeXt-50 stage 3 and 4 layers at 224x224: the patches (9x the input
    # at stride 1) run in row blocks of at most the profile's block size, so
    # forward and gradient stay within 2 x (input + kernel + output bytes)
    # plus that block budget (inside the memory rule's workspace) and below
    # 32 MiB, where XLA:CPU's temporary buffer would be mapped afresh on
    # every call (docs/auto.md).  Compile only.
    xs, ws, stride = shape
    x, w = jax.ShapeDtypeStruct(xs, jnp.float32), jax.ShapeDtypeStruct(ws, jnp.float32)

    def f(x, w):
        return jl.conv_general_dilated(x, w, stride, "SAME", dimension_numbers=DN[2],
                                       feature_group_count=xs[-1] // ws[-2])

    def grads(x, w, dy):
        return jax.vjp(f, x, w)[1](dy)

    y = jax.eval_shape(f, x, w)
    with jaxconv.use_profile(CPU):
        (row,) = jaxconv.explain(f, x, w)
        assert row.formulation == "taps/groupgemm"
        for fn, args, out in [(f, (x, w), (y,)), (grads, (x, w, y), (x, w))]:
            temp = jax.jit(fn).lower(*args).compile().memory_analysis()
            bound = 2 * (_nbytes(*args) + _nbytes(*out)) + CPU.block_max_bytes
            assert temp.temp_size_in_bytes <= min(bound, 32 << 20)
