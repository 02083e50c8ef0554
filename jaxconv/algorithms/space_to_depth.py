"""Space-to-depth: strided kernels on few channels as stride-1 kernels on more.

Along each axis with stride ``s > 1`` the input becomes ``(P/s, s)`` with
the phase moved into the channels and the kernel ``(ceil(k/s), s)`` (zero
padded): a stride-1 convolution with ``s`` times more input channels and a
``s`` times shorter kernel, so the GEMMs get ``s`` times deeper.  The
stride-1 problem is planned like any other (``Plan.inner``) and run by one
of the dense formulations.

The zero-padded kernel taps meet real inputs, so an Inf input would become
NaN in a neighbouring output: the exact per-tap scan runs instead when an
input is not finite (``guards.finite_or``).  Where every strided axis's
kernel is a multiple of its stride there are no such taps and no guard
(:func:`exact`); a kernel equal to its stride (non-overlapping patches, a
ViT or ConvNeXt "patchify" stem) becomes one reshape and one GEMM.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from ._common import out_spatial, pad_spatial
from .dense import conv_per_tap
from .dense import run as run_dense
from .guards import finite_or


def applies(problem) -> bool:
    """Some axis is strided (with a kernel longer than 1), every strided axis
    undilated, one group."""
    p = problem
    return (p.groups == 1 and any(s > 1 and k > 1 for s, k in zip(p.stride, p.kernel))
            and all(d == 1 for s, d in zip(p.stride, p.dilation) if s > 1))


def exact(problem) -> bool:
    """No zero-padded kernel taps: every strided axis's kernel is a multiple
    of its stride (so the stride-1 problem multiplies real weights only, and
    NaN/Inf stay local without a guard)."""
    p = problem
    return all(k % s == 0 for k, s in zip(p.kernel, p.stride) if s > 1)


def patchify(problem) -> bool:
    """The kernel equals the stride on every axis, some of them > 1, undilated:
    non-overlapping windows, whose stride-1 problem is a 1x1 kernel."""
    p = problem
    return (applies(p) and all(k == s for k, s in zip(p.kernel, p.stride))
            and not p.transposed)


def inner_shapes(problem):
    """``(x_shape, w_shape, stride)`` of the equivalent stride-1 problem."""
    p = problem
    out = p.out_spatial
    xs, ws, stride = [p.batch], [], []
    for k, s, o, n in zip(p.kernel, p.stride, out, p.padded_shape[1:-1]):
        if s == 1:
            xs.append(n)
            ws.append(k)
        else:
            kq = -(-k // s)
            xs.append(o - 1 + kq)
            ws.append(kq)
        stride.append(1 if s > 1 else s)
    phases = math.prod(s for s in p.stride if s > 1)
    return ((*xs, phases * p.channels), (*ws, phases * p.in_per_group, p.out_channels),
            tuple(stride))


def run(x, w, plan, precision):
    p = plan.problem
    x = pad_spatial(x, p.pads)
    kw = dict(stride=p.stride, dilation=p.dilation, groups=p.groups,
              precision=precision, acc_dtype=p.acc_dtype)
    if plan.param("guard") is None:  # exact: no zero-padded taps
        return _space_to_depth(x, w, plan.inner[0], p, precision)
    return finite_or(x, lambda: _space_to_depth(x, w, plan.inner[0], p, precision),
                     lambda: conv_per_tap(x, w, force_scan=True, **kw),
                     plan.profile.branch_free)


def _space_to_depth(x, w, inner, problem, precision):
    stride = problem.stride
    kernel = w.shape[:-2]
    nd = len(kernel)
    out = out_spatial(x.shape, kernel, stride, problem.dilation)
    xs, ws = x, w
    x_axes = []
    for a, (k, s, o) in enumerate(zip(kernel, stride, out)):
        if s == 1:
            continue
        kq = -(-k // s)
        need = (o - 1 + kq) * s
        have = xs.shape[1 + a]
        if need > have:
            pad = [(0, 0)] * xs.ndim
            pad[1 + a] = (0, need - have)
            xs = jnp.pad(xs, pad)
        else:
            xs = lax.slice_in_dim(xs, 0, need, axis=1 + a)
        wpad = [(0, 0)] * ws.ndim
        wpad[a] = (0, kq * s - k)
        ws = jnp.pad(ws, wpad)
        x_axes.append(a)
    # x: (N, *P, C) -> (N, *Q, *phases, C); w: (*K, I, O) -> (*Kq, *phases, I, O)
    xshape, wshape, xperm_tail, wperm_tail = [xs.shape[0]], [], [], []
    for a in range(nd):
        if a in x_axes:
            s = stride[a]
            xshape += [xs.shape[1 + a] // s, s]
            wshape += [ws.shape[a] // s, s]
        else:
            xshape += [xs.shape[1 + a]]
            wshape += [ws.shape[a]]
    xs = xs.reshape(*xshape, xs.shape[-1])
    ws = ws.reshape(*wshape, *ws.shape[-2:])
    xpos, wpos, xq, wq = 1, 0, [], []
    for a in range(nd):
        xq.append(xpos)
        wq.append(wpos)
        if a in x_axes:
            xperm_tail.append(xpos + 1)
            wperm_tail.append(wpos + 1)
            xpos += 2
            wpos += 2
        else:
            xpos += 1
            wpos += 1
    xs = jnp.transpose(xs, (0, *xq, *xperm_tail, xs.ndim - 1))
    ws = jnp.transpose(ws, (*wq, *wperm_tail, ws.ndim - 2, ws.ndim - 1))
    phases = int(np.prod([stride[a] for a in x_axes]))
    xs = xs.reshape(*xs.shape[: 1 + nd], phases * x.shape[-1])
    ws = ws.reshape(*ws.shape[:nd], phases * w.shape[-2], w.shape[-1])
    y = run_dense(xs, ws, inner, precision)
    return lax.slice(y, (0,) * y.ndim, (y.shape[0], *out, y.shape[-1]))
