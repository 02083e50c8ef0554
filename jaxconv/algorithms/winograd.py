"""Winograd minimal filtering F(2x2, 3x3), F(4x4, 3x3) (Lavin & Gray, 1509.09308).

The output is cut into ``m x m`` tiles; each ``(m+2) x (m+2)`` input tile is
transformed (``V = B^T d B``), the kernel is transformed once
(``U = G g G^T``), the channels are contracted independently at each of the
``(m+2)^2`` transform points (one batched GEMM), and the result is
transformed back (``Y = A^T M A``).  Multiplies per output drop from 9 to
``(m+2)^2 / m^2`` (4 for m=2, 2.25 for m=4).

Not exact: the transforms add and subtract inputs of *neighbouring* outputs,
so rounding differs from the direct sum (F(4x4) more so) and a NaN/Inf input
spreads to its whole tile.  ``"auto"`` therefore never picks it.

Applies to 2-D, 3x3, stride-1, undilated kernels of a float or complex dtype.
For every other problem (other ranks, kernel sizes, strides, dilations,
integer dtypes) the plan uses the exact ``"auto"`` formulation instead, so
``algorithm="winograd"`` accepts everything the other algorithms do.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from ._common import out_spatial

# Lavin & Gray's matrices, for correlation (the CNN convention).
_F2 = dict(
    BT=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float),
    G=np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], float),
    AT=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float),
)
_F4 = dict(
    BT=np.array([
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ], float),
    G=np.array([
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]),
    AT=np.array([
        [1, 1, 1, 1, 1, 0],
        [0, 1, -1, 2, -2, 0],
        [0, 1, 1, 4, 4, 0],
        [0, 1, -1, 8, -8, 1],
    ], float),
)
TRANSFORMS = {2: _F2, 4: _F4}


def winograd_applies(x_shape, w_shape, stride, dilation, dtype) -> bool:
    """True for 2-D 3x3 stride-1 undilated kernels of an inexact dtype."""
    return (
        len(w_shape) == 4 and tuple(w_shape[:2]) == (3, 3)
        and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
        and jnp.issubdtype(dtype, jnp.inexact)
    )


def default_tile(dtype) -> int:
    """F(4x4) for 32/64-bit floats, F(2x2) (smaller rounding error) for 16-bit."""
    return 4 if np.dtype(dtype).itemsize * (
        2 if jnp.issubdtype(dtype, jnp.complexfloating) else 1) >= 4 else 2


def conv_winograd(x, w, *, stride, dilation, groups, precision, acc_dtype, tile=None):
    """Winograd convolution on the canonical problem (see the module docstring)."""
    if not winograd_applies(x.shape, w.shape, stride, dilation, x.dtype):
        raise ValueError(f"winograd does not apply to kernel {w.shape} with "
                         f"stride {stride} and dilation {dilation}.")
    m = default_tile(acc_dtype) if tile is None else tile
    if m not in TRANSFORMS:
        raise ValueError(f"`tile` (={m}) must be 2 or 4.")
    mats = TRANSFORMS[m]
    a = m + 2
    ho, wo = out_spatial(x.shape, (3, 3), stride, dilation)
    th, tw = -(-ho // m), -(-wo // m)
    n = x.shape[0]
    i, o = w.shape[-2:]
    x = x.astype(acc_dtype)
    need_h, need_w = th * m + 2, tw * m + 2
    x = jnp.pad(x, ((0, 0), (0, max(0, need_h - x.shape[1])),
                    (0, max(0, need_w - x.shape[2])), (0, 0)))
    x = x[:, :need_h, :need_w]
    bt = mats["BT"]
    # Input transform V[xi, nu] = sum_{u, v} BT[xi, u] BT[nu, v] d[u, v], with
    # d[u, v] the (u, v) element of every tile: one strided slice of x.
    rows = [lax.slice_in_dim(x, u, u + (th - 1) * m + 1, m, axis=1) for u in range(a)]
    r = [_combine(bt[xi], rows) for xi in range(a)]  # (N, th, W', C)
    v = []
    for xi in range(a):
        cols = [lax.slice_in_dim(r[xi], q, q + (tw - 1) * m + 1, m, axis=2)
                for q in range(a)]
        v.extend(_combine(bt[nu], cols) for nu in range(a))
    vt = jnp.stack(v).reshape(a * a, n * th * tw, groups, i)
    # Kernel transform U = G g G^T, per (I, O).
    g = jnp.asarray(mats["G"], acc_dtype)
    u_k = jnp.einsum("xk,kl...,yl->xy...", g, w.astype(acc_dtype), g,
                     precision=lax.Precision.HIGHEST)
    u_k = u_k.reshape(a * a, i, groups, o // groups)
    mt = jnp.einsum("tpgi,tigo->tpgo", vt, u_k, precision=precision,
                    preferred_element_type=acc_dtype)
    mt = mt.reshape(a, a, n, th, tw, o)
    at = mats["AT"]
    # Output transform Y[r, s] = sum_{xi, nu} AT[r, xi] AT[s, nu] M[xi, nu].
    half = [_combine(at[rr], [mt[xi] for xi in range(a)]) for rr in range(m)]
    ys = [[_combine(at[ss], [half[rr][nu] for nu in range(a)]) for ss in range(m)]
          for rr in range(m)]
    y = jnp.stack([jnp.stack(row, axis=3) for row in ys], axis=2)  # N th m tw m O
    y = y.reshape(n, th * m, tw * m, o)
    return y[:, :ho, :wo]


def _combine(coeffs, arrays):
    """``sum_k coeffs[k] * arrays[k]``, skipping zero coefficients."""
    acc = None
    for cf, arr in zip(coeffs, arrays):
        if cf == 0:
            continue
        if cf == 1:
            term = arr
        elif cf == -1:
            term = -arr
        else:
            term = arr * np.asarray(cf, arr.dtype)
        acc = term if acc is None else acc + term
    return acc
