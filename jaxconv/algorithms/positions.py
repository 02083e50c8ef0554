"""Kernel gradients with the output positions as the taps.

The kernel gradient ``g[t] = sum_q x[q * s + t * d] (outer) ct[q]`` is itself
a correlation: of the padded input with the cotangent as the kernel, whose
taps are the output positions.  Where a layer has few output positions (the
late stages of image networks: 2x2 to 8x8 maps), a fused loop over the
positions computes it directly, every product one lax forms too:

* depthwise kernel gradients of at most ``profile.kernel_grad_positions_max``
  positions (``kernel_grad="positions"``, run by the primitive's kernel
  gradient), summed a few examples per scan step (:func:`kernel_grad`);
* per-example kernel gradients of layers written for one image, depthwise
  and dense (``plan.per_example_positions``), every example at once
  (:func:`kernel_grads`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import batch_mesh_axes


def kernel_grads(x, ct, kernel, stride, dilation, groups, acc_dtype):
    """Per-example kernel gradients with the *output positions* as the taps.

    ``g[t] = sum_q x[q * s + t * d] (outer) ct[q]`` is itself a correlation:
    of the padded input ``x (N, *S, G * I)`` with the cotangent
    ``ct (N, *out, G * M)`` as the kernel, the kernel's taps as the output
    positions (stride ``d``, dilation ``s``).  Where a layer has few output
    positions (a 7x7 kernel on a 4x4 feature map), one fused loop over the
    positions writes the products directly, instead of a scan over output
    rows whose every step updates one accumulator per tap (depthwise), or a
    GEMM of depth ``positions`` per example, whose ``(I, O)`` result XLA:CPU
    then copies into the kernel's layout (dense).  Each product is one lax
    computes too (padding zeros times the cotangent included), so a NaN or
    Inf stays where lax puts it.

    Returns each example's gradient, ``(N, *K, I, G * M)``.
    """
    n = x.shape[0]
    o = ct.shape[-1]
    i = x.shape[-1] // groups
    m = o // groups
    nd = len(kernel)
    one = (1,) * nd
    acc = None
    for q in tap_offsets(ct.shape[1:-1]):
        xs = tap_slice(x, q, kernel, dilation, stride).astype(acc_dtype)
        cq = ct[(slice(None), *q)].astype(acc_dtype)  # (N, G * M)
        if i == 1 and m == 1:  # depthwise, multiplier 1
            term = xs.reshape(n, *kernel, 1, o) * cq.reshape(n, *one, 1, o)
        else:
            xs = jnp.swapaxes(xs.reshape(n, *kernel, groups, i), -1, -2)
            term = (xs.reshape(n, *kernel, i, groups, 1)
                    * cq.reshape(n, *one, 1, groups, m)).reshape(n, *kernel, i, o)
        acc = term if acc is None else acc + term
    if acc is None:  # no output position: a zero gradient
        acc = jnp.zeros((n, *kernel, i, o), acc_dtype)
    return acc


def kernel_grad(x, ct, kernel, stride, dilation, groups, acc_dtype, terms):
    """The kernel gradient summed over the examples (``(*K, I, G * M)``):
    :func:`kernel_grads` of a few examples per step of a
    ``lax.scan`` that accumulates them, as many as keep one step's products
    per output (examples times positions) within ``terms``
    (``profile.kernel_grad_position_terms``), added in the same fused loop.

    Summing the per-example products afterwards is an XLA reduction over
    the examples (3x slower than the whole scan here), and unrolling every
    example into one fused loop slows it beyond ~32 products per output.
    A symbolic batch (``jax.export``) or one sharded over Explicit mesh
    axes is summed whole.
    """
    n = x.shape[0]
    positions = math.prod(ct.shape[1:-1])
    args = (kernel, stride, dilation, groups, acc_dtype)
    if not isinstance(n, int) or batch_mesh_axes(x) is not None:
        return kernel_grads(x, ct, *args).sum(0)
    per_step = max(d for d in range(1, n + 1)
                   if n % d == 0 and (d == 1 or d * positions <= terms))

    def step_sum(x, ct):
        g = kernel_grads(x, ct, *args)
        total = g[0]
        for e in range(1, per_step):
            total = total + g[e]
        return total

    if per_step == n:
        return step_sum(x, ct)

    def step(acc, xc):
        return acc + step_sum(*xc), None

    chunks = tuple(a.reshape(n // per_step, per_step, *a.shape[1:]) for a in (x, ct))
    init = jnp.zeros((*kernel, x.shape[-1] // groups, ct.shape[-1]), acc_dtype)
    return lax.scan(step, init, chunks)[0]
