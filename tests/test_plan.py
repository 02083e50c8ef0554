"""Plans and profiles: the one "auto" rule, the profile presets, ``explain``,
``algorithm="xla"`` and the shape of the algorithm layer (no import cycles,
no tuning constant outside the profile)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax

import jaxconv
from jaxconv import bench
from jaxconv import lax as jl
from jaxconv.algorithms import plan as planning
from jaxconv.algorithms.problem import Problem
from jaxconv.algorithms.profile import CPU_FAMILIES, cpu_family

PACKAGE = pathlib.Path(jaxconv.__file__).parent
PROFILES = ("cpu", "gpu", "tpu")
F32 = jnp.float32


def _dn(nd):
    return bench._dn(nd)


# --- the plan table ----------------------------------------------------------

# (id, x NHWC..., w HWIO..., stride, padding, rhs_dilation, groups) -> the
# formulation on the cpu profile; ON_ACCELERATORS lists where the gpu and tpu
# profiles choose differently (no space-to-depth where it needs a guard; a
# kernel equal to its stride needs none).
GRID = [
    ("dense 16x16 b1", (1, 16, 16, 64), (3, 3, 64, 64), 1, "SAME", 1, 1, "alltaps"),
    ("dense 64x64 b8", (8, 64, 64, 64), (3, 3, 64, 64), 1, "SAME", 1, 1, "wide"),
    ("dense 16x16 b8", (8, 16, 16, 64), (3, 3, 64, 64), 1, "SAME", 1, 1, "im2col"),
    ("64 columns 128ch", (1, 64, 64, 128), (3, 3, 128, 64), 1, "SAME", 1, 1, "taps"),
    ("32 columns 128ch", (1, 32, 32, 128), (3, 3, 128, 128), 1, "SAME", 1, 1,
     "im2col"),
    ("5x5 32->64", (1, 32, 32, 32), (5, 5, 32, 64), 1, "SAME", 1, 1, "im2col"),
    ("strided 3x3", (1, 112, 112, 16), (3, 3, 16, 32), 2, "SAME", 1, 1, "im2col"),
    ("4x4x512 b8", (8, 4, 4, 512), (3, 3, 512, 512), 1, "SAME", 1, 1, "taps"),
    ("2x2x512 b8", (8, 2, 2, 512), (3, 3, 512, 512), 1, "SAME", 1, 1, "im2col"),
    ("4x4x256 b1", (1, 4, 4, 256), (3, 3, 256, 256), 1, "SAME", 1, 1, "im2col"),
    ("1-D 32ch 4096", (8, 4096, 32), (7, 32, 32), 1, "SAME", 3, 1, "alltaps"),
    ("1-D 256ch 1024", (8, 1024, 256), (11, 256, 256), 1, "SAME", 5, 1, "taps"),
    ("2 wide groups s2", (1, 28, 28, 256), (3, 3, 128, 256), 2, "SAME", 1, 2,
     "groupgemm"),
    ("4 groups of 16", (1, 28, 28, 64), (3, 3, 16, 128), 1, "SAME", 1, 4, "groupgemm"),
    ("4 groups of 8", (1, 28, 28, 32), (3, 3, 8, 64), 1, "SAME", 1, 4, "grouped"),
    ("RGB 7x7 s2", (2, 20, 20, 3), (7, 7, 3, 8), 2, "SAME", 1, 1, "im2col"),
    ("1-D s2 64ch", (2, 500, 64), (5, 64, 64), 2, "SAME", 1, 1, "s2d"),
    ("1-D 80 taps", (1, 3000, 64), (80, 64, 64), 1, "VALID", 1, 1, "taps"),
    ("1-D dw 64 taps", (1, 2000, 8), (64, 1, 8), 1, "SAME", 1, 8, "toeplitz"),
    ("1-D dw mult 2", (1, 4096, 16), (128, 1, 32), 1, "VALID", 1, 16, "depthwise"),
    ("dw mult 2", (1, 28, 28, 96), (3, 3, 1, 192), 1, "SAME", 1, 96, "depthwise"),
    ("dw 11x11", (1, 9, 9, 4), (11, 11, 1, 4), 1, "SAME", 1, 4, "depthwise"),
    ("1-channel input", (8, 64, 64, 1), (3, 3, 1, 64), 1, "SAME", 1, 1, "taps"),
    ("1-channel 3-D", (1, 16, 16, 16, 1), (3, 3, 3, 1, 32), 1, "SAME", 1, 1, "taps"),
    ("1-channel s2", (1, 64, 64, 1), (3, 3, 1, 32), 2, "SAME", 1, 1, "im2col"),
    ("2-channel input", (8, 64, 64, 2), (3, 3, 2, 64), 1, "SAME", 1, 1, "im2col"),
    ("1-channel 1x1", (1, 9, 9, 1), (3, 3, 1, 1), 1, "SAME", 1, 1, "depthwise"),
    ("3-D strided", (1, 8, 8, 8, 16), (3, 3, 3, 16, 16), 2, "SAME", 1, 1, "im2col"),
    ("patchify 4x4 s4", (2, 64, 64, 3), (4, 4, 3, 96), 4, "VALID", 1, 1, "s2d"),
    ("patchify 2x2 s2", (8, 16, 16, 96), (2, 2, 96, 192), 2, "VALID", 1, 1, "s2d"),
    ("1-D patchify 256ch", (2, 64, 256), (4, 256, 64), 4, "SAME", 1, 1, "s2d"),
]
ON_ACCELERATORS = {"1-D s2 64ch": "taps", "1-D 32ch 4096": "shifted",
                   "1-D 256ch 1024": "shifted", "dense 64x64 b8": "alltaps",
                   "dense 16x16 b8": "alltaps", "64 columns 128ch": "im2col",
                   "32 columns 128ch": "im2col",
                   "1-channel input": "im2col", "1-channel 3-D": "im2col",
                   "5x5 32->64": "alltaps"}
SUITE = {  # the benchmark suite's cases
    "dense3": "im2col", "dense3_b8": "wide", "point": "dot", "stem": "im2col",
    "dw3": "depthwise", "dw3_s2": "depthwise", "dw7": "depthwise",
    "dw31": "depthwise", "group32": "grouped", "atrous": "im2col",
    "causal1d": "depthwise", "long1d": "spectral", "wav1d": "taps",
    "tconv2d": "polyphase", "vol3d": "taps",
}
SUITE_ON_ACCELERATORS = {"dense3": "alltaps", "dense3_b8": "im2col", "vol3d": "im2col",
                         "long1d": "toeplitz"}


# The cpu profile without its whole-matrix forms (2-D patch matrices built
# whole, the 1-D all-tap GEMM unblocked past ``alltaps_max_bytes``): the
# row-blocked and per-tap rules that those forms take precedence over.
BLOCKED = dict(im2col_2d_unblocked_max_bytes=0, im2col_2d_whole_min_o=1 << 62,
               alltaps_whole_scale=1)


def _formulations(f, *args):
    return [row.formulation for row in jaxconv.explain(f, *args)]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("case", bench.CASES, ids=lambda c: c.id)
def test_plan_table_suite(case, profile):
    x, w = (jax.ShapeDtypeStruct(a.shape, a.dtype) for a in bench.make_args(case))
    with jaxconv.use_profile(profile):
        rows = jaxconv.explain(bench.make_fn(case, jl), x, w)
    want = SUITE[case.id]
    if profile != "cpu":
        want = SUITE_ON_ACCELERATORS.get(case.id, want)
    assert [r.formulation for r in rows] == ["taps/" + want]
    assert rows[0].profile == jaxconv.get_profile(profile).label


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("case", GRID, ids=lambda c: c[0])
def test_plan_table_grid(case, profile):
    name, xs, ws, s, pad, d, g, want = case
    if profile != "cpu":
        want = ON_ACCELERATORS.get(name, want)
    nd = len(xs) - 2

    def f(x, w):
        return jl.conv_general_dilated(x, w, (s,) * nd, pad, rhs_dilation=(d,) * nd,
                                       dimension_numbers=_dn(nd), feature_group_count=g)

    with jaxconv.use_profile(profile):
        got = _formulations(f, jax.ShapeDtypeStruct(xs, F32),
                            jax.ShapeDtypeStruct(ws, F32))
    assert got == ["taps/" + want]


def _problem(xs, ws, stride, groups=1, pads=None, dilation=None, dtype=F32):
    nd = len(ws) - 2
    return Problem.of(jax.ShapeDtypeStruct(xs, dtype), jax.ShapeDtypeStruct(ws, dtype),
                      stride=stride, dilation=dilation or (1,) * nd, groups=groups,
                      pads=pads)


def test_plan_record_carries_blocks_steps_and_reason():
    # dense3_b8 without the blocked tap loop and the whole-matrix forms:
    # im2col in row blocks; the steps are the blocks.
    cpu = jaxconv.get_profile("cpu").replace(tap_block_bytes=0, **BLOCKED)
    p = planning.plan(_problem((8, 28, 28, 128), (3, 3, 128, 128), (1, 1),
                               pads=((1, 1), (1, 1))), cpu)
    assert p.formulation == "im2col" and p.label == "taps/im2col"
    (axis, rows, blocks), = p.param("blocks")
    assert axis == 0 and blocks == -(-28 // rows) and p.loop_steps == blocks
    assert p.flops == 2 * 8 * 28 * 28 * 128 * 9 * 128
    assert 0 < p.temp_bytes and "patch matrix" in p.reason
    # A larger block budget in the profile means fewer, larger blocks.
    big = planning.plan(p.problem, cpu.replace(block_max_bytes=16 * 2**20,
                                               block_io_fraction=4.0))
    assert big.loop_steps < p.loop_steps and big.temp_bytes > p.temp_bytes
    # long1d: a product of FFTs when every input is finite, else the exact
    # depthwise loop; without the transform, the Hankel form, one lax.map
    # step per channel, guarded the same way.
    long1d = _problem((1, 8192, 32), (1024, 1, 32), (1,), 32, pads=((511, 512),))
    f = planning.plan(long1d, cpu)
    assert (f.formulation, f.param("guard"), f.loop_steps) == (
        "spectral", "finite inputs", 0)
    assert f.inner[0].formulation == "depthwise" and "1024 taps >= 512" in f.reason
    assert 0 < f.temp_bytes <= 2 * long1d.io_bytes
    # algorithm="taps" keeps to the exact, window-local formulations.
    assert planning.plan(long1d, cpu, "taps").formulation == "toeplitz"
    assert "spectral" in [c.formulation for c in planning.candidates(long1d, cpu)]
    q = planning.plan(long1d, cpu.replace(fft_min_taps=1025))
    assert (q.formulation, q.param("form"), q.loop_steps) == ("toeplitz", "hankel", 32)
    assert q.param("guard") == "finite inputs"
    assert q.inner[0].formulation == "depthwise"
    # Half precision and integers keep the exact GEMMs (the transform would
    # round in float32 / lose integer exactness); so do the accelerators.
    half = _problem((1, 8192, 32), (1024, 1, 32), (1,), 32, pads=((511, 512),),
                    dtype="bfloat16")
    assert planning.plan(half, cpu).formulation == "toeplitz"
    assert planning.plan(long1d, jaxconv.get_profile("gpu")).formulation == "toeplitz"
    # s2d plans its stride-1 problem.
    r = planning.plan(_problem((2, 500, 64), (5, 64, 64), (2,), pads=((2, 2),)), cpu)
    assert r.formulation == "s2d" and r.inner[0].problem.in_per_group == 128
    assert "s2d" in str(r)
    assert r.param("guard") == "finite inputs (cond)"  # 5 taps, stride 2
    # A kernel that is a multiple of its stride has no zero-padded taps: no
    # guard; one equal to its stride is non-overlapping patches, a 1x1 GEMM.
    r = planning.plan(_problem((2, 500, 64), (4, 64, 64), (2,), pads=((1, 1),)), cpu)
    assert r.formulation == "s2d" and r.param("guard") is None
    for profile in PROFILES:
        r = planning.plan(_problem((2, 64, 64, 3), (4, 4, 3, 96), (4, 4)),
                          jaxconv.get_profile(profile))
        assert (r.formulation, r.param("guard")) == ("s2d", None)
        assert r.inner[0].formulation == "dot" and "non-overlapping" in r.reason


def test_small_patch_matrix_is_built_whole():
    # (im2col_unblocked_max_bytes, for any rank; the 2-D patch matrices
    # built whole up to 16 MiB are test_dense_2d_layers_run_whole_patch_gemms)
    cpu = jaxconv.get_profile("cpu").replace(**BLOCKED)
    # An RGB stem at batch 8: 8 * 32 * 32 rows of 27 taps = 864 KiB of
    # patches, under the 2 MiB unblocked size: one patch matrix, no loop.
    stem = _problem((8, 64, 64, 3), (3, 3, 3, 32), (2, 2), pads=((1, 1), (1, 1)))
    p = planning.plan(stem, cpu)
    assert stem.patch_bytes == 8 * 32 * 32 * 27 * 4
    assert (p.formulation, p.param("blocks"), p.loop_steps) == ("im2col", (), 0)
    # at the threshold: whole; one byte under it: the row blocks again
    size = stem.patch_bytes
    assert planning.plan(stem, cpu.replace(im2col_unblocked_max_bytes=size)
                         ).param("blocks") == ()
    q = planning.plan(stem, cpu.replace(im2col_unblocked_max_bytes=size - 1))
    assert q.param("blocks") and q.loop_steps > 1
    # dense3_b8 (7 MiB of patches) keeps its blocks; accelerators never use
    # the rule (their blocks follow the memory rule alone)
    dense = _problem((8, 28, 28, 128), (3, 3, 128, 128), (1, 1), pads=((1, 1), (1, 1)))
    assert dense.patch_bytes > cpu.im2col_unblocked_max_bytes
    assert planning.plan(dense, cpu).param("blocks")
    for name in ("gpu", "tpu"):
        assert jaxconv.get_profile(name).im2col_unblocked_max_bytes == 0


def test_profile_thresholds_steer_the_plan():
    dense = _problem((1, 16, 16, 64), (3, 3, 64, 64), (1, 1))
    # past the all-tap size, the cpu profile builds the patch matrix whole
    full = jaxconv.get_profile("cpu")
    whole = planning.plan(dense, full.replace(alltaps_max_bytes=0))
    assert whole.formulation == "im2col"
    cpu = full.replace(**BLOCKED)
    assert planning.plan(dense, cpu).formulation == "alltaps"
    assert planning.plan(dense, cpu.replace(alltaps_max_bytes=0,
                                            wide_2d_max_i=0)).formulation == "im2col"
    assert planning.plan(dense, cpu.replace(alltaps_max_bytes=0)).formulation == "wide"
    assert planning.plan(dense, cpu.replace(alltaps_max_bytes=0, wide_2d_max_i=0,
                                            alltaps_max_i=64)).formulation == "alltaps"
    assert planning.plan(dense, cpu.replace(alltaps_max_bytes=0, wide_2d_max_i=0,
                                            wide_min_width=14)).formulation == "wide"
    mono = _problem((1, 16, 16, 1), (3, 3, 1, 8), (1, 1))
    assert planning.plan(mono, cpu).formulation == "taps"
    assert planning.plan(mono, cpu).param("kernel_tangent") == "im2col"
    assert planning.plan(mono, cpu.replace(outer_max_i=0)).formulation == "im2col"
    assert planning.plan(dense, cpu.replace(unroll_limit=8)).formulation == "taps"
    dw = _problem((1, 20, 20, 4), (5, 5, 1, 4), (1, 1), 4)
    assert planning.plan(dw, cpu).param("form") == "unrolled"
    assert planning.plan(dw, cpu.replace(unroll_limit=16)).param("form") == "rows-scan"


def test_kernel_bound_taps_loop_over_taps():
    # The 3-D U-Net's 768 -> 256 layer on 4^3 (the kernel 14x the input):
    # per-tap GEMMs, in a scan over the 27 taps on the cpu profile.
    cpu = jaxconv.get_profile("cpu")
    up = _problem((8, 4, 4, 4, 768), (3, 3, 3, 768, 256), (1, 1, 1),
                  pads=((1, 1),) * 3)
    q = planning.plan(up, cpu)
    assert (q.formulation, q.param("scan"), q.loop_steps) == ("taps", True, 27)
    assert "in a loop over taps" in q.reason
    q = planning.plan(up, cpu.replace(kernel_bound_scan=False))
    assert (q.formulation, q.param("scan"), q.loop_steps) == ("taps", None, 0)
    assert "loop" not in q.reason
    assert planning.plan(up, jaxconv.get_profile("gpu")).param("scan") is None
    # 2-D too (a 512-channel 3x3 on 4x4 at batch 8: 2.25 MiB of patches);
    # not a layer whose kernel is small beside its input, nor one whose
    # patch matrix fits cache_patch_bytes (one GEMM: ResNet's 512-channel
    # 3x3 on 2x2 at batch 8, 576 KiB of patches).
    late = _problem((8, 4, 4, 512), (3, 3, 512, 512), (1, 1), pads=((1, 1),) * 2)
    assert planning.plan(late, cpu).param("scan") is True
    resnet = _problem((8, 2, 2, 512), (3, 3, 512, 512), (1, 1), pads=((1, 1),) * 2)
    assert planning.plan(resnet, cpu).formulation == "im2col"
    assert planning.plan(resnet, cpu.replace(cache_patch_bytes=512 * 1024)
                         ).param("scan") is True
    wide = _problem((8, 32, 32, 64), (3, 3, 64, 64), (1, 1), pads=((1, 1),) * 2)
    assert "kernel >" not in planning.plan(wide, cpu).reason
    small = _problem((1, 2, 2, 64), (3, 3, 64, 64), (1, 1), pads=((1, 1),) * 2)
    assert planning.plan(small, cpu).formulation == "im2col"


def test_blocked_tap_loop():
    """2-D/3-D dense stride-1 convs whose kernel gradient is the per-tap scan
    (512+ positions, 64+ input channels, in 2-D I * O >= 8192) and whose
    output is 512 KiB or more: per-tap GEMMs in a scan over taps, in row
    blocks whose output is at most 2 MiB."""
    cpu = jaxconv.get_profile("cpu")
    # the 3-D U-Net's 192 -> 64 layer on 16^3 at batch 8: 8 MiB of output
    up = _problem((8, 16, 16, 16, 192), (3, 3, 3, 192, 64), (1, 1, 1),
                  pads=((1, 1),) * 3)
    q = planning.plan(up, cpu)
    assert (q.formulation, q.param("scan")) == ("taps", True)
    assert q.param("blocks") == ((0, 4, 4),)  # 4 blocks of 4 rows: 2 MiB each
    assert q.loop_steps == 27 * 4
    assert "row blocks of 2 MiB" in q.reason
    assert planning.plan(up, cpu).param("kernel_grad") == "tap-scan"
    # exactly 512 KiB of output: one block (its 2.4 MB patch matrix is built
    # whole instead when the profile allows, one GEMM)
    first = _problem((4, 16, 16, 64), (3, 3, 64, 128), (1, 1), pads=((1, 1),) * 2)
    assert planning.plan(first, cpu).formulation == "im2col"
    q = planning.plan(first, cpu.replace(**BLOCKED))
    assert (q.formulation, q.param("blocks"), q.loop_steps) == ("taps", (), 9)
    # not: a smaller output, 64 x 64 per-tap products in 2-D (ResNet's first
    # stage), fewer input channels, a stride, a grouped or
    # transposed conv, 1-D, the accelerator profiles, the field at 0
    not_taken = [
        _problem((2, 16, 16, 64), (3, 3, 64, 128), (1, 1), pads=((1, 1),) * 2),
        _problem((8, 16, 16, 64), (3, 3, 64, 64), (1, 1), pads=((1, 1),) * 2),
        _problem((8, 16, 16, 32), (3, 3, 32, 64), (1, 1), pads=((1, 1),) * 2),
        _problem((8, 32, 32, 64), (3, 3, 64, 64), (2, 2), pads=((1, 1),) * 2),
        _problem((8, 16, 16, 128), (3, 3, 64, 128), (1, 1), groups=2,
                 pads=((1, 1),) * 2),
        _problem((8, 4096, 64), (3, 64, 64), (1,), pads=((1, 1),)),
    ]
    for p in not_taken:
        assert "row blocks of" not in planning.plan(p, cpu).reason
    for prof in (jaxconv.get_profile("gpu"), jaxconv.get_profile("tpu"),
                 cpu.replace(tap_block_bytes=0)):
        assert planning.plan(up, prof).param("blocks") != ((0, 4, 4),)
        assert "row blocks of" not in planning.plan(up, prof).reason


def test_reshaped_result_changes_only_the_depthwise_border():
    cpu = jaxconv.get_profile("cpu")
    dw = planning.plan(_problem((8, 16, 16, 8), (3, 3, 1, 8), (1, 1), groups=8,
                                pads=((1, 1), (1, 1))), cpu)
    assert dw.param("guard") == "re-poisoned borders"
    folded = planning.for_reshaped_result(dw)
    assert folded.param("guard") == "recomputed borders"
    assert dict(folded.params) == {**dict(dw.params), "guard": "recomputed borders"}
    assert (folded.formulation, folded.problem, folded.reason) == (
        dw.formulation, dw.problem, dw.reason)
    # a caller that splits the batch axis alone re-poisons the border itself
    deferred = planning.for_reshaped_result(dw, deferred=True)
    assert dict(deferred.params) == {**dict(dw.params),
                                     "guard": "re-poisoned borders, after unfolding"}
    # without padding (no border) and for every other formulation: unchanged
    for p in (_problem((8, 16, 16, 8), (3, 3, 1, 8), (1, 1), groups=8),
              _problem((8, 16, 16, 32), (3, 3, 32, 32), (1, 1), pads=((1, 1), (1, 1))),
              _problem((1, 64, 64, 3), (7, 7, 3, 16), (2, 2), pads=((3, 3), (3, 3)))):
        q = planning.plan(p, cpu)
        assert planning.for_reshaped_result(q) == q
        assert planning.for_reshaped_result(q, deferred=True) == q


def test_one_dimensional_dense_rules():
    # Deep, many-tap 1-D layers beyond the all-tap size: per-tap GEMMs in a
    # loop over the taps (one step per tap), not the one-GEMM forms; the cpu
    # profile runs the all-tap GEMM in groups of taps first (up to 16 MiB
    # of products each).
    deep = _problem((8, 1024, 128), (11, 128, 128), (1,), pads=((25, 25),),
                    dilation=(5,))
    q = planning.plan(deep, jaxconv.get_profile("cpu"))
    assert (q.formulation, q.param("tap_groups")) == ("alltaps", 3)
    cpu = jaxconv.get_profile("cpu").replace(**BLOCKED)
    q = planning.plan(deep, cpu)
    assert (q.formulation, q.param("scan"), q.loop_steps) == ("taps", True, 11)
    assert "in a loop over taps" in q.reason
    assert planning.plan(deep, cpu.replace(tap_loop_min_i=129)).formulation == "wide"
    assert planning.plan(deep, cpu.replace(tap_loop_min_taps=12)).formulation == "wide"
    wide = _problem((8, 256, 256), (7, 256, 256), (1,), pads=((3, 3),))
    q = planning.plan(wide, cpu)
    assert (q.formulation, q.param("scan")) == ("taps", True)
    q = planning.plan(wide, cpu.replace(tap_loop_min_taps=8))
    assert (q.formulation, q.param("scan")) == ("taps", None)  # unrolled
    few = _problem((8, 1024, 128), (3, 128, 128), (1,), pads=((1, 1),))
    assert planning.plan(few, cpu).formulation == "wide"
    # On one image the loop keeps the per-tap kernel tangent (and, with 512+
    # output rows, its kernel gradient is the scan of per-tap GEMMs).
    one = _problem((1, 1024, 128), (7, 128, 128), (1,), pads=((3, 3),))
    q = planning.plan(one, cpu)
    assert (q.formulation, q.param("scan"), q.param("kernel_tangent"),
            q.param("kernel_grad")) == ("taps", True, "tap-gemms", "tap-scan")
    # One input channel: per-tap outer products, as in 2-D.
    mono = _problem((8, 4096, 1), (7, 1, 32), (1,), pads=((3, 3),))
    q = planning.plan(mono, cpu)
    assert (q.formulation, q.param("kernel_tangent")) == ("taps", "im2col")
    assert "outer products" in q.reason
    assert planning.plan(mono, cpu.replace(outer_max_i=0)).formulation != "taps"
    # Kernel-bound (few frames, many channels) with a cache-sized patch
    # matrix: one GEMM; beyond the cache, the 1-D rules (no per-tap GEMMs
    # of so few rows).
    frames = _problem((8, 16, 80), (7, 80, 512), (1,), pads=((3, 3),))
    q = planning.plan(frames, cpu)
    assert q.formulation == "im2col" and "kernel > 8x input bytes" in q.reason
    assert planning.plan(frames, cpu.replace(cache_patch_bytes=0)).formulation == "wide"


# The profile changes the plan, never the result: the same problems under
# profiles that force other formulations, blocks and loops still equal lax.
PROFILE_VARIANTS = {
    "cpu": {},
    # (tiny problems: im2col's whole patch matrix is under the unblocked size)
    "tiny-blocks": dict(block_min_bytes=1, block_max_bytes=2000, block_io_fraction=0,
                        im2col_unblocked_max_bytes=0),
    "no-alltaps": dict(alltaps_max_bytes=0),  # 2-D: "wide"
    "scan-everything": dict(unroll_limit=2, toeplitz_min_taps=4, hankel_min_taps=4,
                            phase_gemm_max_taps=0, pad_in_loop_max_taps=0),
    "fft-depthwise-1d": dict(fft_min_taps=2),  # every 1-D depthwise: "spectral"
    # 1-D stride 1 runs "shifted" (2-D "im2col") in several row blocks:
    "no-alltaps-tiny-blocks": dict(alltaps_max_bytes=0, wide_2d_max_i=0,
                                   block_min_bytes=1, block_max_bytes=600,
                                   block_io_fraction=0, im2col_unblocked_max_bytes=0),
    "wide-tiny-blocks": dict(alltaps_max_bytes=0, block_min_bytes=1,
                             block_max_bytes=600, block_io_fraction=0,
                             im2col_unblocked_max_bytes=0),
    "blocked-alltaps": dict(alltaps_max_bytes=0, wide_2d_max_i=0, alltaps_max_i=64,
                            block_min_bytes=1, block_max_bytes=2000,
                            block_io_fraction=0, im2col_unblocked_max_bytes=0),
    "no-outer-products": dict(outer_max_i=0),
    "kernel-bound": dict(cache_patch_bytes=0),  # per-tap GEMMs where W > x, a scan
    "kernel-bound-unrolled": dict(cache_patch_bytes=0, kernel_bound_scan=False),
    "tap-loop": dict(alltaps_max_bytes=0, tap_loop_min_i=1, tap_loop_min_taps=2),
    # 2-D/3-D per-tap GEMMs in a loop, in (nested) row blocks of a few rows,
    # and the per-tap kernel-gradient scan on every stride-1 dense problem
    "tap-blocks": dict(tap_scan_nd_min_rows=1, tap_scan_nd_min_i=1,
                       tap_scan_2d_min_io=1, tap_scan_min_o=1, tap_block_min_bytes=1,
                       tap_block_bytes=600),
    "tap-scan-nd": dict(tap_scan_nd_min_rows=1, tap_scan_nd_min_i=1,
                        tap_scan_2d_min_io=1, tap_scan_min_o=1),
    # 1-D kernel gradients as one block-Hankel GEMM, blocks of 2, 3 or 5
    "hankel": dict(hankel_kernel_grad_min_tap_channels=1, hankel_kernel_grad_min_i=1,
                   hankel_kernel_grad_blocks=(2, 3, 5), tap_scan_min_o=1),
    # the depthwise/grouped kernel-gradient row scan one column per step
    "row-chunks": dict(rowscan_carry_bytes=1),
    # the AVX-512 family's table, and its 2-D "shifted" rule in tiny blocks
    "avx512": dict(CPU_FAMILIES["avx512"]),
    "shifted-2d-tiny-blocks": dict(shifted_2d_min_i=1, alltaps_max_bytes=0,
                                   block_min_bytes=1, block_max_bytes=600,
                                   block_io_fraction=0),
}
NUMERIC = [
    ((2, 9, 8, 6), (3, 3, 6, 5), (1, 1), "SAME", 1, None),
    ((1, 11, 10, 3), (5, 4, 3, 4), (2, 1), "SAME", 1, None),
    ((2, 9, 9, 8), (3, 3, 2, 8), (1, 1), "SAME", 4, None),
    ((2, 9, 8, 48), (3, 3, 16, 12), (1, 2), "SAME", 3, None),  # groupgemm
    ((1, 9, 9, 6), (3, 3, 1, 6), (1, 2), "SAME", 6, None),
    ((2, 40, 6), (9, 1, 6), (1,), [(4, 4)], 6, None),
    ((2, 17, 5), (3, 5, 4), (2,), "VALID", 1, None),
    ((1, 5, 6, 4), (4, 4, 4, 3), (1, 1), [(2, 2), (1, 3)], 1, (2, 2)),  # transposed
    ((2, 23, 5), (4, 5, 6), (1,), [(2, 3)], 1, None),
    ((1, 6, 5, 16), (3, 3, 16, 24), (1, 1), "SAME", 1, None),  # kernel > input
    ((1, 700, 6), (5, 6, 4), (1,), [(3, 2)], 1, None),  # 1-D kernel grad: tap GEMMs
    ((2, 9, 8, 1), (3, 2, 1, 5), (1, 1), [(1, 2), (0, 1)], 1, None),  # outer products
    ((1, 5, 6, 5, 1), (2, 3, 3, 1, 4), (1, 1, 1), "SAME", 1, None),  # 3-D, I = 1
    ((2, 30, 1), (5, 1, 6), (1,), [(3, 1)], 1, None),  # 1-D, I = 1
    ((2, 6, 12), (5, 12, 40), (1,), "SAME", 1, None),  # 1-D kernel-bound
    ((2, 5, 6, 7, 4), (3, 2, 3, 4, 5), (1, 1, 1), [(1, 1), (0, 1), (2, 0)], 1, None),
]


@pytest.mark.parametrize("variant", list(PROFILE_VARIANTS))
@pytest.mark.parametrize("case", NUMERIC, ids=str)
def test_profile_never_changes_the_result(case, variant, rng):
    xs, ws, s, pad, g, ld = case
    nd = len(xs) - 2
    kw = dict(dimension_numbers=_dn(nd), feature_group_count=g, lhs_dilation=ld)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    profile = jaxconv.get_profile("cpu").replace(**PROFILE_VARIANTS[variant])

    def ours(x, w):
        return jl.conv_general_dilated(x, w, s, pad, **kw)

    def theirs(x, w):
        return lax.conv_general_dilated(x, w, s, pad, **kw)

    with jaxconv.use_profile(profile):
        got = jax.jit(ours)(x, w)
        grads = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(ours(x, w))), (0, 1)))(
            x, w)
    assert_close(got, theirs(x, w))
    want = jax.grad(lambda x, w: jnp.sum(jnp.sin(theirs(x, w))), (0, 1))(x, w)
    for a, b in zip(grads, want):
        assert_close(a, b)


# --- profile selection -------------------------------------------------------


def test_profile_presets_and_selection(monkeypatch):
    monkeypatch.delenv("JAXCONV_PROFILE", raising=False)
    assert jaxconv.current_profile().name == jax.default_backend()
    assert jaxconv.get_profile("cpu") == jaxconv.Profile()
    assert jaxconv.get_profile("GPU").workspace_bytes == 256 << 20
    assert jaxconv.get_profile("cpu").workspace_bytes == 64 << 20
    monkeypatch.setenv("JAXCONV_PROFILE", "tpu")
    assert jaxconv.current_profile().name == "tpu"
    with jaxconv.use_profile("gpu") as active:
        assert active.name == "gpu" and jaxconv.current_profile() is active
        custom = jaxconv.get_profile("cpu").replace(unroll_limit=3)
        with jaxconv.use_profile(custom):
            assert jaxconv.current_profile().unroll_limit == 3
        assert jaxconv.current_profile().name == "gpu"
    assert jaxconv.current_profile().name == "tpu"
    hash(jaxconv.current_profile())  # a jit static argument


def test_a_fresh_function_per_profile_block_gets_that_profiles_plan():
    # The recipe of docs/auto.md for comparing profiles on one function: a
    # fresh function object traced in each block (JAX keeps one trace per
    # Python function).  A kernel-bound layer: one patch GEMM on the cpu
    # preset, per-tap GEMMs when no patch matrix fits.
    x = jax.ShapeDtypeStruct((1, 16, 16, 128), F32)
    w = jax.ShapeDtypeStruct((3, 3, 128, 256), F32)

    def f(x, w):
        return jl.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_dn(2))

    def program():
        return jax.jit(lambda x, w: f(x, w)).lower(x, w).as_text()

    per_tap = jaxconv.get_profile("cpu").replace(cache_patch_bytes=0)
    with jaxconv.use_profile("cpu"):
        one_gemm = program()
    with jaxconv.use_profile(per_tap):
        assert _formulations(f, x, w) == ["taps/taps"]
        taps = program()
    with jaxconv.use_profile("cpu"):
        assert _formulations(f, x, w) == ["taps/im2col"]
        assert program() == one_gemm
    assert taps != one_gemm


def test_workspace_override(monkeypatch):
    monkeypatch.setenv("JAXCONV_WORKSPACE_MB", "8")
    assert jaxconv.get_profile("gpu").workspace_bytes == 8 << 20
    monkeypatch.setenv("JAXCONV_WORKSPACE_MB", "lots")
    with pytest.raises(ValueError, match=r"`JAXCONV_WORKSPACE_MB` \(='lots'\)"):
        jaxconv.get_profile("cpu")


def test_cpu_family_is_read_from_the_cpu_flags(monkeypatch):
    xeon = "processor : 0\nflags : fpu sse2 avx avx2 fma avx512f avx512bw amx_tile\n"
    epyc = "processor : 0\nflags : fpu sse2 avx avx2 fma sha_ni\n"
    arm = "processor : 0\nFeatures : fp asimd sve\n"
    assert cpu_family(xeon) == "avx512"
    assert cpu_family(epyc) == cpu_family(arm) == cpu_family("") == "avx2"
    # the environment wins over this host's flags (conftest.py pins "avx2")
    assert cpu_family() == "avx2" and jaxconv.get_profile("cpu").family == "avx2"
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", "avx512")
    assert cpu_family() == "avx512"
    cpu = jaxconv.get_profile("cpu")
    assert (cpu.name, cpu.family, cpu.label) == ("cpu", "avx512", "cpu/avx512")
    assert cpu == jaxconv.Profile().replace(family="avx512", **CPU_FAMILIES["avx512"])
    gpu = jaxconv.get_profile("gpu")
    assert (gpu.family, gpu.label) == ("", "gpu")
    # without the variable: this host's own flags
    monkeypatch.delenv("JAXCONV_CPU_FAMILY")
    with open("/proc/cpuinfo") if pathlib.Path("/proc/cpuinfo").exists() else \
            open(__file__) as f:
        host = cpu_family(f.read())
    assert cpu_family() == host


def test_unknown_cpu_family_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", "avx1024")
    with pytest.raises(ValueError, match=r"`JAXCONV_CPU_FAMILY` \(='avx1024'\) must "
                       r"be one of 'avx2', 'avx512'"):
        jaxconv.get_profile("cpu")


def test_avx512_family_runs_wide_2d_layers_as_shifted_per_tap_gemms(monkeypatch, rng):
    """On AVX-512 hosts a dense 2-D stride-1 layer on 64+ input channels
    whose all-tap GEMM output is past the unblocked size runs "shifted";
    kernel-bound, narrower and small layers keep the avx2 rule."""
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", "avx2")
    avx2 = jaxconv.get_profile("cpu")
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", "avx512")
    avx512 = jaxconv.get_profile("cpu")
    b8 = _problem((8, 40, 40, 128), (3, 3, 128, 128), (1, 1), pads=((1, 1),) * 2)
    assert planning.plan(b8, avx2).formulation == "taps"
    q = planning.plan(b8, avx512)
    assert q.formulation == "shifted" and q.param("blocks")
    assert "I = 128 >= 64" in q.reason
    # (at 28 x 28 one kernel row's all-tap products fit the whole size:
    # "wide" in a loop over kernel rows,
    # on both families)
    b8 = _problem((8, 28, 28, 128), (3, 3, 128, 128), (1, 1), pads=((1, 1),) * 2)
    for prof in (avx512, avx2):
        q = planning.plan(b8, prof)
        assert q.formulation == "wide" and q.param("row_loop") and not q.param("blocks")
    # (fewer than 32 outputs, kernel-bound, small: the avx2 rule)
    narrow = _problem((1, 56, 56, 32), (3, 3, 32, 16), (1, 1), pads=((1, 1),) * 2)
    deep = _problem((8, 4, 4, 512), (3, 3, 512, 512), (1, 1), pads=((1, 1),) * 2)
    small = _problem((1, 8, 8, 64), (3, 3, 64, 16), (1, 1), pads=((1, 1),) * 2)
    for p in (narrow, deep, small):
        assert planning.plan(p, avx512) == dataclasses.replace(
            planning.plan(p, avx2), profile=avx512)
    # the result and its gradients through the public API
    x = rng.standard_normal((2, 12, 10, 64)).astype(np.float32)
    w = rng.standard_normal((3, 3, 64, 16)).astype(np.float32)
    def ours(x, w):
        return jl.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_dn(2))

    with jaxconv.use_profile(avx512.replace(alltaps_max_bytes=0)):
        (row,) = jaxconv.explain(ours, x, w)
        got = jax.jit(ours)(x, w)
        grads = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(ours(x, w))),
                                 (0, 1)))(x, w)
    assert (row.formulation, row.profile) == ("taps/shifted", "cpu/avx512")
    def theirs(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_dn(2))

    assert_close(got, theirs(x, w))
    want = jax.grad(lambda x, w: jnp.sum(jnp.sin(theirs(x, w))), (0, 1))(x, w)
    for a, b in zip(grads, want):
        assert_close(a, b)


@pytest.mark.parametrize("family", ["avx2", "avx512"])
def test_2d_patch_matrices_built_whole_within_the_memory_room(family, monkeypatch, rng):
    """On the cpu profile (both families) a 2-D patch matrix larger than the
    conv's input, kernel and output together but within twice that (an RGB
    stem) is built whole; beyond twice on fewer than 32 outputs, and
    without ``im2col_2d_unblocked_max_bytes``, it is built in row blocks."""
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", family)
    cpu = jaxconv.get_profile("cpu")
    blocked = cpu.replace(im2col_2d_unblocked_max_bytes=0)
    stem = _problem((8, 64, 64, 3), (7, 7, 3, 64), (2, 2), pads=((3, 3),) * 2)
    assert stem.io_bytes + stem.w_bytes < stem.patch_bytes
    assert stem.patch_bytes <= 2 * (stem.io_bytes + stem.w_bytes)
    a, b = planning.plan(stem, blocked), planning.plan(stem, cpu)
    assert a.formulation == b.formulation == "im2col"
    assert a.param("blocks") and not b.param("blocks")
    # (beyond twice, on fewer than 32 outputs: row blocks)
    wide = _problem((8, 16, 16, 128), (3, 3, 128, 8), (2, 2), pads=((1, 1),) * 2)
    assert wide.patch_bytes > 2 * (wide.io_bytes + wide.w_bytes)
    q = planning.plan(wide, cpu)
    assert q.formulation == "im2col" and q.param("blocks")
    # the whole patch matrix through the public API, forward and gradients
    x = rng.standard_normal((2, 20, 18, 3)).astype(np.float32)
    w = rng.standard_normal((7, 7, 3, 8)).astype(np.float32)

    def conv(lx, x, w):
        return lx.conv_general_dilated(x, w, (2, 2), ((3, 3), (3, 3)),
                                       dimension_numbers=_dn(2))

    (row,) = jaxconv.explain(functools.partial(conv, jl), x, w)
    assert row.formulation == "taps/im2col" and not row.plan.param("blocks")
    assert_close(jax.jit(functools.partial(conv, jl))(x, w), conv(lax, x, w))
    loss = lambda lx: lambda x, w: jnp.sum(jnp.sin(conv(lx, x, w)))  # noqa: E731
    for a, b in zip(jax.jit(jax.grad(loss(jl), (0, 1)))(x, w),
                    jax.grad(loss(lax), (0, 1))(x, w)):
        assert_close(a, b)


@pytest.mark.parametrize("family", ["avx2", "avx512"])
def test_dense_2d_layers_run_whole_patch_gemms(family, monkeypatch, rng):
    """On the cpu profile (both families) a dense 2-D layer on 32+ output
    channels whose patch matrix takes at most 16 MiB builds it whole, beyond
    the memory room, and runs one GEMM of depth T*I (``im2col``); fewer
    outputs, larger patch matrices, kernel-bound layers, grouped ones and
    a profile without the fields do not."""
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", family)
    cpu = jaxconv.get_profile("cpu")
    blocked = cpu.replace(**BLOCKED)
    assert cpu.im2col_2d_whole_min_o == 32
    pads = ((1, 1),) * 2
    # ResNet's 3x3 64 -> 64 layer at batch 8 on 16 x 16: a 4.7 MB patch
    # matrix, twice the room
    layer = _problem((8, 16, 16, 64), (3, 3, 64, 64), (1, 1), pads=pads)
    assert layer.patch_bytes > 2 * (layer.io_bytes + layer.w_bytes)
    q = planning.plan(layer, cpu)
    assert (q.formulation, q.param("blocks")) == ("im2col", ())
    assert "O = 64 >= 32" in q.reason and "built whole" in q.reason
    assert q.temp_bytes >= layer.patch_bytes
    assert planning.plan(layer, blocked).formulation != "im2col"
    # strided: built whole too (in blocks without the fields)
    strided = _problem((8, 16, 16, 64), (5, 5, 64, 32), (2, 2), pads=((2, 2),) * 2)
    assert strided.patch_bytes > 2 * (strided.io_bytes + strided.w_bytes)
    q = planning.plan(strided, cpu)
    assert (q.formulation, q.param("blocks")) == ("im2col", ())
    assert planning.plan(strided, blocked).param("blocks")
    # 31 outputs; a 28.9 MB patch matrix; kernel-bound; grouped; all-tap
    # output within 2 MiB (one GEMM already): other rules
    for p in (_problem((8, 16, 16, 64), (3, 3, 64, 31), (1, 1), pads=pads),
              _problem((1, 16, 16, 64), (3, 3, 64, 64), (1, 1), pads=pads),
              _problem((8, 28, 28, 128), (3, 3, 128, 128), (1, 1), pads=pads),
              _problem((8, 4, 4, 512), (3, 3, 512, 512), (1, 1), pads=pads),
              _problem((8, 16, 16, 64), (3, 3, 16, 64), (1, 1), pads=pads,
                       groups=4)):
        assert "built whole" not in planning.plan(p, cpu).reason
    # through the public API (all-tap size 0, so that a small layer takes
    # the rule), forward and gradients, against lax (the input gradient,
    # 32 -> 16 channels, is not built whole)
    x = rng.standard_normal((2, 12, 10, 16)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, 32)).astype(np.float32)
    small = _problem(x.shape, w.shape, (1, 1), pads=pads)
    assert small.patch_bytes > 2 * (small.io_bytes + small.w_bytes)

    def conv(lx, x, w):
        return lx.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_dn(2))

    loss = lambda lx: lambda x, w: jnp.sum(jnp.sin(conv(lx, x, w)))  # noqa: E731
    with jaxconv.use_profile(cpu.replace(alltaps_max_bytes=0)):
        rows = jaxconv.explain(jax.grad(loss(jl), (0, 1)), x, w)
        got = jax.jit(functools.partial(conv, jl))(x, w)
        grads = jax.jit(jax.grad(loss(jl), (0, 1)))(x, w)
    assert [(r.formulation, r.plan.param("blocks")) for r in rows][0] == (
        "taps/im2col", ())
    assert "built whole" in rows[0].plan.reason
    assert_close(got, conv(lax, x, w))
    for a, b in zip(grads, jax.grad(loss(lax), (0, 1))(x, w)):
        assert_close(a, b)


@pytest.mark.parametrize("family", ["avx2", "avx512"])
def test_all_tap_gemms_whole_up_to_the_scale(family, monkeypatch, rng):
    """On the cpu profile (both families) a 1-D dense stride-1 layer whose
    all-tap GEMM output is within ``alltaps_whole_scale`` x
    ``alltaps_max_bytes`` (16 MiB) runs it unblocked, one GEMM, and past
    that in a loop over groups of taps; with a scale of 1 it does not."""
    monkeypatch.setenv("JAXCONV_CPU_FAMILY", family)
    cpu = jaxconv.get_profile("cpu")
    blocked = cpu.replace(**BLOCKED)
    assert cpu.alltaps_max_bytes * cpu.alltaps_whole_scale == 16 * 2**20
    # HiFi-GAN residual-block layers: 12.6 MB of all-tap output; 46 MB
    mid = _problem((8, 4096, 32), (3, 32, 32), (1,), pads=((1, 1),))
    big = _problem((8, 4096, 32), (11, 32, 32), (1,), pads=((5, 5),))
    assert 2 * 2**20 < planning._alltaps_bytes(mid) <= 16 * 2**20
    assert planning._alltaps_bytes(big) > 16 * 2**20
    a, b = planning.plan(mid, blocked), planning.plan(mid, cpu)
    assert a.formulation == "wide" and a.param("blocks")
    assert b.formulation == "alltaps" and not b.param("blocks")
    # (past the size: a loop over groups of the 3 taps whose products fit)
    q = planning.plan(big, cpu)
    assert (q.formulation, q.param("tap_groups"), q.loop_steps) == ("alltaps", 3, 3)
    assert planning.plan(big, blocked).formulation == "wide"
    # 2-D keeps the 2 MiB size (ResNet's 56 x 56 x 64 3x3 layer, 7.4 MB of
    # all-tap output, builds its patch matrix whole instead); past 16 MiB,
    # where one kernel row's products fit, "wide" runs a kernel row at a time
    dense3 = _problem((1, 56, 56, 64), (3, 3, 64, 64), (1, 1), pads=((1, 1),) * 2)
    assert 2 * 2**20 < planning._alltaps_bytes(dense3) <= 16 * 2**20
    q = planning.plan(dense3, cpu)
    assert q.formulation == "im2col" and not q.param("blocks")
    wide = _problem((1, 64, 64, 128), (3, 3, 128, 128), (1, 1), pads=((1, 1),) * 2)
    assert planning._alltaps_bytes(wide) > 16 * 2**20
    q = planning.plan(wide, cpu)
    assert q.formulation == "wide" and q.param("row_loop")
    assert not planning.plan(wide, blocked).param("row_loop")
    # through the public API, forward and gradients, dilated, against lax
    x = rng.standard_normal((2, 300, 16)).astype(np.float32)
    w = rng.standard_normal((5, 16, 12)).astype(np.float32)

    def conv(lx, x, w):
        return lx.conv_general_dilated(x, w, (1,), ((6, 6),), rhs_dilation=(3,),
                                       dimension_numbers=_dn(1))

    # (its all-tap output, 150 KB, between a 64 KiB limit and 8x it)
    small = _problem(x.shape, w.shape, (1,), pads=((6, 6),), dilation=(3,))
    scaled = cpu.replace(alltaps_max_bytes=2**16)
    assert 2**16 < planning._alltaps_bytes(small) <= 8 * 2**16
    unscaled = scaled.replace(alltaps_whole_scale=1)
    assert planning.plan(small, unscaled).formulation == "wide"
    with jaxconv.use_profile(scaled):
        (row,) = jaxconv.explain(functools.partial(conv, jl), x, w)
        assert row.formulation == "taps/alltaps" and not row.plan.param("blocks")
        got = jax.jit(functools.partial(conv, jl))(x, w)
        loss = lambda lx: lambda x, w: jnp.sum(jnp.sin(conv(lx, x, w)))  # noqa: E731
        grads = jax.jit(jax.grad(loss(jl), (0, 1)))(x, w)
    assert_close(got, conv(lax, x, w))
    for a, b in zip(grads, jax.grad(loss(lax), (0, 1))(x, w)):
        assert_close(a, b)


def test_unknown_profile_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match=r"`profile` \(='metal'\) must be one of"):
        with jaxconv.use_profile("metal"):
            pass
    monkeypatch.setenv("JAXCONV_PROFILE", "metal")
    with pytest.raises(ValueError, match="'metal'"):
        jaxconv.current_profile()


# --- explain -----------------------------------------------------------------


def test_explain_one_op_and_its_table():
    x = jax.ShapeDtypeStruct((1, 112, 112, 96), F32)
    w = jax.ShapeDtypeStruct((3, 3, 1, 96), F32)
    rows = jaxconv.explain(lambda x, w: jaxconv.depthwise_conv(x, w, padding="SAME"),
                           x, w)
    (row,) = rows
    assert row.op == "depthwise conv" and row.formulation == "taps/depthwise"
    assert row.input_shape == (1, 112, 112, 96) and row.output_shape[1:3] == (112, 112)
    assert row.profile == jaxconv.current_profile().label == "cpu/avx2"
    assert row.dtype == "float32"
    text = str(rows)
    assert text.splitlines()[0].split()[:3] == ["op", "input", "kernel"]
    assert "taps/depthwise" in text and "elementwise" in text
    assert str(jaxconv.explain(jnp.sin, x)).endswith("(no jaxconv convolution)")


def test_explain_sees_through_jit_and_caches():
    x = jnp.ones((1, 8, 8, 3))
    w = jnp.ones((3, 3, 3, 4))
    f = jax.jit(lambda x, w: jaxconv.conv(x, w, padding="SAME"))
    f(x, w)  # traced and compiled once already
    assert _formulations(f, x, w) == ["taps/im2col"]
    assert _formulations(f, x, w) == ["taps/im2col"]


def test_explain_flax_apply_and_its_gradient():
    linen = pytest.importorskip("flax.linen")

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            conv = jaxconv.lax.conv_general_dilated
            x = linen.Conv(16, (3, 3), conv_general_dilated=conv)(x)
            x = linen.Conv(16, (3, 3), feature_group_count=16,
                           conv_general_dilated=conv)(x)
            return linen.Conv(8, (1, 1), conv_general_dilated=conv)(x).sum()

    net = Net()
    x = jnp.ones((2, 16, 16, 3))
    params = net.init(jax.random.key(0), x)
    forward = jaxconv.explain(net.apply, params, x)
    assert [r.formulation for r in forward] == [
        "taps/im2col", "taps/depthwise", "taps/dot"]
    grad = jaxconv.explain(jax.grad(net.apply), params, x)
    ops = [r.op for r in grad]
    # forward rows, then each conv's kernel gradient (the input of the first
    # conv is not differentiated; the other two also need input gradients).
    assert ops[:3] == ["conv", "depthwise conv", "conv"]
    assert sum("kernel grad" in op for op in ops) == 3
    assert sum("input grad" in op for op in ops) == 2


def test_explain_nn_model():
    model = jaxconv.nn.Sequential([jaxconv.nn.Conv(8, (3, 3), padding="SAME"),
                                   jaxconv.nn.Relu(),
                                   jaxconv.nn.DepthwiseConv((5, 5), padding="SAME")])
    params, _ = model.init(jax.random.key(0), (16, 16, 3))
    rows = jaxconv.explain(model.apply, params, jnp.ones((2, 16, 16, 3)))
    assert [r.formulation for r in rows] == ["taps/im2col", "taps/depthwise"]


# --- algorithm="xla" ---------------------------------------------------------

XLA_CASES = [
    dict(window_strides=(1, 2), padding="SAME"),
    dict(window_strides=(1, 1), padding=((2, -1), (0, 3)), lhs_dilation=(2, 1),
         rhs_dilation=(1, 2)),
    dict(window_strides=(1, 1), padding="VALID", feature_group_count=2),
    dict(window_strides=(1, 1), padding="VALID", batch_group_count=2),
]


@pytest.mark.parametrize("kw", XLA_CASES, ids=str)
def test_xla_escape_hatch_equals_lax(kw, rng):
    x = rng.standard_normal((4, 7, 8, 6))
    w = rng.standard_normal((3, 3, 3 if "feature_group_count" in kw else 6, 8))
    dn = ("NHWC", "HWIO", "NHWC")
    got = jl.conv_general_dilated(x, w, dimension_numbers=dn, algorithm="xla", **kw)
    want = lax.conv_general_dilated(x, w, dimension_numbers=dn, **kw)
    assert_close(got, want)
    g = jax.grad(lambda w: jnp.sum(jl.conv_general_dilated(
        x, w, dimension_numbers=dn, algorithm="xla", **kw) ** 2))(w)
    assert_close(g, jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(
        x, w, dimension_numbers=dn, **kw) ** 2))(w))


def test_xla_escape_hatch_is_explained_and_lowers_to_a_convolution():
    x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 4))

    def f(x, w, algorithm):
        return jaxconv.conv(x, w, padding="SAME", algorithm=algorithm)

    (row,) = jaxconv.explain(lambda x, w: f(x, w, "xla"), x, w)
    assert row.formulation == "xla" and "requested" in row.reason
    assert "convolution" in jax.jit(lambda x, w: f(x, w, "xla")).lower(x, w).as_text()
    assert "convolution" not in jax.jit(
        lambda x, w: f(x, w, "auto")).lower(x, w).as_text()


def test_auto_and_autotune_never_choose_xla():
    cpu = jaxconv.get_profile("cpu")
    for case in GRID:
        _, xs, ws, s, pad, d, g, _ = case
        problem = _problem(xs, ws, (s,) * (len(xs) - 2), g)
        if problem.empty:
            continue
        assert planning.plan(problem, cpu).formulation in planning.TAPS_FAMILY
        assert all(c.formulation in planning.TAPS_FAMILY
                   for c in planning.candidates(problem, cpu))


# --- the shape of the algorithm layer ----------------------------------------


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph():
    """``{module: modules it imports}`` over the package, and the
    function-local imports (``module:line``)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph, local = {}, []
    for name, path in paths.items():
        package = name.split(".") if path.stem == "__init__" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # ``from pkg import sub`` imports the module ``pkg.sub``.
                found = {f"{mod}.{a.name}" if f"{mod}.{a.name}" in paths else mod
                         for a in node.names}
            elif isinstance(node, ast.Import):
                found = {a.name for a in node.names}
            else:
                continue
            found = {m for m in found if m in paths and m != name}
            if node.col_offset > 0:
                local += [f"{name}:{node.lineno}"] if found else []
            else:
                edges |= found
        graph[name] = edges
    return graph, local


def test_no_import_cycle_in_the_package():
    graph, _ = _graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_function_local_imports_in_the_algorithm_layer():
    _, local = _graph()
    assert [loc for loc in local if loc.startswith("jaxconv.algorithms")] == []


def test_tuning_constants_live_in_the_profile():
    # Module-level numeric constants in the algorithm layer: only the cache
    # format version and the timing repetitions of autotune, which are not
    # tuning constants of the plan.
    allowed = {("autotune", "CACHE_VERSION"), ("autotune", "REPEATS")}
    found = []
    for path in (PACKAGE / "algorithms").glob("*.py"):
        if path.stem == "profile":
            continue
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, (int, float))
                    and not isinstance(node.value.value, bool)):
                for target in node.targets:
                    if (path.stem, getattr(target, "id", "")) not in allowed:
                        found.append(f"{path.name}: {getattr(target, 'id', '?')}")
    assert found == []


def test_every_registered_formulation_is_planned_somewhere():
    assert set(planning.TAPS_FAMILY) <= set(planning.REGISTRY)
    assert {"direct", "patches", "fft", "winograd"} <= set(planning.REGISTRY)
    assert np.all([name in planning.ALGORITHMS for name in ("auto", "xla", "autotune")])


@pytest.mark.parametrize("pad", [(1, -1), (-1, 1), (2, -2), (-1, -1), (1, 2)])
def test_padding_that_keeps_the_size_is_still_applied(pad, rng):
    # (1, -1) pads one end and crops the other: the input keeps its size, yet
    # must be padded (the plan is made on the materialised input).
    x = rng.standard_normal((2, 5, 3))
    w = rng.standard_normal((2, 3, 2))
    kw = dict(dimension_numbers=("NWC", "WIO", "NWC"))
    for algorithm in ("auto", "direct", "xla"):
        assert_close(jl.conv_general_dilated(x, w, (1,), [pad], algorithm=algorithm,
                                             **kw),
                     lax.conv_general_dilated(x, w, (1,), [pad], **kw))


# --- input gradients: a planned convolution of the cotangent ------------------

# (x, w, stride, padding, rhs_dilation, groups): stride-1 problems run their
# input gradient as a forward conv with the flipped kernel (negative
# padding, padding beyond the kernel's extent, dilation, groups, depthwise,
# 1-D to 3-D); the strided one differentiates the forward's plan.
INPUT_GRAD = [
    ((2, 9, 10, 4), (3, 3, 2, 6), (1, 1), [(1, 1), (2, 0)], (1, 2), 2),
    ((1, 9, 10, 6), (3, 3, 2, 9), (1, 1), [(4, 1), (2, -1)], (1, 2), 3),
    ((2, 17, 3), (5, 3, 5), (1,), [(0, 0)], (2,), 1),
    ((1, 8, 8, 4), (3, 3, 4, 4), (1, 1), [(3, 3), (0, 5)], (1, 1), 1),
    ((1, 8, 8, 4), (3, 3, 1, 8), (1, 1), "SAME", (1, 1), 4),
    ((1, 4, 5, 6, 3), (2, 3, 2, 3, 4), (1, 1, 1), "SAME", (1, 1, 1), 1),
    ((2, 40, 16), (7, 16, 16), (1,), "SAME", (3,), 1),
    ((1, 9, 9, 4), (3, 3, 4, 5), (2, 1), "SAME", (1, 1), 1),
]


@pytest.mark.parametrize("case", INPUT_GRAD, ids=str)
def test_input_gradient_equals_lax(case, rng):
    xs, ws, s, pad, d, g = case
    nd = len(xs) - 2
    kw = dict(rhs_dilation=d, dimension_numbers=_dn(nd), feature_group_count=g)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)

    def ours(x, w):
        return jl.conv_general_dilated(x, w, s, pad, **kw)

    def theirs(x, w):
        return lax.conv_general_dilated(x, w, s, pad, **kw)

    y, vjp = jax.vjp(theirs, x, w)
    ct = rng.standard_normal(y.shape).astype(np.float32)
    want = vjp(ct)
    got = jax.jit(lambda x, w, ct: jax.vjp(ours, x, w)[1](ct))(x, w, ct)
    for a, b in zip(got, want):
        assert_close(a, b)
    # Second order through the rule: the input gradient's own derivative.
    hvp = jax.grad(lambda x: jnp.sum(jax.vjp(ours, x, w)[1](ct)[0] ** 2))(x)
    hvp_want = jax.grad(lambda x: jnp.sum(jax.vjp(theirs, x, w)[1](ct)[0] ** 2))(x)
    assert_close(hvp, hvp_want)


@pytest.mark.parametrize("case", INPUT_GRAD, ids=str)
def test_input_gradient_row_of_explain(case):
    xs, ws, s, pad, d, g = case
    nd = len(xs) - 2

    def loss(x, w):
        return jnp.sum(jl.conv_general_dilated(x, w, s, pad, rhs_dilation=d,
                                               dimension_numbers=_dn(nd),
                                               feature_group_count=g))

    x, w = jax.ShapeDtypeStruct(xs, F32), jax.ShapeDtypeStruct(ws, F32)
    rows = jaxconv.explain(jax.grad(loss), x, w)
    row = next(r for r in rows if r.op.endswith("(input grad)"))
    if all(v == 1 for v in s):  # the cotangent convolved with the flipped kernel
        i, o = ws[-2:]
        assert row.kernel_shape == (*ws[:-2], o // g, g * i)
        assert row.output_shape == xs
    else:
        assert row.kernel_shape == ws


def test_input_gradient_with_mixed_dtypes_differentiates_the_plan(rng):
    # bfloat16 operands with a float32 result: the cotangent is float32, the
    # kernel bfloat16, so the input gradient differentiates the forward.
    x = jnp.asarray(rng.standard_normal((1, 8, 8, 4)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 5)), jnp.bfloat16)
    kw = dict(dimension_numbers=_dn(2), preferred_element_type=F32)

    def loss(mod):
        return lambda x: jnp.sum(jnp.sin(mod.conv_general_dilated(x, w, (1, 1), "SAME",
                                                                  **kw)))

    got, want = jax.grad(loss(jl))(x), jax.grad(loss(lax))(x)
    assert got.dtype == want.dtype == jnp.bfloat16
    assert_close(got.astype(F32), want.astype(F32), dtype=jnp.bfloat16)
    row = next(r for r in jaxconv.explain(jax.grad(loss(jl)), x)
               if r.op.endswith("(input grad)"))
    assert row.kernel_shape == (3, 3, 4, 5)
