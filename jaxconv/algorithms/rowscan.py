"""The fast kernel tangent of depthwise and grouped convolutions.

Autodiff of ``out = sum_t slice_t(x) * w[t]`` gives, for the kernel
gradient, ``g[t] = sum over all positions of slice_t(x) * ct``: one XLA
reduction per tap (and input channel) over the leading axes with the
slicing fused in, which runs an order of magnitude slower than the
forward on CPU (BENCHMARKS.md).  The
kernel tangent is therefore written as a ``lax.scan`` over output rows
(:func:`rowscan`) with each tap's weights pre-broadcast to a full row: its
transpose is a scan that accumulates ``slice_t(x_row) * ct_row``
elementwise into a carry of one row per tap, then one small reduction over
that row.  XLA folds a pairwise halving tree of adds back into the slow
reduce, so a scan it is.  The rules that use it (``depthwise.py``,
``grouped.py``) are ``jax.custom_jvp``, so forward mode, reverse mode and
every higher order keep working: the tangent is linear and JAX transposes
it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import batch_mesh_axes, flat_taps, out_spatial


def rowscan(x, w, stride, dilation, groups, acc_dtype):
    """The grouped conv as a scan over output rows (linear in ``w``).

    Each step computes one output row of one example: the scan runs over
    the ``N * out[0]`` rows in ``(example, row)`` order, so its stacked
    result reshapes to ``(N, *out, O)`` for free.  A scan over ``out[0]``
    with the whole batch in each step would stack ``(out[0], N, ...)``, and
    its transpose would first copy the cotangent to rows-first (a full pass
    over it, two when a vmapped cotangent's reshape joins the transpose);
    one row of one example also keeps the carry small (measured, 2-core
    CPU, kernel gradient at batch 8: group32 20.1 -> 11.6 ms, dw7 17.0 ->
    13.3, dw3 53.5 -> 50.8; through ``vmap`` dw3 60.3 -> 47.8).  A batch
    sharded over Explicit mesh axes, or of a symbolic size (``jax.export``),
    keeps the whole batch in each step.

    Each ``(tap, input channel)`` weight vector is broadcast to one full
    output row *separately* (a tuple of ``T * I`` arrays of shape
    ``(1, *out[1:], O)``; ``(N, ...)`` with the whole batch per step) and
    passed through the scan as an unchanged carry, so the transpose w.r.t.
    ``w`` accumulates ``T * I`` separate rows elementwise and reduces them
    once, after the loop.  One stacked
    ``(T, ...)`` carry instead makes XLA fuse the per-tap updates into a
    concatenate, evaluated per element with a branch (several times slower;
    see BENCHMARKS.md).
    """
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, t = flat_taps(w)  # (T, I, O)
    n = x.shape[0]
    i, o = wt.shape[-2:]
    m = o // groups
    # One example per step, except for a single example, a symbolic batch and
    # a batch sharded over Explicit mesh axes (one example is not a valid
    # slice of it).
    split = isinstance(n, int) and n > 1 and batch_mesh_axes(x) is None
    per_step = 1 if split else n
    row = (per_step, *out[1:], o)
    wbs = tuple(
        jnp.broadcast_to(wt[k, j].astype(acc_dtype).reshape((1,) * len(out) + (o,)),
                         row)
        for k in range(t) for j in range(i)
    )
    k0, s0, d0 = kernel[0], stride[0], dilation[0]
    span0 = d0 * (k0 - 1) + 1

    def step(wbs, r):
        e, h = (r // out[0], r % out[0]) if split else (0, r)
        start = (e, h * s0) + (0,) * (x.ndim - 2)
        rows = lax.dynamic_slice(x, start, (per_step, span0, *x.shape[2:]))
        rows = rows.astype(acc_dtype)
        acc = None
        for k, tap in enumerate(tap_offsets(kernel)):
            xs = tap_slice(rows, tap, (1, *out[1:]), (1, *stride[1:]), dilation)
            # Drop the row axis, then split the channels: one axis at a time,
            # as reshapes of sharded arrays (Explicit mesh axes) need.
            xs = lax.squeeze(xs, (1,))
            xs = xs.reshape(*xs.shape[:-1], groups, i)
            for j in range(i):
                wb = wbs[k * i + j]
                if m == 1 and i == 1:
                    term = xs.reshape(row) * wb
                else:
                    term = xs[..., j:j + 1] * wb.reshape(*row[:-1], groups, m)
                    term = term.reshape(row)
                acc = term if acc is None else acc + term
        return wbs, acc

    # Remat the step: otherwise linearising the scan saves every tap's slice
    # of every row (T times the input) as residuals for the transpose.
    step = jax.checkpoint(step, prevent_cse=False)
    steps = n * out[0] if split else out[0]
    _, ys = lax.scan(step, wbs, jnp.arange(steps))  # (steps, per_step, *out[1:], O)
    # Unsplit, the rows stack rows-first: a moveaxis (a bitcast for one
    # example; vmapped per-example gradients trace this with N = 1, where a
    # reshape, with the vmapped axis joining it, compiled to a slower program).
    return ys.reshape(n, *out, o) if split else jnp.moveaxis(ys, 0, 1)
