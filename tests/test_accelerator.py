"""GPU and TPU plans, checked without the hardware.

With the ``gpu`` or ``tpu`` profile, the forward and gradient programs of
every benchmark case and a set of real layers are exported for ``cuda`` and
``tpu`` (``jax.export`` lowers for another platform on this CPU) and read as
XLA would run them: no conditional (on XLA:GPU a ``case``/``if`` copies its
predicate to the host and drains the stream), at most two loops for kernels
up to 49 taps, never XLA's convolution, and HIGHEST precision on the GEMMs
that reformulate a depthwise conv.  The same problems, run on the CPU with
those profiles forced, equal lax: a profile changes the plan, never the
result.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import export, lax

import jaxconv
from jaxconv import bench
from jaxconv import lax as jl

PLATFORMS = {"gpu": "cuda", "tpu": "tpu"}

# Real layers beyond the suite: (id, x NHWC..., w HWIO..., stride, padding,
# rhs_dilation, groups, transposed)
LAYERS = [
    ("resnet18 3x3 s2", (8, 16, 16, 64), (3, 3, 64, 128), 2, "SAME", 1, 1, False),
    ("resnet50 1x1 s2", (8, 16, 16, 256), (1, 1, 256, 512), 2, "VALID", 1, 1, False),
    ("resnet 2x2x512", (8, 2, 2, 512), (3, 3, 512, 512), 1, "SAME", 1, 1, False),
    ("mobilenet dw s2", (8, 32, 32, 144), (3, 3, 1, 144), 2, "SAME", 1, 144, False),
    ("efficientnet dw5", (8, 14, 14, 240), (5, 5, 1, 240), 1, "SAME", 1, 240, False),
    ("convnext dw7", (8, 14, 14, 192), (7, 7, 1, 192), 1, "SAME", 1, 192, False),
    ("resnext 3x3 s2", (8, 14, 14, 256), (3, 3, 8, 256), 2, "SAME", 1, 32, False),
    ("unet up 2x2", (4, 16, 16, 128), (2, 2, 128, 64), 2, "SAME", 1, 1, True),
    ("unet up 4x4", (4, 16, 16, 64), (4, 4, 64, 32), 2, "SAME", 1, 1, True),
    ("wavenet dilated", (4, 512, 64), (3, 64, 64), 1, "SAME", 8, 1, False),
    ("hifigan up 16", (2, 100, 256), (16, 256, 128), 8, "SAME", 1, 1, True),
    ("long1d 257", (2, 2048, 32), (257, 1, 32), 1, "SAME", 1, 32, False),
    ("3d unet", (2, 8, 16, 16, 32), (3, 3, 3, 32, 32), 1, "SAME", 1, 1, False),
]


def _layer_fn(layer):
    _, xs, ws, s, pad, d, g, transposed = layer
    nd = len(xs) - 2
    dn = bench._dn(nd)
    if transposed:
        return lambda x, w: jl.conv_transpose(x, w, (s,) * nd, pad,
                                              dimension_numbers=dn)
    return lambda x, w: jl.conv_general_dilated(
        x, w, (s,) * nd, pad, rhs_dilation=(d,) * nd, dimension_numbers=dn,
        feature_group_count=g)


PROGRAMS = [(c.id, bench.make_fn(c, jl),
             tuple(a.shape for a in bench.make_args(c))) for c in bench.CASES]
PROGRAMS += [(layer[0], _layer_fn(layer), (layer[1], layer[2])) for layer in LAYERS]


def _gradient(f):
    return lambda x, w: jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), (0, 1))(x, w)


def _export(f, args, platform):
    # A fresh function: jit reuses the trace of a function it has seen, and
    # the profile is read while tracing.
    return export.export(jax.jit(lambda *a: f(*a)), platforms=[platform])(
        *args).mlir_module()


def _structure(f, shapes, profile):
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    with jaxconv.use_profile(profile):
        text = _export(f, args, PLATFORMS[profile])
    dots = re.findall(r"stablehlo\.dot_general[^\n]*", text)
    return dict(
        conditionals=len(re.findall(r"stablehlo\.(?:case|if)\b", text)),
        loops=text.count("stablehlo.while"),
        convolutions=text.count("stablehlo.convolution"),
        dots=len(dots),
        highest=sum("precision = [HIGHEST, HIGHEST]" in d for d in dots),
    )


@pytest.mark.parametrize("profile", list(PLATFORMS))
@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p[0])
def test_accelerator_programs_have_no_conditionals_or_long_loops(program, profile):
    name, f, shapes = program
    taps = math.prod(shapes[1][:-2])
    rows = jaxconv.explain(f, *(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes))
    gemm_depthwise = any(r.plan.formulation == "toeplitz" for r in rows)
    for which, fn in (("forward", f), ("gradient", _gradient(f))):
        s = _structure(fn, shapes, profile)
        assert s["conditionals"] == 0, (which, s)
        assert s["convolutions"] == 0, (which, s)
        if taps <= 49:
            assert s["loops"] <= 2, (which, s)
        if gemm_depthwise:
            assert s["dots"] > 0 and s["highest"] == s["dots"], (which, s)


def test_cpu_profile_keeps_its_guards_for_contrast():
    # The structure test can fail: the cpu profile's long 1-D depthwise GEMMs
    # guard the input's finiteness with a conditional.
    f = dict((p[0], p) for p in PROGRAMS)["long1d"]
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in f[2]]
    with jaxconv.use_profile("cpu"):
        text = _export(f[1], args, "cuda")
    assert re.search(r"stablehlo\.(?:case|if)\b", text)


def test_accelerator_profiles_use_plain_autodiff_and_exact_depthwise_gemms():
    for name in PLATFORMS:
        profile = jaxconv.get_profile(name)
        assert profile.branch_free and not profile.custom_kernel_grads
        assert profile.depthwise_gemm_precision == "highest"
    x = jax.ShapeDtypeStruct((1, 28, 28, 64), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 1, 64), jnp.float32)
    with jaxconv.use_profile("gpu"):
        (row,) = jaxconv.explain(jaxconv.depthwise_conv, x, w)
    assert row.plan.param("kernel_grad") == "autodiff"


# --- the numbers do not change --------------------------------------------------

NUMERIC = [layer for layer in LAYERS if math.prod(layer[1]) <= 300_000]


def _small(layer):
    """The layer at batch 1 (numerics on the CPU stay fast)."""
    name, xs, ws, *rest = layer
    return (name, (1, *xs[1:]), ws, *rest)


@pytest.mark.parametrize("profile", list(PLATFORMS))
@pytest.mark.parametrize("layer", [_small(la) for la in NUMERIC], ids=lambda la: la[0])
def test_accelerator_profiles_match_lax_on_the_cpu(layer, profile, rng):
    _, xs, ws, s, pad, d, g, transposed = layer
    nd = len(xs) - 2
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) / np.sqrt(np.prod(ws[:-1]))).astype(np.float32)
    f = _layer_fn(layer)
    dn = bench._dn(nd)
    if transposed:
        def ref(x, w):
            return lax.conv_transpose(x, w, (s,) * nd, pad, dimension_numbers=dn)
    else:
        def ref(x, w):
            return lax.conv_general_dilated(
                x, w, (s,) * nd, pad, rhs_dilation=(d,) * nd, dimension_numbers=dn,
                feature_group_count=g, precision=lax.Precision.HIGHEST)
    with jaxconv.use_profile(profile):
        got = jax.jit(f)(x, w)
        grads = jax.jit(_gradient(f))(x, w)
    assert_close(got, ref(x, w))
    for a, b in zip(grads, jax.jit(_gradient(ref))(x, w)):
        assert_close(a, b, scale=float(np.abs(b).max()) + 1.0)


LOCALITY = [
    ("depthwise padded", (1, 9, 9, 4), (3, 3, 1, 4), (1, 1), "SAME", 4, None),
    ("long depthwise", (1, 300, 4), (70, 1, 4), (1,), "SAME", 4, None),
    ("transposed", (1, 5, 6, 4), (4, 4, 4, 3), (1, 1), [(2, 2), (1, 3)], 1, (2, 2)),
    ("dense strided 1-D", (1, 40, 8), (5, 8, 6), (2,), "SAME", 1, None),
]


@pytest.mark.parametrize("profile", list(PLATFORMS))
@pytest.mark.parametrize("case", LOCALITY, ids=lambda c: c[0])
def test_branch_free_guards_keep_nan_and_inf_local(case, profile, rng):
    # An output is non-finite exactly where the definition's is (lax's for a
    # transposed conv, as in tests/test_locality.py; XLA's CPU grouped conv
    # itself spreads a NaN across groups); finite outputs keep their values.
    _, xs, ws, s, pad, g, ld = case
    nd = len(xs) - 2
    kw = dict(dimension_numbers=bench._dn(nd), feature_group_count=g,
              lhs_dilation=ld)
    for target in ("input", "weight"):
        x = rng.standard_normal(xs)
        w = rng.standard_normal(ws)
        a = x if target == "input" else w
        a.reshape(-1)[0] = np.inf
        a.reshape(-1)[a.size // 2] = np.nan
        a.reshape(-1)[-1] = -np.inf
        with jaxconv.use_profile(profile):
            got = np.asarray(jax.jit(
                lambda x, w: jl.conv_general_dilated(x, w, s, pad, **kw))(x, w))
        if ld is None:  # the definition, one window at a time
            want = np.asarray(jl.conv_general_dilated(
                x, w, s, pad, algorithm="direct", **kw))
        else:  # lax multiplies weights by real inputs only, as the phases do
            want = np.asarray(lax.conv_general_dilated(
                x, w, s, pad, precision=lax.Precision.HIGHEST, **kw))
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), target)
        fin = np.isfinite(want)
        assert_close(got[fin], want[fin])


def _zoo_programs():
    from jaxconv import _zoo

    seen, out = set(), []
    for case in _zoo.zoo_cases():
        layer = case.layer
        key = (layer.spatial, layer.c_in, layer.c_out, layer.kernel, layer.stride,
               layer.dilation, layer.padding, layer.groups, layer.transposed)
        if case.n != 1 or key in seen:
            continue
        seen.add(key)
        out.append(case)
    return out


@pytest.mark.parametrize("case", _zoo_programs(), ids=lambda c: c.id)
def test_every_zoo_layer_on_the_gpu_profile(case):
    # Every distinct layer of the benchmark zoo (batch 1), forward and
    # gradient, exported for cuda: the same structure rules. (The tpu
    # preset shares the gpu thresholds.)
    layer = case.layer
    nd = len(layer.spatial)
    dn = bench._dn(nd)
    if layer.transposed:
        ws = (*layer.kernel, layer.c_in, layer.c_out)

        def f(x, w):
            return jl.conv_transpose(x, w, layer.stride, layer.padding,
                                     dimension_numbers=dn)
    else:
        ws = (*layer.kernel, layer.c_in // layer.groups, layer.c_out)

        def f(x, w):
            return jl.conv_general_dilated(
                x, w, layer.stride, layer.padding, rhs_dilation=layer.dilation,
                dimension_numbers=dn, feature_group_count=layer.groups)

    shapes = ((1, *layer.spatial, layer.c_in), ws)
    for which, fn in (("forward", f), ("gradient", _gradient(f))):
        s = _structure(fn, shapes, "gpu")
        assert s["conditionals"] == 0 and s["convolutions"] == 0, (which, s)
        if math.prod(layer.kernel) <= 49:
            assert s["loops"] <= 2, (which, s)
