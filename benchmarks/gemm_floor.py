"""How fast the GEMMs alone run that a layer's convolution needs: the roofline.

For every dense or grouped layer chosen (a glob over zoo and suite case ids,
or the records of a ``jaxconv bench --json`` file below a speedup), times in
one process, interleaved: lax's convolution, jaxconv's, and the bare GEMMs a
GEMM formulation of that layer must run, with their operands already built
(no patch copy, no shifted sum, no padding).

Every product of a convolution is one of three GEMMs over the ``M`` rows of
its patch side (a conv's output positions, ``N * prod(out)``; a transposed
conv's input positions), ``T`` taps, ``P`` channels on the patch side and
``Q`` on the other (a conv: ``P = I``, ``Q = O``; a transposed conv the
other way round), per group:

* ``gather``: ``(M, T * P) @ (T * P, Q)`` -- a conv's forward, a transposed
  conv's input gradient (``im2col``, ``rows``);
* ``scatter``: ``(M, Q) @ (Q, T * P)`` -- a conv's input gradient, a
  transposed conv's forward (the all-tap GEMM of ``wide``/``alltaps``,
  polyphase);
* ``weights``: ``(T * P, M) @ (M, Q)`` -- the kernel gradient;

each also as ``T`` per-tap GEMMs of depth or width ``P`` (``taps``; one is
timed and multiplied by ``T``), and for a conv of stride 1 the forward also
as the input ``(N * prod(in), I)`` against all taps ``(I, T * O)``
(``wide``).  Groups batch the GEMMs over ``G``.  A forward record's floor is
the fastest form of its product; a gradient record's (input and kernel
gradients) the sum of its two products' fastest forms.

``lax / floor`` is how much faster the bare GEMMs run than lax's
convolution.  Where it is below 1.25, lax runs within 1.25x of the GEMMs
alone, and a formulation that adds a patch build or a shifted sum to its
GEMMs cannot reach 0.8 of lax unless that pass costs under a quarter of the
GEMMs: the layer is at the GEMM floor.  Above it, the passes around the
GEMMs are what a faster formulation could save ("pass cost").  Depthwise
layers (one channel per group) are not GEMM-shaped and are left out.

Usage (from the repository root)::

    python benchmarks/gemm_floor.py ['zoo/hifigan_v1/*'] [--direction D]
        [--from BENCH.json [--below 0.8]] [--budget SECONDS] [--json PATH]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxconv.lax as jl
from jaxconv import _zoo, bench

# A layer's products: (name, shapes of the two operands, count) per form.
Form = tuple[str, tuple[tuple[int, ...], tuple[int, ...]], int]

#: the ratio of lax's time to the bare GEMMs' below which a layer is at the
#: GEMM floor (ours needs a pass under 1/4 of the GEMMs to reach 0.8).
FLOOR_RATIO = 1.25


def _geometry(case):
    """(G, M, T, P, Q, rows of the input, stride 1 and not transposed)."""
    x, w = bench.arg_specs(case)
    y = jax.eval_shape(bench.make_fn(case, lax), x, w)
    g = bench._geometry(case)
    groups = g.groups
    taps = math.prod(g.kernel)
    rows_in = math.prod(x.shape[:-1])
    rows_out = math.prod(y.shape[:-1])
    i, o = g.c_in // groups, g.c_out // groups
    if g.transposed:
        return groups, rows_in, taps, o, i, rows_in, False
    stride = (case.layer.stride if isinstance(case, _zoo.ZooCase)
              else (case.stride,) * len(g.kernel))
    return groups, rows_out, taps, i, o, rows_in, all(s == 1 for s in stride)


def _batched(groups, a, b):
    return ((groups, *a), (groups, *b)) if groups > 1 else (a, b)


def forms(case) -> dict[str, list[Form]]:
    """The bare GEMMs of ``case``: ``{product: [(form, shapes, count), ...]}``.

    Products: ``"gather"``, ``"scatter"``, ``"weights"`` (module docstring);
    a conv's forward is ``gather`` (plus ``wide`` at stride 1), a transposed
    conv's ``scatter``.
    """
    g, m, t, p, q, rows_in, wide = _geometry(case)
    out = {
        "gather": [("deep", _batched(g, (m, t * p), (t * p, q)), 1),
                   ("taps", _batched(g, (m, p), (p, q)), t)],
        "scatter": [("deep", _batched(g, (m, q), (q, t * p)), 1),
                    ("taps", _batched(g, (m, q), (q, p)), t)],
        "weights": [("deep", _batched(g, (t * p, m), (m, q)), 1),
                    ("taps", _batched(g, (p, m), (m, q)), t)],
    }
    if wide:
        out["gather"].append(("wide", _batched(g, (rows_in, p), (p, t * q)), 1))
    return out


def products(case, direction: str) -> list[str]:
    """Which products a record of ``direction`` runs (gradient: x and w)."""
    transposed = bench._geometry(case).transposed
    if direction == "forward":
        return ["scatter" if transposed else "gather"]
    return ["gather" if transposed else "scatter", "weights"]


def gemm_floor_eligible(case) -> bool:
    """Dense and grouped layers (depthwise ones are not GEMM-shaped)."""
    g = bench._geometry(case)
    return g.groups == 1 or g.c_in // g.groups > 1


def measure(case, direction: str, budget: float, rng) -> dict:
    """One record: lax, jaxconv and every bare GEMM form, interleaved."""
    x, w = bench.make_args(case)
    fl, fj = bench.make_fn(case, lax), bench.make_fn(case, jl)
    args: tuple = (x, w)
    if direction == "gradient":
        y = jax.eval_shape(fl, x, w)
        args = (x, w, jnp.asarray(rng.standard_normal(y.shape, np.float32)))
        fl, fj = bench._gradient(fl), bench._gradient(fj)
    matmul = jax.jit(jnp.matmul)
    prods = products(case, direction)
    table = forms(case)
    gemms = [(prod, name, count, tuple(
        jnp.asarray(rng.standard_normal(s, np.float32)) for s in shapes))
        for prod in prods for name, shapes, count in table[prod]]
    calls = [(jax.jit(fl), args), (jax.jit(fj), args)]
    calls += [(matmul, ops) for *_, ops in gemms]
    times = [statistics.median(t) for t in bench.interleaved_samples(
        calls, budget=budget, min_reps=5, max_reps=200)]
    tl, tj = times[:2]
    form_s = {f"{prod}.{name}": t * count
              for (prod, name, count, _), t in zip(gemms, times[2:])}
    best = {prod: min((k for k in form_s if k.startswith(prod + ".")),
                      key=form_s.get) for prod in prods}
    floor_s = sum(form_s[k] for k in best.values())
    return {"case": case.id, "direction": direction,
            "algorithm": bench.planned_algorithm(case, direction),
            "lax_s": tl, "jaxconv_s": tj, "speedup": tl / tj,
            "forms_s": form_s, "floor": sorted(best.values()), "floor_s": floor_s,
            "floor_speedup": tl / floor_s, "of_floor": floor_s / tj,
            "reason": reason(tl / floor_s, floor_s / tj)}


def reason(floor_speedup: float, of_floor: float) -> str:
    """Why a record is where it is, from the two measured ratios."""
    if floor_speedup < FLOOR_RATIO:
        return (f"GEMM floor: lax within {floor_speedup:.2f}x of the bare GEMMs; "
                f"ours at {of_floor:.0%} of them")
    return (f"pass cost: the bare GEMMs {floor_speedup:.2f}x faster than lax, "
            f"ours at {of_floor:.0%} of them")


def select(pattern: str | None, direction: str, source: str | None,
           below: float) -> list[tuple]:
    """``[(case, direction), ...]``: a glob's layers, or a bench JSON's records."""
    cases = {c.id: c for c in list(bench.CASES) + _zoo.zoo_cases()}
    dirs = ["forward", "gradient"] if direction == "both" else [direction]
    if source:
        with open(source) as fh:
            results = json.load(fh)["results"]
        picked = [(cases[r["case"]], r["direction"]) for r in results
                  if r["case"] in cases and r["direction"] in dirs
                  and r["speedup"] < below
                  and (pattern is None or fnmatch.fnmatch(r["case"], pattern))]
    else:
        picked = [(c, d) for c in cases.values() for d in dirs
                  if fnmatch.fnmatch(c.id, pattern or "zoo/hifigan_v1/*")]
    return [(c, d) for c, d in picked if gemm_floor_eligible(c)]


def run(pattern: str | None = "zoo/hifigan_v1/*", budget: float = 2.0, *,
        direction: str = "forward", source: str | None = None,
        below: float = 0.8) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for case, d in select(pattern, direction, source, below):
        r = measure(case, d, budget, rng)
        rows.append(r)
        print(f"{case.id:44s} {d[:4]} lax {r['lax_s'] * 1e3:8.3f} ms  jaxconv "
              f"{r['speedup']:4.2f}  GEMMs alone {r['floor_speedup']:4.2f} "
              f"({'+'.join(r['floor'])}); ours at {r['of_floor']:4.0%} of them  "
              f"({r['algorithm']})", flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pattern", nargs="?", default=None,
                    help="case ids (glob); default zoo/hifigan_v1/* (all with --from)")
    ap.add_argument("--direction", choices=("forward", "gradient", "both"),
                    help="default: forward; with --from, both")
    ap.add_argument("--from", dest="source", metavar="BENCH.json",
                    help="take the records of a `jaxconv bench --json` file")
    ap.add_argument("--below", type=float, default=0.8,
                    help="with --from: only records whose speedup is below this")
    ap.add_argument("--budget", type=float, default=2.0,
                    help="seconds of timed calls per record (default 2)")
    ap.add_argument("--json", metavar="PATH", help="write the records as JSON")
    args = ap.parse_args(argv)
    direction = args.direction or ("both" if args.source else "forward")
    print(f"{bench.cpu_model()}, {bench._cores()} cores; speedup = lax time / "
          "time (GEMMs alone: lax's convolution against the bare GEMMs)")
    rows = run(args.pattern, args.budget, direction=direction,
               source=args.source, below=args.below)
    if rows:
        at = sum(r["floor_speedup"] < FLOOR_RATIO for r in rows)
        print(f"{len(rows)} records: jaxconv geomean "
              f"{bench.geomean([r['speedup'] for r in rows]):.2f}, GEMMs alone "
              f"{bench.geomean([r['floor_speedup'] for r in rows]):.2f}; at the "
              f"GEMM floor (lax within {FLOOR_RATIO}x of the GEMMs): {at}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": bench.machine_info(), "results": rows}, fh,
                      indent=1)


if __name__ == "__main__":
    main()
