"""The benchmark suite behind ``jaxconv bench``: jaxconv against ``jax.lax``.

Every case runs jaxconv and ``jax.lax`` (the baseline) in the same process,
interleaved call by call, and reports medians; ``speedup = lax_s / jaxconv_s``
(> 1: jaxconv is faster) with ``speedup_range``, the interquartile range of
the per-repetition ratios.  Forward for every case, forward+backward (input
and kernel gradients) for the cases marked ``grad``, one ``"compile"`` record
for a 16-layer conv stack, and the XLA temporaries of every compiled function
(``memory_analysis().temp_size_in_bytes``).

Beyond the 15 cases:

* ``--zoo``: every distinct conv layer of nine real architectures
  (:mod:`jaxconv._zoo`) at batch 1 and 8, forward and gradient, ids
  ``zoo/<arch>/<layer>/b<n>``, with a summary (geomeans, worst layers).
* ``--models``: the training step of Flax models with and without jaxconv
  (:mod:`jaxconv._bench_models`; needs flax), and of an Equinox U-Net vmapped
  over the batch (``model/eqx_unet``, :mod:`jaxconv._bench_eqx`; needs
  equinox, skipped without it).
* ``--vmap``: ``jit(vmap(f))`` of ``f`` written for one example (no batch
  axis, as an Equinox layer is) against the batched call, for the cases
  marked ``vmap`` (with ``--zoo``: for the zoo's batch-8 layers too).
* ``--compare OLD.json [NEW.json]``: what got faster or slower.

Usage (``jaxconv bench`` calls ``main``)::

    jaxconv bench [--quick] [--cases ID,...] [--zoo] [--models] [--vmap]
                  [--json PATH] [--plot PATH] [--compare OLD.json [NEW.json]]

A progress bar is drawn on standard error when it is a terminal (never in
logs or pipes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _zoo
from . import lax as jl
from ._explain import explain
from ._progress import progress

DN = ("NHWC", "HWIO", "NHWC")


class Case(NamedTuple):
    """One benchmark problem (float32, channels_last)."""

    id: str
    klass: str
    n: int
    spatial: tuple[int, ...]
    c_in: int
    c_out: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    grad: bool = False
    padding: str = "SAME"  # "SAME", "CAUSAL" or "TRANSPOSE" (conv_transpose SAME)
    vmap: bool = False  # vmap records with --vmap (at batch VMAP_BATCH if n == 1)


CASES = [
    Case("dense3", "ResNet 3x3", 1, (56, 56), 64, 64, 3),
    Case("dense3_b8", "batched 3x3", 8, (28, 28), 128, 128, 3, grad=True, vmap=True),
    Case("point", "1x1", 1, (56, 56), 256, 64, 1, vmap=True),
    Case("stem", "7x7 stem", 1, (224, 224), 3, 64, 7, stride=2),
    Case("dw3", "MobileNet depthwise", 1, (112, 112), 96, 96, 3, groups=96, grad=True,
         vmap=True),
    Case("dw3_s2", "depthwise strided", 1, (112, 112), 96, 96, 3, stride=2, groups=96),
    Case("dw7", "ConvNeXt depthwise", 1, (56, 56), 96, 96, 7, groups=96),
    Case("dw31", "large kernel", 1, (28, 28), 64, 64, 31, groups=64),
    Case("group32", "ResNeXt", 1, (28, 28), 256, 256, 3, groups=32, grad=True,
         vmap=True),
    Case("atrous", "dilated", 1, (28, 28), 128, 128, 3, dilation=2, vmap=True),
    Case("causal1d", "short causal depthwise", 4, (4096,), 64, 64, 4, groups=64,
         padding="CAUSAL", vmap=True),
    Case("long1d", "long depthwise", 1, (8192,), 32, 32, 1024, groups=32),
    Case("wav1d", "1-D dense strided", 1, (3199,), 512, 512, 3, stride=2),
    Case("tconv2d", "transposed 2-D", 1, (32, 32), 64, 32, 4, stride=2,
         padding="TRANSPOSE", vmap=True),
    Case("vol3d", "3-D", 1, (8, 28, 28), 64, 64, 3, vmap=True),
]
CASE_IDS = [c.id for c in CASES]

#: The batch of the vmap records of a case whose own batch is 1.
VMAP_BATCH = 8
# The gradients through the vmap: of the kernel alone (a training step of a
# model whose input needs no gradient) and of input and kernel (a layer inside
# a model); per-example gradients are ``vmap(grad)`` of one example's conv.
VMAP_DIRECTIONS = ("vmap_forward", "vmap_kernel_grad", "vmap_grad", "per_example_grad")
# --quick: fewer repetitions of a vmap record whose round of calls is slow
# (lax's per-example gradient of group32 takes about a minute a call).
VMAP_QUICK_CAP_S = 20.0

# Timing of one record: (budget in seconds, minimum and maximum repetitions).
# The quick zoo's budget keeps its big layers to a few repetitions; its
# small layers take up to 61 (about 20 s more over the zoo): on a shared
# 2-core host, between two runs of the ~265 EfficientNet-B0 and MobileNetV2
# records under 7 ms a round, the 90th percentile of the change of a
# record's speedup was 1.45x with at most 15 repetitions, 1.29x with 61.
TIMING = {
    "suite": (3.0, 7, 101), "suite_quick": (0.6, 5, 41),
    "zoo": (1.0, 5, 51), "zoo_quick": (0.1, 3, 61),
}
# Warm-up: rounds of calls shorter than WARM_UP_S seconds are repeated,
# untimed, up to WARM_UP_ROUNDS in all (see interleaved_samples).
WARM_UP_S = 0.1
WARM_UP_ROUNDS = 3

AnyCase = Case | _zoo.ZooCase


def _dn(nd: int) -> tuple[str, str, str]:
    sp = "DHW"[3 - nd:]  # the cases are 1-D to 3-D
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


class _Geometry(NamedTuple):
    n: int
    spatial: tuple[int, ...]
    c_in: int
    c_out: int
    kernel: tuple[int, ...]
    groups: int
    transposed: bool


def _geometry(case: AnyCase) -> _Geometry:
    if isinstance(case, _zoo.ZooCase):
        lay = case.layer
        return _Geometry(case.n, lay.spatial, lay.c_in, lay.c_out, lay.kernel,
                         lay.groups, lay.transposed)
    nd = len(case.spatial)
    return _Geometry(case.n, case.spatial, case.c_in, case.c_out,
                     (case.kernel,) * nd, case.groups, case.padding == "TRANSPOSE")


def make_fn(case: AnyCase, module):
    """``f(x, w) -> y`` computing ``case`` with ``module`` (jax.lax or jaxconv.lax)."""
    if isinstance(case, _zoo.ZooCase):
        lay = case.layer
        dn = _dn(len(lay.spatial))
        if lay.transposed:
            return lambda x, w: module.conv_transpose(
                x, w, lay.stride, lay.padding, dimension_numbers=dn)
        return lambda x, w: module.conv_general_dilated(
            x, w, lay.stride, lay.padding, rhs_dilation=lay.dilation,
            dimension_numbers=dn, feature_group_count=lay.groups)
    nd = len(case.spatial)
    dn = _dn(nd)
    s, d = (case.stride,) * nd, (case.dilation,) * nd
    if case.padding == "TRANSPOSE":
        return lambda x, w: module.conv_transpose(x, w, s, "SAME", dimension_numbers=dn)
    pad: str | list[tuple[int, int]] = "SAME"
    if case.padding == "CAUSAL":
        pad = [(d_ * (case.kernel - 1), 0) for d_ in d]
    return lambda x, w: module.conv_general_dilated(
        x, w, s, pad, rhs_dilation=d, dimension_numbers=dn,
        feature_group_count=case.groups,
    )


def arg_specs(case: AnyCase) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    """Float32 shape structs of ``case``'s ``(x, w)`` (no arrays made)."""
    g = _geometry(case)
    i = g.c_in if g.transposed else g.c_in // g.groups
    return (jax.ShapeDtypeStruct((g.n, *g.spatial, g.c_in), jnp.float32),
            jax.ShapeDtypeStruct(g.kernel + (i, g.c_out), jnp.float32))


def make_args(case: AnyCase, seed: int = 0):
    """Random float32 ``(x, w)`` of ``case``'s shapes."""
    xs, ws = arg_specs(case)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs.shape, np.float32)
    wshape = ws.shape
    w = rng.standard_normal(wshape, np.float32) / np.sqrt(np.prod(wshape[:-1]))
    # float32 by construction (the suite is float32), also under JAX_ENABLE_X64:
    # the float64 scale above would otherwise promote ``w``.
    return jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)


def forward_flops(case: AnyCase) -> int:
    """FLOPs of the forward (a multiply-add counts 2; transposed: no zeros)."""
    g = _geometry(case)
    k = math.prod(g.kernel)
    if g.transposed:
        return 2 * g.n * math.prod(g.spatial) * g.c_in * g.c_out * k
    y = jax.eval_shape(make_fn(case, lax), *arg_specs(case))
    return 2 * math.prod(y.shape) * k * (g.c_in // g.groups)


def _gradient(f):
    def g(x, w, ct):
        _, vjp = jax.vjp(f, x, w)
        return vjp(ct)
    return g


def _time_once(f, args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - t0


def interleaved_samples(calls: Sequence[tuple[Callable, tuple]], *, budget: float,
                        min_reps: int, max_reps: int,
                        cap_s: float | None = None) -> list[list[float]]:
    """Seconds of every timed call of each ``(f, args)``, the calls interleaved.

    One warm-up call of each is timed only to size the run and then
    discarded: a first call pays for cold caches, page faults and waking the
    thread pool, and with the few repetitions of ``--quick`` it would weigh on
    the median.  Where that round of calls took under ``WARM_UP_S``, up to
    ``WARM_UP_ROUNDS - 1`` more rounds run untimed (the run is sized by the
    last): a program with large temporaries keeps paying for fresh pages
    over its first few calls (a 3x3 gradient with 10.7 MB of them took
    10.5, 5.4 and 3.4 ms on the calls after the first, 3.1-3.6 thereafter),
    which a training loop pays once.  Repetition ``i`` runs the functions
    in an order rotated by ``i`` (for two: a b, b a, a b, ...) so that none
    always runs right after another.  ``cap_s`` (seconds) lowers the
    repetitions below ``min_reps`` (to one at the least) where one round of
    calls takes longer than ``cap_s / min_reps``.

    Returns:
      One list of ``reps`` durations per function, repetition by repetition
      (``out[k][i]`` and ``out[j][i]`` ran back to back).
    """
    per = max(sum(_time_once(f, a) for f, a in calls), 1e-6)
    for _ in range(WARM_UP_ROUNDS - 1):
        if per >= WARM_UP_S:
            break
        per = max(sum(_time_once(f, a) for f, a in calls), 1e-6)
    reps = int(min(max_reps, max(min_reps, budget / per)))
    if cap_s is not None:
        reps = min(reps, max(1, int(cap_s / per)))
    out: list[list[float]] = [[] for _ in calls]
    n = len(calls)
    for i in range(reps):
        for j in range(n):
            k = (j + i) % n
            out[k].append(_time_once(*calls[k]))
    return out


def interleaved(fa, fb, args, *, budget: float, min_reps: int, max_reps: int):
    """Median seconds of ``fa(*args)`` and ``fb(*args)``, alternating calls.

    See :func:`interleaved_samples` (warm-up discarded, order alternating).
    """
    ta, tb = interleaved_samples([(fa, args), (fb, args)], budget=budget,
                                 min_reps=min_reps, max_reps=max_reps)
    return statistics.median(ta), statistics.median(tb)


def ratio_range(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Interquartile range of the per-repetition ratios ``num[i] / den[i]``."""
    r = np.asarray(num, float) / np.maximum(np.asarray(den, float), 1e-12)
    lo, hi = np.percentile(r, [25, 75])
    return [float(lo), float(hi)]


def _temp_bytes(compiled) -> int | None:
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - backends without memory analysis
        return None


def _nbytes(tree) -> int:
    return int(sum(np.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(tree)))


def _formulations(rows) -> str:
    return "+".join(dict.fromkeys(r.formulation for r in rows)) or "auto"


def planned_algorithm(case: AnyCase, direction: str = "forward") -> str:
    """The formulation(s) ``"auto"`` picks for ``case`` (``jaxconv.explain``).

    For ``"gradient"`` the formulations of the input and kernel gradients.
    """
    x, w = make_args(case)
    f = make_fn(case, jl)
    if direction == "gradient":
        ct = jax.eval_shape(f, x, w)
        rows = [r for r in explain(_gradient(f), x, w, ct) if "grad" in r.op]
        if rows:
            return _formulations(rows)
    return _formulations(explain(f, x, w)[:1])


def _compile_all(lowered: list) -> list:
    """Compile XLA programs, two at a time where there are two cores.

    XLA compiles outside the Python lock, so on a multi-core machine the
    compiles of a layer's programs overlap; nothing is being timed meanwhile.
    """
    workers = min(len(lowered), max(1, _cores()))
    if workers <= 1:
        return [lo.compile() for lo in lowered]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda lo: lo.compile(), lowered))


class _Prepared(NamedTuple):
    case: Any
    jobs: list  # (direction, jaxconv fn, lax fn, args)
    lowered: list  # jaxconv then lax, per job


def _prepare_layer(case: AnyCase, directions: Sequence[str]) -> _Prepared:
    """Trace and lower ``case``'s programs (jaxconv and lax per direction)."""
    x, w = make_args(case)
    fj, fl = make_fn(case, jl), make_fn(case, lax)
    jobs: list[tuple[str, Callable, Callable, tuple]] = []
    for direction in directions:
        if direction == "gradient":
            y = jax.eval_shape(fl, x, w)
            ct = jnp.asarray(np.random.default_rng(1).standard_normal(
                y.shape, np.float32))
            jobs.append((direction, _gradient(fj), _gradient(fl), (x, w, ct)))
        elif direction == "forward":
            jobs.append((direction, fj, fl, (x, w)))
        else:
            raise ValueError(f"`direction` (={direction!r}) must be 'forward' or "
                             "'gradient'.")
    lowered = []
    for _, gj, gl, args in jobs:
        lowered += [jax.jit(gj).lower(*args), jax.jit(gl).lower(*args)]
    return _Prepared(case, jobs, lowered)


def _time_layer(prep: _Prepared, compiled: list, *, quick: bool,
                timing: tuple[float, int, int] | None = None) -> list[dict]:
    """Time the compiled programs of :func:`_prepare_layer`: one record each."""
    case = prep.case
    if timing is None:
        zoo = isinstance(case, _zoo.ZooCase)
        timing = TIMING[("zoo" if zoo else "suite") + ("_quick" if quick else "")]
    budget, min_reps, max_reps = timing
    fwd_flops = forward_flops(case)
    records = []
    for k, (direction, _, gl, args) in enumerate(prep.jobs):
        cj, cl = compiled[2 * k], compiled[2 * k + 1]
        out = jax.eval_shape(gl, *args)
        tj, tl = interleaved_samples([(cj, args), (cl, args)], budget=budget,
                                     min_reps=min_reps, max_reps=max_reps)
        mj, ml = statistics.median(tj), statistics.median(tl)
        records.append({
            "case": case.id, "direction": direction,
            "algorithm": planned_algorithm(case, direction),
            "jaxconv_s": mj, "lax_s": ml, "speedup": ml / mj,
            "speedup_range": ratio_range(tl, tj),
            "temp_bytes": _temp_bytes(cj), "lax_temp_bytes": _temp_bytes(cl),
            "input_bytes": _nbytes(args), "output_bytes": _nbytes(out),
            "flops": fwd_flops * (2 if direction == "gradient" else 1),
        })
    return records


def run_layer(case: AnyCase, directions: Sequence[str], *, quick: bool,
              timing: tuple[float, int, int] | None = None) -> list[dict]:
    """Time ``case`` in each of ``directions`` (``"forward"``, ``"gradient"``).

    Returns one record per direction (the fields of the JSON ``results``).
    """
    prep = _prepare_layer(case, directions)
    return _time_layer(prep, _compile_all(prep.lowered), quick=quick, timing=timing)


def run_layers(cases: Sequence[AnyCase], directions: Sequence[str], *, quick: bool,
               timing: tuple[float, int, int] | None = None):
    """Yield :func:`run_layer`'s records of each case, in order, pipelined.

    While the programs of one case compile (on background threads), the next
    case is traced and lowered; the compiles are finished before anything is
    timed, so no timing shares the CPU with a compile.
    """
    workers = max(1, _cores())
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: tuple[_Prepared, list] | None = None
        for case in cases:
            prep = _prepare_layer(case, directions)
            if pending is not None:
                done = [f.result() for f in pending[1]]
                yield _time_layer(pending[0], done, quick=quick, timing=timing)
            pending = (prep, [pool.submit(lo.compile) for lo in prep.lowered])
        if pending is not None:
            done = [f.result() for f in pending[1]]
            yield _time_layer(pending[0], done, quick=quick, timing=timing)


def run_case(case: AnyCase, direction: str, *, quick: bool) -> dict:
    """One record: ``case`` timed in ``direction`` (see :func:`run_layer`)."""
    return run_layer(case, (direction,), quick=quick)[0]


# --- vmap: a model written for one example, vmapped over the batch --------------

def _vmap_fns(f, direction: str):
    """``(vmapped, batched)`` functions of ``direction``, both taking ``(x, w, ct)``.

    ``vmapped`` is written for one example, as an Equinox layer is: it gets
    an image without its batch axis, adds one (``x1[None]``), convolves and
    drops it again, and is ``jax.vmap``-ed over ``x`` (and ``ct``);
    ``batched`` does the same work as one batched call.
    """
    def one(x1, w):
        return f(x1[None], w)[0]

    per_example = jax.vmap(one, in_axes=(0, None))

    def batched_kernel_grad(x, w, ct):
        return jax.vjp(lambda w_: f(x, w_), w)[1](ct)[0]

    if direction == "vmap_forward":
        return (lambda x, w, ct: per_example(x, w),
                lambda x, w, ct: f(x, w))
    if direction == "vmap_kernel_grad":
        def vmapped(x, w, ct):
            return jax.vjp(lambda w_: per_example(x, w_), w)[1](ct)[0]
        return vmapped, batched_kernel_grad
    if direction == "vmap_grad":
        def vmapped_grads(x, w, ct):
            return jax.vjp(per_example, x, w)[1](ct)

        def batched_grads(x, w, ct):
            return jax.vjp(f, x, w)[1](ct)
        return vmapped_grads, batched_grads
    if direction == "per_example_grad":
        def one_grad(x1, w, ct1):
            return jax.vjp(lambda w_: one(x1, w_), w)[1](ct1)[0]
        return jax.vmap(one_grad, in_axes=(0, None, 0)), batched_kernel_grad
    raise ValueError(f"`direction` (={direction!r}) must be one of "
                     f"{', '.join(VMAP_DIRECTIONS)}.")


def vmap_case(case: AnyCase) -> AnyCase:
    """``case`` at the batch of its vmap records (``VMAP_BATCH`` when it is 1)."""
    return case if case.n > 1 else case._replace(n=VMAP_BATCH)


def run_vmap(case: AnyCase, direction: str, *, quick: bool) -> dict:
    """A vmap record of ``case`` (at :func:`vmap_case`'s batch).

    ``jaxconv_s`` and ``lax_s`` are the times of ``jit(vmap(f))`` of a
    function written for one example (:func:`_vmap_fns`) with jaxconv and with
    ``jax.lax`` (``speedup`` = their ratio, as everywhere); ``batched_s`` is
    jaxconv's time for the same work as one batched call, ``vmapped_s`` its
    vmapped call's time in the same round, and ``vmap_ratio = batched_s /
    vmapped_s`` (about 1: vmap costs nothing; 0.1: the vmapped call is 10x
    slower).  The batched twin of ``per_example_grad`` is the
    batched kernel gradient (the same products, summed over the batch).

    Each ratio comes from its own interleaved round of the two calls it
    compares: jaxconv's vmapped call against its batched twin, then against
    lax's vmapped call.  In one round of all three, a slow lax call (a
    per-example gradient that takes seconds) leaves the caches cold for
    jaxconv's calls after it, and more so for the call with the larger
    working set, which skews the vmapped/batched ratio.
    """
    case = vmap_case(case)
    x, w = make_args(case)
    y = jax.eval_shape(make_fn(case, lax), x, w)
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(y.shape, np.float32))
    vj, bj = _vmap_fns(make_fn(case, jl), direction)
    vl, _ = _vmap_fns(make_fn(case, lax), direction)
    args = (x, w, ct)
    cvj, cbj, cvl = _compile_all([jax.jit(f).lower(*args) for f in (vj, bj, vl)])
    budget, min_reps, max_reps = TIMING["suite_quick" if quick else "suite"]
    tv, tb = interleaved_samples([(cvj, args), (cbj, args)], budget=budget,
                                 min_reps=min_reps, max_reps=max_reps)
    tv2, tl = interleaved_samples([(cvj, args), (cvl, args)], budget=budget,
                                  min_reps=min_reps, max_reps=max_reps,
                                  cap_s=VMAP_QUICK_CAP_S if quick else None)
    mv, mb, mv2, ml = (statistics.median(t) for t in (tv, tb, tv2, tl))
    used = (x, w) if direction == "vmap_forward" else args
    rows = explain(vj, *args)
    return {
        "case": case.id,
        "direction": direction,
        "algorithm": _formulations(rows),
        "jaxconv_s": mv2, "lax_s": ml, "speedup": ml / mv2,
        "speedup_range": ratio_range(tl, tv2),
        "temp_bytes": _temp_bytes(cvj), "lax_temp_bytes": _temp_bytes(cvl),
        "input_bytes": _nbytes(used), "output_bytes": _nbytes(jax.eval_shape(
            vj, *args)),
        "batch": case.n, "batched_s": mb, "vmapped_s": mv, "vmap_ratio": mb / mv,
        "vmap_ratio_range": ratio_range(tb, tv),
    }


# --- compile time -----------------------------------------------------------------

STACK_DEPTH = 16


def _stack(module, depth=STACK_DEPTH):
    def f(x, ws):
        for w in ws:
            x = jax.nn.relu(module.conv_general_dilated(
                x, w, (1, 1), "SAME", dimension_numbers=DN))
        return x
    return f


def run_compile(*, quick: bool) -> dict:
    """First-call (trace + lower + compile) seconds of a 16-layer 3x3 stack."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 32, 32, 32), np.float32))
    ws = [jnp.asarray(rng.standard_normal((3, 3, 32, 32), np.float32) * 0.1)
          for _ in range(STACK_DEPTH)]

    def compile_once(module):
        f = _stack(module)
        g = lambda x, ws: f(x, ws)  # noqa: E731 - a fresh function: no cache hit
        t0 = time.perf_counter()
        c = jax.jit(g).lower(x, ws).compile()
        return time.perf_counter() - t0, c

    tj, tl = [], []
    for _ in range(2 if quick else 5):
        t, cj = compile_once(jl)
        tj.append(t)
        t, cl = compile_once(lax)
        tl.append(t)
    mj, ml = statistics.median(tj), statistics.median(tl)
    return {
        "case": "stack16", "direction": "compile", "algorithm": "auto",
        "jaxconv_s": mj, "lax_s": ml, "speedup": ml / mj,
        "speedup_range": ratio_range(tl, tj),
        "temp_bytes": _temp_bytes(cj), "lax_temp_bytes": _temp_bytes(cl),
        "input_bytes": _nbytes((x, ws)), "output_bytes": _nbytes(x),
    }


# --- the machine ------------------------------------------------------------------

def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*argv: str) -> str | None:
    """Output of ``git argv`` in the checkout jaxconv is imported from."""
    package = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(package)
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        out = subprocess.run(["git", "-C", root, *argv], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str | None:
    """The commit of the checkout jaxconv is imported from, or ``None``.

    ``None`` when jaxconv is not imported from the top of a git checkout
    (e.g. installed from a wheel) or git is not available.
    """
    commit = (_git("rev-parse", "HEAD") or "").strip()
    return commit or None


def git_dirty() -> bool | None:
    """Whether the checkout has uncommitted changes to tracked files (``None``
    outside a checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status.strip())


def cpu_model() -> str:
    """The CPU model (``model name`` of /proc/cpuinfo, else the platform's)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def gemm_rate(n: int = 1024, reps: int = 15) -> float:
    """The host's float32 GEMM rate in GFLOP/s: the fastest of ``reps`` timed
    ``n x n x n`` products (``jnp.dot``, after a warm-up call), the
    roofline a dense convolution is compared with.  On a shared host it
    moves with the load: compare it only with figures of the same run."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(jnp.dot)
    (times,) = interleaved_samples([(f, (a, a))], budget=0.0, min_reps=reps,
                                   max_reps=reps)
    return 2 * n ** 3 / min(times) / 1e9


def machine_info(gemm_gflops: float | None = None) -> dict:
    """The ``machine`` record of the JSON output (with the measured GEMM rate
    of :func:`gemm_rate` when given)."""
    from . import __version__
    from .algorithms.profile import current_profile

    dev = jax.devices()[0]
    return {
        "cpu": cpu_model(),
        "cores": _cores(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib") or jax.__version__,
        "jaxconv": __version__,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "profile": current_profile().name,
        "cpu_family": current_profile().family or None,
        "device_kind": dev.device_kind,
        "platform": f"{jax.default_backend()} ({dev.device_kind}); "
                    f"{platform.platform()}",
        "python": platform.python_version(),
        **({} if gemm_gflops is None else {"gemm_gflops": round(gemm_gflops, 1)}),
    }


# --- output -----------------------------------------------------------------------

def _note(r: dict) -> str:
    if "vmap_ratio" in r:
        return f"batched/vmapped {r['vmap_ratio']:.2f} (batch {r['batch']})"
    if "rel_err" in r:
        return (f"rel err {r['rel_err']:.1e} (lax {r['lax_rel_err']:.1e}), per "
                f"parameter {r['leaf_rel_err']:.1e} (lax "
                f"{r['lax_leaf_rel_err']:.1e})" + ("" if r["ok"] else " NOT OK"))
    if r.get("same_as"):
        return f"= {r['same_as']}"
    return ""


def format_table(results: list[dict]) -> str:
    """The printed table of ``results`` (one row per record)."""
    wc = max([4] + [len(r["case"]) for r in results])
    wd = max([9] + [len(r["direction"]) for r in results])
    wa = max([9] + [len(r["algorithm"]) for r in results])
    head = (f"{'case':<{wc}} {'direction':<{wd}} {'algorithm':<{wa}} "
            f"{'jaxconv ms':>11} {'lax ms':>10} {'speedup':>8} {'range':>13} "
            f"{'temp MB':>8} {'lax MB':>7} {'temp/io':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        io = r["input_bytes"] + r["output_bytes"]
        tb = r["temp_bytes"]
        ratio = f"{tb / io:.2f}" if tb is not None and io else "-"
        unit = 1.0 if r["direction"] == "compile" else 1e3
        rng = r.get("speedup_range")
        spread = f"{rng[0]:.2f}-{rng[1]:.2f}" if rng else "-"
        note = _note(r)
        lines.append(
            f"{r['case']:<{wc}} {r['direction']:<{wd}} {r['algorithm']:<{wa}} "
            f"{r['jaxconv_s'] * unit:>11.3f} {r['lax_s'] * unit:>10.3f} "
            f"{r['speedup']:>8.2f} {spread:>13} {(tb or 0) / 2**20:>8.2f} "
            f"{(r['lax_temp_bytes'] or 0) / 2**20:>7.2f} {ratio:>7}"
            + (f"  {note}" if note else "")
        )
    lines.append("(compile rows are in seconds; speedup = lax / jaxconv, range = "
                 "interquartile range of the per-repetition ratios)")
    return "\n".join(lines)


def geomean(values: Sequence[float]) -> float:
    """Geometric mean (``nan`` for no values)."""
    if not values:
        return float("nan")
    return float(math.exp(sum(math.log(v) for v in values) / len(values)))


# The GEMM formulations: their roofline is the host's GEMM rate.
DENSE_FORMULATIONS = ("dot", "taps", "alltaps", "im2col", "rows", "wide", "shifted",
                      "s2d", "groupgemm")


def roofline(r: dict, gemm_gflops: float) -> tuple[float, float]:
    """Achieved GFLOP/s over the GEMM rate, jaxconv's and lax's, of a record
    with ``flops`` (forward: the convolution's; gradient: twice that)."""
    return (r["flops"] / r["jaxconv_s"] / 1e9 / gemm_gflops,
            r["flops"] / r["lax_s"] / 1e9 / gemm_gflops)


def summarize_zoo(results: list[dict], *, worst: int = 10,
                  threshold: float = 0.8, gemm_gflops: float | None = None) -> str:
    """Geomean speedups forward and gradient, the worst layers, the count below
    ``threshold``, over the zoo's records (a layer identical to one of an earlier
    architecture, ``same_as``, counts once).  With the host's ``gemm_gflops``
    the worst layers show the fraction of that rate each side achieved, and
    the median fraction of the dense (GEMM-formulated) layers."""
    zoo = [r for r in results if r["case"].startswith("zoo/")
           and r["direction"] in ("forward", "gradient") and not r.get("same_as")]
    if not zoo:
        return ""
    lines = [f"zoo summary ({len({r['case'] for r in zoo})} distinct layer "
             f"problems x batch; speedup = lax / jaxconv):"]
    for direction in ("forward", "gradient"):
        sp = [r["speedup"] for r in zoo if r["direction"] == direction]
        if sp:
            below = sum(v < threshold for v in sp)
            lines.append(f"  {direction:<8}  geomean {geomean(sp):.2f}  "
                         f"min {min(sp):.2f}  {below} of {len(sp)} below "
                         f"{threshold}")
    lines.append(f"  geomean of all {len(zoo)}: "
                 f"{geomean([r['speedup'] for r in zoo]):.2f}")
    rate = gemm_gflops if gemm_gflops else None
    if rate:
        for direction in ("forward", "gradient"):
            fr = [roofline(r, rate) for r in zoo if r.get("flops")
                  and r["direction"] == direction
                  and r["algorithm"].split("/")[-1] in DENSE_FORMULATIONS]
            if fr:
                ours = statistics.median(a for a, _ in fr)
                theirs = statistics.median(b for _, b in fr)
                lines.append(
                    f"  dense {direction} layers at {ours:.0%} of the {rate:.0f} "
                    f"GFLOP/s GEMM rate (median; lax {theirs:.0%}), {len(fr)} records")
    lines.append(f"  worst {min(worst, len(zoo))}:")
    for r in sorted(zoo, key=lambda r: r["speedup"])[:worst]:
        extra = ""
        if rate and r.get("flops"):
            a, b = roofline(r, rate)
            extra = f"; {a:.0%} / {b:.0%} of the GEMM rate"
        lines.append(f"    {r['speedup']:6.2f}  {r['case']} {r['direction']} "
                     f"({r['algorithm']}; jaxconv {r['jaxconv_s'] * 1e3:.3f} ms, "
                     f"lax {r['lax_s'] * 1e3:.3f} ms{extra})")
    return "\n".join(lines)


def summarize_models(results: list[dict]) -> str:
    """Per-model train-step speedups and their geomean."""
    rows = [r for r in results if r["direction"] == "train_step"]
    if not rows:
        return ""
    sp = [r["speedup"] for r in rows]
    return (f"models: train step geomean speedup {geomean(sp):.2f} over {len(rows)} "
            f"(min {min(sp):.2f}: "
            f"{min(rows, key=lambda r: r['speedup'])['case']})")


def compare(old: dict, new: dict, *, threshold: float = 0.1) -> str:
    """What got faster or slower from ``old`` to ``new`` (two bench JSON dicts).

    Per ``(case, direction)`` in both: ``change = new speedup / old speedup``.
    A change counts when it is beyond ``1 + threshold`` either way and the two
    runs' speedup ranges do not overlap (where both have one); the rest is
    noise.  Faster and slower records are listed sorted by the change.
    """
    def index(d):
        return {(r["case"], r["direction"]): r for r in d.get("results", [])}

    a, b = index(old), index(new)
    faster, slower, same = [], [], 0
    for key in a.keys() & b.keys():
        ra, rb = a[key], b[key]
        change = rb["speedup"] / ra["speedup"]
        overlap = False
        if ra.get("speedup_range") and rb.get("speedup_range"):
            (lo_a, hi_a), (lo_b, hi_b) = ra["speedup_range"], rb["speedup_range"]
            overlap = lo_a <= hi_b and lo_b <= hi_a
        if change > 1 + threshold and not overlap:
            faster.append((change, key, ra, rb))
        elif change < 1 / (1 + threshold) and not overlap:
            slower.append((change, key, ra, rb))
        else:
            same += 1
    lines = []
    ma, mb = old.get("machine", {}), new.get("machine", {})
    for field in ("cpu", "cores", "profile", "cpu_family", "device_kind"):
        if ma.get(field) != mb.get(field):
            lines.append(f"note: {field} differs: {ma.get(field)!r} -> "
                         f"{mb.get(field)!r}")

    def row(change, key, ra, rb):
        return (f"  {change:6.2f}x  {key[0]} {key[1]}: speedup {ra['speedup']:.2f} "
                f"-> {rb['speedup']:.2f} (jaxconv {ra['jaxconv_s'] * 1e3:.3f} -> "
                f"{rb['jaxconv_s'] * 1e3:.3f} ms)")

    lines.append(f"faster ({len(faster)}; change = new speedup / old speedup, "
                 f"beyond {1 + threshold:.2f}x and outside the old range):")
    lines += [row(*t) for t in sorted(faster, key=lambda t: -t[0])]
    lines.append(f"slower ({len(slower)}):")
    lines += [row(*t) for t in sorted(slower, key=lambda t: t[0])]
    lines.append(f"unchanged within noise: {same}")
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if only_a:
        lines.append(f"only in the old run: {len(only_a)} "
                     f"({', '.join(' '.join(k) for k in only_a[:5])}"
                     f"{', ...' if len(only_a) > 5 else ''})")
    if only_b:
        lines.append(f"only in the new run: {len(only_b)} "
                     f"({', '.join(' '.join(k) for k in only_b[:5])}"
                     f"{', ...' if len(only_b) > 5 else ''})")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    """Write a chart of the speed-ups to ``path`` (PNG; needs matplotlib).

    Zoo records are drawn as speedup against the layer's FLOPs (log-log, one
    marker per direction; a layer repeated in a later architecture once);
    otherwise one bar per record.  Draws on a bare
    ``matplotlib.figure.Figure``: matplotlib's global backend (and so a
    notebook's inline plots) is left as it was.
    """
    from matplotlib.figure import Figure

    zoo = [r for r in results if r["case"].startswith("zoo/") and r.get("flops")
           and r["direction"] in ("forward", "gradient") and not r.get("same_as")]
    if zoo:
        fig = Figure(figsize=(8, 5))
        ax = fig.subplots()
        for direction, marker, color in (("forward", "o", "tab:blue"),
                                         ("gradient", "^", "tab:orange")):
            rs = [r for r in zoo if r["direction"] == direction]
            if rs:
                ax.scatter([r["flops"] for r in rs], [r["speedup"] for r in rs],
                           marker=marker, s=14, alpha=0.7, color=color,
                           label=f"{direction} (geomean "
                           f"{geomean([r['speedup'] for r in rs]):.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(0.8, color="tab:red", lw=0.8, ls="--")
        ax.set_xlabel("layer FLOPs (forward; gradient: input + kernel)")
        ax.set_ylabel("speedup vs jax.lax (log)")
        ax.set_title("jaxconv vs XLA conv on the layer zoo")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return
    labels = [f"{r['case']}\n{r['direction'][:4]}" for r in results]
    vals = [r["speedup"] for r in results]
    colors = ["tab:green" if v >= 1 else "tab:red" for v in vals]
    fig = Figure(figsize=(max(6, 0.55 * len(vals)), 4))
    ax = fig.subplots()
    ax.bar(range(len(vals)), vals, color=colors)
    ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(vals)))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylabel("speedup vs jax.lax (log)")
    ax.set_title("jaxconv vs XLA conv (lax time / jaxconv time)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --- the command ------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxconv bench",
        description="Benchmark jaxconv against jax.lax in one process: "
        "interleaved calls, medians, speedup = lax time / jaxconv time (> 1: "
        "jaxconv is faster) with the interquartile range of the per-repetition "
        "ratios, XLA temporaries of every compiled function. Float32, channels "
        "last. Without --zoo, --models or --vmap: the 15 cases, forward for "
        "every case, forward + backward "
        f"for {', '.join(c.id for c in CASES if c.grad)}, and the compile time "
        "of a 16-layer conv stack (stack16). A progress bar is drawn only on a "
        "terminal.",
    )
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions (same shapes)")
    p.add_argument("--cases", default=None, metavar="ID,...",
                   help="comma-separated case ids or glob patterns (e.g. "
                        "'zoo/resnet18/*'); default: all of "
                        f"{', '.join(CASE_IDS)}, stack16 (with --zoo: every zoo "
                        "layer)")
    p.add_argument("--zoo", action="store_true",
                   help="every distinct conv layer of ResNet-18, ResNet-50, "
                   "ResNeXt-50 32x4d, MobileNetV2, EfficientNet-B0, ConvNeXt-T, "
                   "U-Net, 3-D U-Net and the HiFi-GAN generator (real channels, "
                   f"{_zoo.IMAGE}x{_zoo.IMAGE} images, {_zoo.VOLUME}^3 volumes, "
                   f"{_zoo.FRAMES} mel frames) at batch 1 and 8, forward and "
                   "gradient; prints the geomeans and the worst layers")
    p.add_argument("--models", action="store_true",
                   help="the training step (loss and every parameter's gradient) "
                   "of ResNet-18, MobileNetV2, ConvNeXt-T and U-Net in Flax with "
                   "jaxconv's convolutions and pooling against Flax's own (needs "
                   "flax), and of model/eqx_unet: an Equinox U-Net (GroupNorm, 3x3 "
                   "convs, stride-2 convs down, transposed convs up, "
                   "self-attention) jax.vmap-ed over the batch, eqx.nn layers "
                   "against jaxconv.equinox.from_equinox's (needs equinox, "
                   "skipped without it); outputs and gradients checked against "
                   "float64")
    p.add_argument("--vmap", action="store_true",
                   help="jit(vmap(f)) over single examples against the batched "
                   "call: vmapped forward, kernel gradient and input + kernel "
                   "gradients through the vmap, and per-example gradients, for "
                   f"{', '.join(c.id for c in CASES if c.vmap)} (batch "
                   f"{VMAP_BATCH} where theirs is 1); with --zoo for the zoo's "
                   "batch-8 layers too")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write results as JSON (with a machine record: CPU model, "
                   "cores, versions, git commit, profile and CPU family, device)")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="write a PNG of the speedups (the zoo: against layer FLOPs; "
                   "needs matplotlib)")
    p.add_argument("--compare", nargs="+", default=None, metavar="JSON",
                   help="OLD.json: run, then print what got faster or slower "
                   "than OLD.json; OLD.json NEW.json: compare two saved runs "
                   "without running anything")
    p.add_argument("--threshold", type=float, default=0.1, metavar="F",
                   help="--compare: changes within 1 + F either way are noise "
                   "(default 0.1)")
    return p


def _select(patterns: list[str], ids: list[str]) -> list[str]:
    return [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]


def _load(path: str) -> dict | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as err:
        print(f"jaxconv bench: cannot read {path}: {err}", file=sys.stderr)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        print(f"jaxconv bench: {path} is not a jaxconv bench JSON file (no "
              "'results' list)", file=sys.stderr)
        return None
    return data


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the process exit status."""
    args = _parser().parse_args(argv)
    old = None
    if args.compare is not None:
        if len(args.compare) > 2:
            print("jaxconv bench: --compare takes OLD.json or OLD.json NEW.json, "
                  f"got {len(args.compare)} files", file=sys.stderr)
            return 2
        old = _load(args.compare[0])
        if old is None:
            return 2
        if len(args.compare) == 2:
            new = _load(args.compare[1])
            if new is None:
                return 2
            print(compare(old, new, threshold=args.threshold))
            return 0
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("jaxconv bench: --plot needs matplotlib "
                  "(pip install 'jaxconv[examples]')", file=sys.stderr)
            return 2
    models_mod: Any = None
    if args.models:
        try:
            models_mod = importlib.import_module("jaxconv._bench_models")
            models_mod.require_flax()
        except ImportError:
            print("jaxconv bench: --models needs flax (pip install flax)",
                  file=sys.stderr)
            return 2

    patterns = ([c.strip() for c in args.cases.split(",") if c.strip()]
                if args.cases else None)
    suite_ids = CASE_IDS + ["stack16"]
    zoo_cases = _zoo.zoo_cases() if args.zoo else []
    zoo_ids = [c.id for c in zoo_cases]
    model_ids = models_mod.model_ids(quick=args.quick) if models_mod else []
    if models_mod is not None and "model/eqx_unet" not in model_ids:
        print("jaxconv bench: model/eqx_unet skipped: it needs equinox (pip "
              "install equinox)", file=sys.stderr)
    parts = args.zoo or args.models or args.vmap
    if patterns is None:
        wanted_suite = [] if parts else suite_ids
        wanted_zoo, wanted_models = zoo_ids, model_ids
    else:
        wanted_suite = _select(patterns, suite_ids)
        wanted_zoo = _select(patterns, zoo_ids)
        wanted_models = _select(patterns, model_ids)
        known = suite_ids + zoo_ids + model_ids
        bad = [p for p in patterns if not _select([p], known)]
        if bad:
            print(f"jaxconv bench: unknown case(s) {', '.join(bad)}; known: "
                  f"{', '.join(suite_ids)}"
                  + (", zoo/<arch>/<layer>/b<n> (see --zoo)" if not args.zoo
                     else ", zoo/...") + (", " + ", ".join(model_ids)
                                          if model_ids else ""),
                  file=sys.stderr)
            return 2
    vmap_suite = ([c for c in CASES if c.vmap and (patterns is None
                                                   or c.id in wanted_suite)]
                  if args.vmap else [])

    jobs: list[tuple[str, Any, Any]] = []
    for case in CASES:
        if case.id in wanted_suite and not (args.vmap and patterns is None):
            jobs.append(("case", case, "forward"))
            if case.grad:
                jobs.append(("case", case, "gradient"))
    if "stack16" in wanted_suite and not (args.vmap and patterns is None):
        jobs.append(("compile", None, "compile"))
    for case in vmap_suite:
        for direction in VMAP_DIRECTIONS:
            jobs.append(("vmap", case, direction))
    for mid in wanted_models:
        jobs.append(("model", mid, "train_step"))
    chosen = set(wanted_zoo)
    zoo_run = [zc for zc in zoo_cases if zc.id in chosen]
    zoo_unique = list({(zc.layer.problem, zc.n): zc for zc in reversed(zoo_run)}
                      .values())[::-1]  # the first case of every problem
    if args.vmap:
        for zc in zoo_run:
            if zc.n > 1:
                for direction in VMAP_DIRECTIONS:
                    jobs.append(("vmap", zc, direction))

    def label(job):
        kind, c, direction = job
        name = c if kind == "model" else (c.id if c is not None else "stack16")
        return f"{name} {direction}"

    results: list[dict] = []
    t_start = time.perf_counter()
    for kind, c, direction in progress(jobs, "bench", label=label):
        if kind == "compile":
            results.append(run_compile(quick=args.quick))
        elif kind == "case":
            results.append(run_case(c, direction, quick=args.quick))
        elif kind == "vmap":
            results.append(run_vmap(c, direction, quick=args.quick))
        else:
            if models_mod is None:
                raise RuntimeError("model records need jaxconv._bench_models")
            results.append(models_mod.run_model(c, quick=args.quick))
    if zoo_run:
        by_problem: dict[tuple, list[dict]] = {}
        records = run_layers(zoo_unique, ("forward", "gradient"), quick=args.quick)
        for zc, recs in zip(zoo_unique, progress(records, "zoo",
                                                 total=len(zoo_unique))):
            by_problem[(zc.layer.problem, zc.n)] = recs
        zoo_results = []
        for zc in zoo_run:
            recs = by_problem[(zc.layer.problem, zc.n)]
            zoo_results += [r if r["case"] == zc.id
                            else dict(r, case=zc.id, same_as=r["case"])
                            for r in recs]
        vmap_at = next((i for i, r in enumerate(results)
                        if r["case"].startswith("zoo/")), len(results))
        results[vmap_at:vmap_at] = zoo_results  # the zoo before its vmap records
    wall = time.perf_counter() - t_start
    print(format_table(results))
    gemm = gemm_rate() if zoo_run else None
    for summary in (summarize_zoo(results, gemm_gflops=gemm),
                    summarize_models(results)):
        if summary:
            print(summary)
    print(f"({len(results)} records in {wall:.0f} s; {cpu_model()}, "
          f"{_cores()} cores)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine_info(gemm), "results": results}, fh,
                      indent=1)
    if args.plot:
        plot(results, args.plot)
    if old is not None:
        print(compare(old, {"machine": machine_info(), "results": results},
                      threshold=args.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
