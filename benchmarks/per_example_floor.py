"""The GEMM floor of per-example kernel gradients (``vmap`` of ``grad``).

A batched kernel gradient contracts every example's positions in one GEMM,
``(T * I, B * Q) @ (B * Q, O)``, and writes one kernel; per-example
gradients run ``B`` GEMMs ``(T * I, Q) @ (Q, O)`` and write ``B`` kernels.
Same FLOPs, but a ``B``-times shallower contraction and a ``B``-times
larger output: for layers of few positions and large kernels the bare
per-example GEMMs alone take longer than the whole batched gradient, so
no formulation brings their per-example gradients within 1.2x of it.

For each zoo case id given (``zoo/<arch>/<layer>/b<n>``) this times, in one
process and interleaved, the bare GEMMs of both, operands already built in
GEMM-ready layouts (``Q``: a conv's output positions, a transposed conv's
input positions; grouped layers: one GEMM per group, groups a batch axis).

    python benchmarks/per_example_floor.py zoo/unet3d/down3.conv1/b8 ...
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import statistics
import time

import jax
from jax import lax

from jaxconv import _zoo


def floor(case_id: str, reps: int = 20) -> dict:
    cases = {c.id: c for c in _zoo.zoo_cases()}
    if case_id not in cases:
        raise ValueError(f"`case` (={case_id!r}) must be a zoo case id, "
                         "zoo/<arch>/<layer>/b<n> (`jaxconv bench --zoo` lists them).")
    case = cases[case_id]
    layer, b = case.layer, case.n
    g = layer.groups
    i, o = layer.c_in // g, layer.c_out // g
    q = math.prod(layer.spatial if layer.transposed else layer.out_spatial)
    k = math.prod(layer.kernel) * i
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (b, g, k, q))
    c = jax.random.normal(key, (b, g, q, o))
    a2 = a.transpose(1, 2, 0, 3).reshape(g, k, b * q)
    c2 = c.transpose(1, 0, 2, 3).reshape(g, b * q, o)
    if g == 1:  # no unit group axis (XLA:CPU runs unit batch axes slower)
        a, c, a2, c2 = a[:, 0], c[:, 0], a2[0], c2[0]
        per_example = jax.jit(lambda a, c: lax.dot_general(
            a, c, (((2,), (1,)), ((0,), (0,)))))
        batched = jax.jit(lambda a, c: a @ c)
    else:
        per_example = jax.jit(lambda a, c: lax.dot_general(
            a, c, (((3,), (2,)), ((0, 1), (0, 1)))))
        batched = jax.jit(lambda a, c: lax.dot_general(
            a, c, (((2,), (1,)), ((0,), (0,)))))
    runs = (("per_example", per_example, (a, c)), ("batched", batched, (a2, c2)))
    for _, f, args in runs:
        jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for r in range(reps):
        for name, f, args in (runs if r % 2 else runs[::-1]):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    return dict(case=case_id, k=k, q=q, o=o, groups=g,
                kernels_mb=b * g * k * o * 4 / 1e6,
                per_example_ms=med["per_example"] * 1e3,
                batched_ms=med["batched"] * 1e3,
                gflop=2 * b * g * k * q * o / 1e9)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="The bare GEMMs of per-example kernel gradients against the "
                    "batched kernel gradient's one GEMM, per zoo layer.")
    parser.add_argument("cases", nargs="+", metavar="CASE",
                        help="zoo case ids or glob patterns (zoo/<arch>/<layer>/b<n>)")
    parser.add_argument("--reps", type=int, default=20,
                        help="timed calls of each (default 20)")
    args = parser.parse_args(argv)
    ids = [c.id for c in _zoo.zoo_cases()]
    chosen = [i for i in ids if any(fnmatch.fnmatch(i, p) for p in args.cases)]
    if not chosen:
        parser.error(f"no zoo case matches {' '.join(args.cases)!r}")
    for case_id in chosen:
        r = floor(case_id, args.reps)
        print(f"{r['case']:42s} T*I={r['k']} Q={r['q']} O={r['o']} G={r['groups']}  "
              f"kernels {r['kernels_mb']:.1f} MB  per-example GEMMs "
              f"{r['per_example_ms']:.3f} ms  batched GEMM {r['batched_ms']:.3f} ms",
              flush=True)


if __name__ == "__main__":
    main()
