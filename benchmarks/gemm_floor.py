"""How fast the GEMMs alone run that a 1-D dense layer's formulations need.

For every 1-D dense stride-1 layer of the zoo chosen by a glob (default: the
HiFi-GAN generator's), times in one process, interleaved: lax's convolution,
jaxconv's, and the bare GEMMs each GEMM formulation must run on that layer,
with their operands already built (no patch copy, no shifted sum):

* ``wide``: the input ``(N * L, I)`` against all taps ``(I, T * O)`` (what
  ``wide`` and ``alltaps`` multiply);
* ``deep``: the patch matrix ``(N * L_out, T * I)`` against ``(T * I, O)``
  (``im2col``, ``rows``);
* ``taps``: ``T`` GEMMs ``(N * L_out, I) @ (I, O)`` (per-tap forms); one is
  timed and multiplied by ``T``.

``floor`` is the fastest of the three.  Where ``lax / floor`` is near or
below 1, every GEMM formulation, which adds a patch build or a shifted sum
to its GEMM, is slower than lax's convolution on that layer.

Usage (from the repository root)::

    python benchmarks/gemm_floor.py ['zoo/hifigan_v1/*'] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxconv.lax as jl
from jaxconv import _zoo, bench


def _operands(case, rng):
    lay = case.layer
    (k,), (d,) = lay.kernel, lay.dilation
    n, (length,), i, o = case.n, lay.spatial, lay.c_in, lay.c_out
    (lo, hi), = lay.padding
    l_out = length + lo + hi - d * (k - 1)
    f32 = np.float32

    def arr(*shape):
        return jnp.asarray(rng.standard_normal(shape, f32))

    return {
        "wide": (arr(n * length, i), arr(i, k * o)),
        "deep": (arr(n * l_out, k * i), arr(k * i, o)),
        "tap": (arr(n * l_out, i), arr(i, o)),
    }, k


def run(pattern: str, budget: float) -> list[dict]:
    cases = [c for c in _zoo.zoo_cases() if fnmatch.fnmatch(c.id, pattern)
             and len(c.layer.spatial) == 1 and not c.layer.transposed
             and c.layer.groups == 1 and c.layer.stride == (1,)
             and math.prod(c.layer.kernel) > 1]
    rng = np.random.default_rng(0)
    matmul = jax.jit(lambda a, b: a @ b)
    rows = []
    for case in cases:
        x, w = bench.make_args(case)
        fl = jax.jit(bench.make_fn(case, lax))
        fj = jax.jit(bench.make_fn(case, jl))
        ops, taps = _operands(case, rng)
        calls = [(fl, (x, w)), (fj, (x, w))] + [(matmul, ops[k])
                                                for k in ("wide", "deep", "tap")]
        times = bench.interleaved_samples(calls, budget=budget, min_reps=5,
                                          max_reps=200)
        tl, tj, tw, td, tt = (statistics.median(t) for t in times)
        gemms = {"wide": tw, "deep": td, "taps": tt * taps}
        floor = min(gemms, key=gemms.get)
        rows.append({"case": case.id, "lax_s": tl, "jaxconv_s": tj,
                     **{f"{k}_s": v for k, v in gemms.items()},
                     "floor": floor, "speedup": tl / tj,
                     "floor_speedup": tl / gemms[floor],
                     "algorithm": bench.planned_algorithm(case)})
        print(f"{case.id:44s} lax {tl * 1e3:7.3f} ms  jaxconv {tl / tj:4.2f}  "
              f"GEMM alone: wide {tl / tw:4.2f}  deep {tl / td:4.2f}  "
              f"taps {tl / (tt * taps):4.2f}  ({rows[-1]['algorithm']})",
              flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pattern", nargs="?", default="zoo/hifigan_v1/*")
    ap.add_argument("--budget", type=float, default=2.0,
                    help="seconds of timed calls per layer (default 2)")
    args = ap.parse_args(argv)
    print(f"{bench.cpu_model()}, {bench._cores()} cores; speedup = lax time / "
          "time (GEMM alone: lax's convolution against that GEMM by itself)")
    rows = run(args.pattern, args.budget)
    if rows:
        print(f"{len(rows)} layers: jaxconv geomean "
              f"{bench.geomean([r['speedup'] for r in rows]):.2f}, GEMM floor "
              f"geomean {bench.geomean([r['floor_speedup'] for r in rows]):.2f}; "
              f"floor below 1.0 on "
              f"{sum(r['floor_speedup'] < 1.0 for r in rows)}")


if __name__ == "__main__":
    main()
