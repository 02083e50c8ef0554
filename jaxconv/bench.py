"""The benchmark suite behind ``jaxconv bench``: jaxconv against ``jax.lax``.

Every case runs jaxconv and ``jax.lax`` (the baseline) in the same process,
interleaved call by call, and reports medians; ``speedup = lax_s / jaxconv_s``
(> 1: jaxconv is faster).  Forward for every case, forward+backward (input and
kernel gradients) for the cases marked ``grad``, one ``"compile"`` record for
a 16-layer conv stack, and the XLA temporaries of every compiled function
(``memory_analysis().temp_size_in_bytes``).

Usage (``jaxconv bench`` calls ``main``)::

    jaxconv bench [--quick] [--cases ID,...] [--json PATH] [--plot PATH]

A progress bar is drawn on standard error when it is a terminal (never in
logs or pipes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

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


CASES = [
    Case("dense3", "ResNet 3x3", 1, (56, 56), 64, 64, 3),
    Case("dense3_b8", "batched 3x3", 8, (28, 28), 128, 128, 3, grad=True),
    Case("point", "1x1", 1, (56, 56), 256, 64, 1),
    Case("stem", "7x7 stem", 1, (224, 224), 3, 64, 7, stride=2),
    Case("dw3", "MobileNet depthwise", 1, (112, 112), 96, 96, 3, groups=96, grad=True),
    Case("dw3_s2", "depthwise strided", 1, (112, 112), 96, 96, 3, stride=2, groups=96),
    Case("dw7", "ConvNeXt depthwise", 1, (56, 56), 96, 96, 7, groups=96),
    Case("dw31", "large kernel", 1, (28, 28), 64, 64, 31, groups=64),
    Case("group32", "ResNeXt", 1, (28, 28), 256, 256, 3, groups=32, grad=True),
    Case("atrous", "dilated", 1, (28, 28), 128, 128, 3, dilation=2),
    Case("causal1d", "short causal depthwise", 4, (4096,), 64, 64, 4, groups=64,
         padding="CAUSAL"),
    Case("long1d", "long depthwise", 1, (8192,), 32, 32, 1024, groups=32),
    Case("wav1d", "1-D dense strided", 1, (3199,), 512, 512, 3, stride=2),
    Case("tconv2d", "transposed 2-D", 1, (32, 32), 64, 32, 4, stride=2,
         padding="TRANSPOSE"),
    Case("vol3d", "3-D", 1, (8, 28, 28), 64, 64, 3),
]
CASE_IDS = [c.id for c in CASES]


def _dn(nd: int) -> tuple[str, str, str]:
    sp = "DHW"[3 - nd:]  # the cases are 1-D to 3-D
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


def make_fn(case: Case, module):
    """``f(x, w) -> y`` computing ``case`` with ``module`` (jax.lax or jaxconv.lax)."""
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


def make_args(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    nd = len(case.spatial)
    x = rng.standard_normal((case.n, *case.spatial, case.c_in), np.float32)
    if case.padding == "TRANSPOSE":
        wshape = (case.kernel,) * nd + (case.c_in, case.c_out)
    else:
        wshape = (case.kernel,) * nd + (case.c_in // case.groups, case.c_out)
    w = rng.standard_normal(wshape, np.float32) / np.sqrt(np.prod(wshape[:-1]))
    # float32 by construction (the suite is float32), also under JAX_ENABLE_X64:
    # the float64 scale above would otherwise promote ``w``.
    return jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)


def _gradient(f):
    def g(x, w, ct):
        _, vjp = jax.vjp(f, x, w)
        return vjp(ct)
    return g


def _time_once(f, args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - t0


def interleaved(fa, fb, args, *, budget: float, min_reps: int, max_reps: int):
    """Median seconds of ``fa(*args)`` and ``fb(*args)``, alternating calls.

    One warm-up call of each is timed only to size the run and then
    discarded: a first call pays for cold caches, page faults and waking the
    thread pool, and with the few repetitions of ``--quick`` (5 at the
    least) it would weigh on the median.  The order alternates
    (a b, b a, ...) so that neither side always runs right after the other.
    """
    per = max(_time_once(fa, args) + _time_once(fb, args), 1e-6)
    reps = int(min(max_reps, max(min_reps, budget / per)))
    ta, tb = [], []
    for i in range(reps):
        if i % 2:
            tb.append(_time_once(fb, args))
            ta.append(_time_once(fa, args))
        else:
            ta.append(_time_once(fa, args))
            tb.append(_time_once(fb, args))
    return statistics.median(ta), statistics.median(tb)


def _temp_bytes(compiled) -> int | None:
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - backends without memory analysis
        return None


def _nbytes(tree) -> int:
    return int(sum(np.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(tree)))


def planned_algorithm(case: Case) -> str:
    """The formulation(s) ``"auto"`` picks for ``case`` (``jaxconv.explain``)."""
    x, w = make_args(case)
    rows = explain(make_fn(case, jl), x, w)
    return "+".join(dict.fromkeys(r.formulation for r in rows)) or "auto"


def run_case(case: Case, direction: str, *, quick: bool) -> dict:
    x, w = make_args(case)
    fj, fl = make_fn(case, jl), make_fn(case, lax)
    args: tuple[Any, ...] = (x, w)
    if direction == "gradient":
        y = jax.eval_shape(fl, x, w)
        ct = jnp.asarray(np.random.default_rng(1).standard_normal(y.shape, np.float32))
        fj, fl = _gradient(fj), _gradient(fl)
        args = (x, w, ct)
    cj = jax.jit(fj).lower(*args).compile()
    cl = jax.jit(fl).lower(*args).compile()
    out = jax.eval_shape(fl, *args)
    budget, reps = (0.6, (5, 41)) if quick else (3.0, (7, 101))
    tj, tl = interleaved(cj, cl, args, budget=budget, min_reps=reps[0],
                         max_reps=reps[1])
    return {
        "case": case.id, "direction": direction,
        "algorithm": planned_algorithm(case),
        "jaxconv_s": tj, "lax_s": tl, "speedup": tl / tj,
        "temp_bytes": _temp_bytes(cj), "lax_temp_bytes": _temp_bytes(cl),
        "input_bytes": _nbytes(args), "output_bytes": _nbytes(out),
    }


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
        "temp_bytes": _temp_bytes(cj), "lax_temp_bytes": _temp_bytes(cl),
        "input_bytes": _nbytes((x, ws)), "output_bytes": _nbytes(x),
    }


def machine_info() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dev = jax.devices()[0]
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "jax": jax.__version__,
        "jaxlib": getattr(getattr(jax, "lib", None), "__version__", None)
        or jax.__version__,
        "platform": f"{jax.default_backend()} ({dev.device_kind}); "
                    f"{platform.platform()}",
        "python": platform.python_version(),
    }


def format_table(results: list[dict]) -> str:
    head = (f"{'case':<10} {'direction':<9} {'algorithm':<16} {'jaxconv ms':>11} "
            f"{'lax ms':>10} {'speedup':>8} {'temp MB':>8} {'lax MB':>7} "
            f"{'temp/io':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        io = r["input_bytes"] + r["output_bytes"]
        tb = r["temp_bytes"]
        ratio = f"{tb / io:.2f}" if tb is not None and io else "-"
        unit = 1.0 if r["direction"] == "compile" else 1e3
        lines.append(
            f"{r['case']:<10} {r['direction']:<9} {r['algorithm']:<16} "
            f"{r['jaxconv_s'] * unit:>11.3f} {r['lax_s'] * unit:>10.3f} "
            f"{r['speedup']:>8.2f} {(tb or 0) / 2**20:>8.2f} "
            f"{(r['lax_temp_bytes'] or 0) / 2**20:>7.2f} {ratio:>7}"
        )
    lines.append("(compile rows are in seconds; speedup = lax / jaxconv)")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    """Write a bar chart of the speed-ups to ``path`` (PNG; needs matplotlib).

    Draws on a bare ``matplotlib.figure.Figure``: matplotlib's global backend
    (and so a notebook's inline plots) is left as it was.
    """
    from matplotlib.figure import Figure

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


def main(argv: list[str] | None = None) -> int:
    """Run the suite; returns the process exit status."""
    p = argparse.ArgumentParser(
        prog="jaxconv bench",
        description="Benchmark jaxconv against jax.lax in one process: "
        "interleaved calls, medians, speedup = lax time / jaxconv time (> 1: "
        "jaxconv is faster), XLA temporaries of every compiled function. "
        "Float32, channels last; forward for every case, forward + backward "
        f"for {', '.join(c.id for c in CASES if c.grad)}, and the compile time "
        "of a 16-layer conv stack (stack16). A progress bar is drawn only on a "
        "terminal.",
    )
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions (same shapes)")
    p.add_argument("--cases", default=None, metavar="ID,...",
                   help="comma-separated case ids; default: all of "
                        f"{', '.join(CASE_IDS)}, stack16")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write results as JSON")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="write a PNG bar chart of the speedups (needs matplotlib)")
    args = p.parse_args(argv)
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("jaxconv bench: --plot needs matplotlib "
                  "(pip install 'jaxconv[examples]')", file=sys.stderr)
            return 2
    wanted = CASE_IDS + ["stack16"]
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        bad = [c for c in wanted if c not in CASE_IDS + ["stack16"]]
        if bad:
            print(f"jaxconv bench: unknown case(s) {', '.join(bad)}; known: "
                  f"{', '.join(CASE_IDS + ['stack16'])}", file=sys.stderr)
            return 2
    jobs: list[tuple[Case | None, str]] = []
    for case in CASES:
        if case.id in wanted:
            jobs.append((case, "forward"))
            if case.grad:
                jobs.append((case, "gradient"))
    if "stack16" in wanted:
        jobs.append((None, "compile"))
    results = []
    for c, direction in progress(
        jobs, "bench", label=lambda job: f"{job[0].id if job[0] else 'stack16'} "
        f"{job[1]}"
    ):
        if c is None:
            results.append(run_compile(quick=args.quick))
        else:
            results.append(run_case(c, direction, quick=args.quick))
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine_info(), "results": results}, fh, indent=1)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
