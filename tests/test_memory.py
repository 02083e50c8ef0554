"""Memory: ``algorithm="auto"`` never needs temporaries beyond 2x its I/O.

SPEC section 5: ``temp_bytes <= 2 x (input_bytes + output_bytes)`` with
``temp_bytes`` from ``jax.jit(f).lower(...).compile().memory_analysis()``,
``input_bytes`` the bytes of the input and the kernel and ``output_bytes``
the bytes of the result.  Only compilation is needed (arguments are
``jax.ShapeDtypeStruct``), so the cases cost compile time, not memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import lax as jl
from jaxconv.algorithms import plan as planning
from jaxconv.algorithms import polyphase

NHWC = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
        3: ("NDHWC", "DHWIO", "NDHWC")}

# The SPEC section 5 cases (float32, channels_last), batch reduced to <= 2.
# id: (N, spatial, C_in, C_out, kernel, stride, dilation, groups, transposed)
CASES = {
    "dense3": (1, (56, 56), 64, 64, 3, 1, 1, 1, False),
    "dense3_b8": (2, (28, 28), 128, 128, 3, 1, 1, 1, False),
    "point": (1, (56, 56), 256, 64, 1, 1, 1, 1, False),
    "stem": (1, (224, 224), 3, 64, 7, 2, 1, 1, False),
    "dw3": (1, (112, 112), 96, 96, 3, 1, 1, 96, False),
    "dw3_s2": (1, (112, 112), 96, 96, 3, 2, 1, 96, False),
    "dw7": (1, (56, 56), 96, 96, 7, 1, 1, 96, False),
    "dw31": (1, (28, 28), 64, 64, 31, 1, 1, 64, False),
    "group32": (1, (28, 28), 256, 256, 3, 1, 1, 32, False),
    "atrous": (1, (28, 28), 128, 128, 3, 1, 2, 1, False),
    "causal1d": (2, (4096,), 64, 64, 4, 1, 1, 64, False),
    "long1d": (1, (8192,), 32, 32, 1024, 1, 1, 32, False),
    "wav1d": (1, (3199,), 512, 512, 3, 2, 1, 1, False),
    "tconv2d": (1, (32, 32), 64, 32, 4, 2, 1, 1, True),
    "vol3d": (1, (8, 28, 28), 64, 64, 3, 1, 1, 1, False),
}
# The SPEC's gradient cases, then every other case whose gradient is within
# the bound (docs/guarantees.md section 5 lists the four that are not:
# stem, dw31, tconv2d, vol3d).
GRADIENT_CASES = ["dense3_b8", "dw3", "group32", "dense3", "point", "dw3_s2", "dw7",
                  "atrous", "causal1d", "long1d", "wav1d"]

# Cases known to exceed the bound, with the measured numbers as the reason;
# they are xfail(strict=False).  Empty since 28 Nov 2026 08:55 UTC (jax
# 0.10.2, CPU): every case below, and the >2 GB im2col problem, is within the
# bound and must stay there.
KNOWN_OVER_BOUND: dict[str, str] = {}


def _known(key):
    reason = KNOWN_OVER_BOUND.get(key)
    if reason is None:
        return []
    reason = "auto over the memory bound: " + reason
    return [pytest.mark.xfail(strict=False, reason=reason)]


def _params(keys, prefix=""):
    return [pytest.param(k, marks=_known(prefix + k)) for k in keys]


def _problem(case):
    n, spatial, cin, cout, k, s, d, g, transposed = CASES[case]
    nd = len(spatial)
    x = jax.ShapeDtypeStruct((n, *spatial, cin), jnp.float32)
    w_in = cout if transposed else cin // g
    w = jax.ShapeDtypeStruct((k,) * nd + (w_in if not transposed else cin, cout),
                             jnp.float32)
    if transposed:
        def f(x, w):
            return jl.conv_transpose(x, w, (s,) * nd, "SAME",
                                     dimension_numbers=NHWC[nd])
    else:
        pad = "SAME" if case != "causal1d" else [(k - 1, 0)]

        def f(x, w):
            return jl.conv_general_dilated(x, w, (s,) * nd, pad, rhs_dilation=(d,) * nd,
                                           dimension_numbers=NHWC[nd],
                                           feature_group_count=g)
    return f, x, w


def _nbytes(*avals):
    return sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
               for a in avals)


def _allowance(f, *args):
    """What the bound grants beyond ``2 x (input + output bytes)``: the
    profile's workspace on the accelerator profiles (whose plans trade loops
    for temporaries, the memory rule allowing it).  The cpu profile is held
    to 2x I/O, except the all-tap GEMM products it runs
    unblocked past ``alltaps_max_bytes`` (up to ``alltaps_whole_scale``
    times that, 16 MiB, a part of the workspace): whole, one group of taps
    at a time, or one kernel row's at a time (the largest), and the 2-D
    patch matrices it builds whole out of the workspace (up to 16 MiB each;
    their sum), and a transposed conv's one GEMM against every tap (its
    product, up to ``phase_one_gemm_max_bytes``); those bytes, for the
    plans that run them."""
    profile = jaxconv.current_profile()
    if profile.name != "cpu":
        return profile.workspace_bytes
    extra = patches = 0
    for row in jaxconv.explain(f, *args):
        p, plan = row.plan.problem, row.plan
        if (row.formulation == "taps/im2col" and not plan.param("blocks")
                and planning._im2col_2d_whole(p, profile)):
            # The patch matrix and its build's first stage, every row's
            # taps of the last axis (N, H_padded, W_out, k_w * C); the
            # forward's, kept for the kernel gradient, and the input
            # gradient's may be live together: their sum.
            assert p.patch_bytes <= profile.im2col_2d_unblocked_max_bytes
            n, h = p.padded_shape[:2]
            stage = n * h * p.out_spatial[1] * p.kernel[1] * p.padded_shape[-1]
            patches += p.patch_bytes + stage * p.acc_itemsize
            continue
        if row.formulation == "taps/polyphase" and plan.param("one_gemm"):
            # A transposed conv's one GEMM against every tap: its product.
            products = polyphase.one_gemm_bytes(p)
            assert products <= profile.phase_one_gemm_max_bytes
            extra = max(extra, products)
            continue
        if row.formulation != "taps/alltaps" and not plan.param("row_loop"):
            continue
        if plan.param("blocks"):
            continue
        products = planning._alltaps_bytes(p)
        if plan.param("tap_groups"):
            products = products // p.taps * plan.param("tap_groups")
        elif plan.param("row_loop"):
            products = products // p.taps * p.kernel[-1]
        if products > profile.alltaps_max_bytes:
            extra = max(extra, products)
    assert extra <= profile.alltaps_max_bytes * profile.alltaps_whole_scale
    assert extra + patches <= profile.workspace_bytes
    return extra + patches


def _assert_within_bound_with_gradients(f, x, w):
    """``f(x, w)`` and its input and kernel gradients (forward + backward)
    each stay within :func:`_temp_and_bound`'s bound."""
    temp, bound = _temp_and_bound(f, x, w)
    assert temp <= bound, f"forward: temp {temp} B > bound {bound} B"
    y = jax.eval_shape(f, x, w)

    def grads(x, w, dy):
        return jax.vjp(f, x, w)[1](dy)

    temp, bound = _temp_and_bound(grads, x, w, y)
    assert temp <= bound, f"gradient: temp {temp} B > bound {bound} B"


def _temp_and_bound(f, *args):
    """XLA's temporaries and the bound: ``2 x (input + output bytes)`` plus
    :func:`_allowance`."""
    compiled = jax.jit(f).lower(*args).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    out = jax.eval_shape(f, *args)
    bound = 2 * (_nbytes(*args) + _nbytes(*jax.tree.leaves(out)))
    return temp, bound + _allowance(f, *args)


# The cpu preset's tables of both CPU families (the memory rule holds for
# each, whatever the host).
FAMILIES = pytest.mark.parametrize("family", ["avx2", "avx512"])


@FAMILIES
@pytest.mark.parametrize("case", _params(CASES))
def test_forward_temporaries_within_2x_io(case, family, monkeypatch):
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", family)
    f, x, w = _problem(case)
    temp, bound = _temp_and_bound(f, x, w)
    assert temp <= bound, f"{case}: temp {temp} B > 2 x I/O = {bound} B"


def _gradient_temp_and_bound(case):
    """Forward + backward (input and kernel gradients); I/O = x, w, dy, dx, dw."""
    f, x, w = _problem(case)
    y = jax.eval_shape(f, x, w)

    def grads(x, w, dy):
        _, vjp = jax.vjp(f, x, w)
        return vjp(dy)

    return _temp_and_bound(grads, x, w, y)


@FAMILIES
@pytest.mark.parametrize("case", _params(GRADIENT_CASES, "grad:"))
def test_gradient_temporaries_within_2x_io(case, family, monkeypatch):
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", family)
    temp, bound = _gradient_temp_and_bound(case)
    assert temp <= bound, f"{case} gradient: temp {temp} B > 2 x I/O = {bound} B"


def test_large_kernel_depthwise_gradient_keeps_no_per_step_residuals():
    """dw31's gradient (a scan over 31 kernel rows) once stacked every row's
    input slice as a residual: 91x the bound.  With the row step
    rematerialised it is 3.5x: the padded input and its cotangent (SAME
    padding takes 28x28 to 58x58, 4.3x the input) are what remain."""
    temp, bound = _gradient_temp_and_bound("dw31")
    assert temp <= 4 * bound, f"dw31 gradient: temp {temp} B > 4 x {bound} B"


def test_huge_im2col_problem_compiles_within_bound():
    """A 3x3 conv whose full im2col would take 2.4 GB (1024x1024x64, 9 taps, f32):
    "auto" must not materialise it.  Compile + memory_analysis only."""
    x = jax.ShapeDtypeStruct((1, 1024, 1024, 64), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32)
    im2col = 1024 * 1024 * 9 * 64 * 4
    assert im2col > 2 * 2**30

    def f(x, w):
        return jl.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC[2])

    temp, bound = _temp_and_bound(f, x, w)
    gib = 2**30
    assert temp <= bound, f"temp {temp / gib:.2f} GiB > 2 x I/O = {bound / gib:.2f} GiB"


@pytest.mark.parametrize("shape, c_out",
                         [((1, 112, 112, 16), 32), ((1, 56, 56, 64), 128)])
def test_strided_convs_within_bound(shape, c_out):
    """ResNet/MobileNet-style 3x3 stride-2 convs (not SPEC cases): on few
    channels they once went through space-to-depth at 1.35x of the bound."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, shape[-1], c_out), jnp.float32)

    def f(x, w):
        return jl.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC[2])

    temp, bound = _temp_and_bound(f, x, w)
    assert temp <= bound, f"temp {temp} B > 2 x I/O = {bound} B"


@pytest.mark.parametrize("shape, c_out", [((4, 56, 56, 128), 128),
                                          ((8, 64, 64, 64), 128)])
def test_avx512_shifted_layers_within_2x_io(shape, c_out, monkeypatch):
    """The ``avx512`` table's per-tap GEMMs over whole rows keep every tap's
    block products live; where the rule picks them they stay in the bound."""
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", "avx512")
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, shape[-1], c_out), jnp.float32)

    def f(x, w):
        return jl.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC[2])

    (row,) = jaxconv.explain(f, x, w)
    assert row.formulation == "taps/shifted" and row.profile == "cpu/avx512"
    _assert_within_bound_with_gradients(f, x, w)


@pytest.mark.parametrize("x_shape, w_shape, stride, pads, formulation", [
    ((8, 28, 28, 128), (3, 3, 128, 128), 1, ((1, 1), (1, 1)), "wide"),  # row loop
    ((8, 4096, 32), (11, 32, 32), 1, ((5, 5),), "alltaps"),  # groups of taps
    ((8, 4096, 32), (3, 32, 32), 1, ((1, 1),), "alltaps"),  # whole
    ((2, 56, 56, 64), (3, 3, 64, 64), 1, ((1, 1), (1, 1)), "im2col"),  # 14.5 MB patches
    ((8, 32, 32, 64), (5, 5, 64, 32), 2, ((2, 2), (2, 2)), "im2col"),  # strided 3.3 MB
])
@FAMILIES
def test_unblocked_products_within_the_allowance(x_shape, w_shape, stride, pads,
                                                 formulation, family, monkeypatch):
    """The cpu profile's unblocked all-tap GEMMs (whole, in groups of taps,
    or a kernel row at a time) and whole 2-D patch matrices stay within 2x
    I/O plus their bytes, forward and with the gradients (both families)."""
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", family)
    nd = len(x_shape) - 2
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    w = jax.ShapeDtypeStruct(w_shape, jnp.float32)

    def f(x, w):
        return jl.conv_general_dilated(x, w, (stride,) * nd, pads,
                                       dimension_numbers=NHWC[nd])

    (row,) = jaxconv.explain(f, x, w)
    assert row.formulation == "taps/" + formulation and not row.plan.param("blocks")
    assert _allowance(f, x, w) > jaxconv.current_profile().alltaps_max_bytes
    _assert_within_bound_with_gradients(f, x, w)
