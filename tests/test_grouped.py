"""Grouped kernels with few channels per group as fused multiply-adds ("grouped").

Long sums (``T * I >= grouped_rows_min_terms`` products per output, stride 1
along the first spatial axis) run as a scan over kernel rows, each step one
fused loop (``form="rows-scan"``); shorter ones as one unrolled loop.  Both
forms against ``jax.lax`` (values, first and second order gradients, forward
mode, NaN/Inf locality, vmap), against each other, and the plan's choice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, assert_non_finite_local, second_order
from jax import lax

import jaxconv
from jaxconv import _zoo, bench
from jaxconv import lax as jl
from jaxconv.algorithms import grouped
from jaxconv.algorithms import plan as planning
from jaxconv.algorithms.problem import Problem

CPU = jaxconv.get_profile("cpu")
HI = lax.Precision.HIGHEST
# Every grouped sum as rows, and none.
ROWS = CPU.replace(grouped_rows_min_terms=1)
UNROLLED = CPU.replace(grouped_rows_min_terms=1 << 62)
DN = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC"),
      3: ("NDHWC", "DHWIO", "NDHWC")}

# (x shape, w shape, strides, padding, rhs_dilation, groups): I <= 16 and
# T * I <= 100, so "auto" plans "grouped".
CASES = [
    ((1, 9, 8, 16), (3, 3, 4, 16), (1, 1), "SAME", None, 4),
    ((3, 7, 9, 24), (3, 2, 8, 12), (1, 2), [(2, 0), (1, 3)], (2, 1), 3),
    ((2, 6, 5, 6, 12), (2, 3, 2, 6, 8), (1, 2, 1), "SAME", (1, 1, 2), 2),
    ((1, 10, 9, 8), (4, 3, 2, 12), (1, 1), "VALID", (1, 2), 4),
]


def _ids(case):
    return f"{case[0]}-{case[1]}-s{case[2]}-g{case[5]}"


def _conv(mod, case):
    """The conv of ``case``, not jitted: the profile is read when it is traced."""
    xs, _, s, p, rd, g = case
    return lambda x, w: mod.conv_general_dilated(
        x, w, s, p, rhs_dilation=rd, dimension_numbers=DN[len(xs) - 2],
        feature_group_count=g, precision=HI)


def _args(case, rng, dtype=np.float64):
    xs, ws, *_ = case
    return rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)


def _loss(f):
    return lambda x, w: jnp.sum(jnp.sin(f(x, w)))


def _row(f, *args):
    (row,) = jaxconv.explain(f, *args)
    return row


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_rows_profile_plans_the_row_scan(case):
    structs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in case[:2]]
    with jaxconv.use_profile(ROWS):
        row = _row(_conv(jl, case), *structs)
    assert row.formulation == "taps/grouped"
    assert row.plan.param("form") == "rows-scan"
    assert row.plan.loop_steps == case[1][0]
    with jaxconv.use_profile(UNROLLED):
        row = _row(_conv(jl, case), *structs)
    assert row.plan.param("form") == "unrolled" and row.plan.loop_steps == 0


@pytest.mark.parametrize("form", ["rows", "unrolled"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_values_and_gradients_match_lax(case, form, rng):
    x, w = _args(case, rng)
    with jaxconv.use_profile(ROWS if form == "rows" else UNROLLED):
        ours = jax.jit(_conv(jl, case))
        got = ours(x, w)
        grads = jax.jit(jax.grad(_loss(ours), (0, 1)))(x, w)
    ref = jax.jit(_conv(lax, case))
    assert_close(got, ref(x, w))
    for a, b in zip(grads, jax.jit(jax.grad(_loss(ref), (0, 1)))(x, w)):
        assert_close(a, b)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_row_scan_equals_unrolled_sum(case, rng):
    # The formulation itself, on the padded input, in float32: the two
    # forms add the same products in a different order.
    xs, ws, s, p, rd, g = case
    x, w = _args(case, rng, np.float32)
    nd = len(xs) - 2
    dil = rd or (1,) * nd
    span = [(k - 1) * d + 1 for k, d in zip(ws[:-2], dil)]
    pads = lax.padtype_to_pads(xs[1:-1], span, s, p) if isinstance(p, str) else p
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    args = (s, dil, g, None, jnp.float32)
    rows = jax.jit(lambda x, w: grouped.conv_grouped(x, w, *args, rows=True))(xp, w)
    flat = jax.jit(lambda x, w: grouped.conv_grouped(x, w, *args, rows=False))(xp, w)
    assert_close(rows, flat, dtype=np.float32)
    text = jax.jit(lambda x, w: grouped.conv_grouped(x, w, *args, rows=True)).lower(
        xp, w).as_text()
    assert text.count("stablehlo.while") == 1


@pytest.mark.parametrize("case", CASES[:2] + CASES[3:], ids=_ids)
def test_second_order_and_jvp(case, rng):
    x, w = _args(case, rng)
    tx, tw = _args(case, rng)
    with jaxconv.use_profile(ROWS):
        got = second_order(_conv(jl, case), tx, tw)(x, w)
        jvp = jax.jit(lambda x, w: jax.jvp(_conv(jl, case), (x, w), (tx, tw)))(x, w)
    ref = jax.jit(_conv(lax, case))
    for a, b in zip(got, second_order(ref, tx, tw)(x, w)):
        assert_close(a, b)
    for a, b in zip(jvp, jax.jvp(ref, (x, w), (tx, tw))):
        assert_close(a, b)


@pytest.mark.parametrize("case", CASES[:2], ids=_ids)
def test_vmap_equals_batched(case, rng):
    x, w = _args(case, rng)
    one = lambda x, w: _conv(jl, case)(x[None], w)[0]  # noqa: E731
    with jaxconv.use_profile(ROWS):
        got = jax.jit(jax.vmap(one, (0, None)))(x, w)
        grad = jax.grad(lambda x, w: jnp.sum(one(x, w) ** 2), 1)
        per_example = jax.jit(jax.vmap(grad, (0, None)))(x, w)
    ref = jax.jit(_conv(lax, case))
    assert_close(got, ref(x, w))
    want = jax.vmap(jax.grad(lambda x, w: jnp.sum(ref(x[None], w)[0] ** 2), 1),
                    (0, None))(x, w)
    assert_close(per_example, want)


@pytest.mark.parametrize("case", CASES[:2], ids=_ids)
def test_non_finite_values_stay_local(case, rng):
    x, w = _args(case, rng, np.float32)
    ours = jax.jit(_conv(jl, case))
    with jaxconv.use_profile(ROWS):
        assert _row(ours, x, w).plan.param("form") == "rows-scan"
        assert_non_finite_local(ours, jax.jit(_conv(lax, case)), x, w)


# --- the plan ------------------------------------------------------------------


def _problem(xs, ws, stride, groups):
    return Problem.of(jax.ShapeDtypeStruct(xs, jnp.float32),
                      jax.ShapeDtypeStruct(ws, jnp.float32), stride=stride,
                      dilation=(1,) * len(stride), groups=groups,
                      pads=tuple((k // 2, (k - 1) // 2) for k in ws[:-2]))


@pytest.mark.parametrize("shape, form", [
    # The suite's ResNeXt case: 72 products per output, three rows of 24.
    (((1, 28, 28, 256), (3, 3, 8, 256), (1, 1), 32), "rows-scan"),
    # 90 and 100 products per output.
    (((1, 28, 28, 320), (3, 3, 10, 320), (1, 1), 32), "rows-scan"),
    (((1, 28, 28, 128), (5, 5, 4, 128), (1, 1), 32), "rows-scan"),
    # 36 products (ResNeXt's first stage): one loop.
    (((8, 56, 56, 128), (3, 3, 4, 128), (1, 1), 32), "unrolled"),
    # Strided along the first axis: one loop.
    (((1, 56, 56, 256), (3, 3, 8, 256), (2, 2), 32), "unrolled"),
    (((1, 56, 56, 256), (3, 3, 8, 256), (2, 1), 32), "unrolled"),
    (((1, 56, 56, 256), (3, 3, 8, 256), (1, 2), 32), "rows-scan"),
    # 1-D: no rows to scan.
    (((1, 512, 256), (9, 8, 256), (1,), 32), "unrolled"),
])
def test_plan_form(shape, form):
    p = _problem(*shape)
    plan = planning.plan(p, CPU)
    assert plan.formulation == "grouped"
    assert plan.param("form") == form
    assert plan.loop_steps == (shape[1][0] if form == "rows-scan" else 0)
    # The accelerator profiles keep one loop (a scan step is a kernel launch).
    assert planning.plan(p, jaxconv.get_profile("gpu")).param("form") == "unrolled"


def test_zoo_and_suite_layers():
    suite = next(c for c in bench.CASES if c.id == "group32")
    x, w = (jax.ShapeDtypeStruct(a.shape, a.dtype) for a in bench.make_args(suite))
    assert _row(bench.make_fn(suite, jl), x, w).plan.param("form") == "rows-scan"
    forms = {}
    for case in _zoo.zoo_cases():
        if case.layer.arch == "resnext50_32x4d" and case.layer.groups > 1:
            x, w = (jax.ShapeDtypeStruct(a.shape, a.dtype)
                    for a in bench.make_args(case))
            row = _row(bench.make_fn(case, jl), x, w)
            if row.formulation == "taps/grouped":
                forms[case.id] = row.plan.param("form")
    # Stage 1 (36 products) one loop; stage 2 (72): rows, but for the
    # strided first block.
    assert forms == {
        f"zoo/resnext50_32x4d/{layer}/b{n}": form
        for layer, form in [("layer1.0.conv2", "unrolled"),
                            ("layer2.0.conv2", "unrolled"),
                            ("layer2.1.conv2", "rows-scan")]
        for n in (1, 8)}
