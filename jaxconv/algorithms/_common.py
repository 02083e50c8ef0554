"""Pieces shared by the algorithms: output sizes, zero padding, the per-tap
contraction."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._taps import valid_out_size


def batch_zeros(x, shape, dtype, batch_axis=0):
    """``zeros(shape)`` whose axis ``batch_axis`` is sharded as ``x``'s batch.

    A scan's carry must carry the sharding of what the loop adds to it: with
    Explicit mesh axes (``jax.sharding.AxisType.Explicit``) a batch-sharded
    input makes batch-sharded updates, and an unsharded zero carry is a
    sharding type error.  With Auto axes (or none) the type has no sharding
    and the zeros are returned as they are.
    """
    z = jnp.zeros(shape, dtype)
    axes = batch_mesh_axes(x)
    if axes is not None:
        target = [None] * len(shape)
        target[batch_axis] = axes
        z = jax.sharding.reshard(z, jax.sharding.PartitionSpec(*target))
    return z


def kernel_row_scan(x, w, out, stride, dilation, acc_dtype, row_sum):
    """``sum_r row_sum(rows_r, w[r])`` as a ``lax.scan`` over the first kernel
    axis: each step one fused loop over the output, the carry the output.

    ``x``: padded, ``(N, *S, C)``; ``rows_r`` is ``x`` with its first
    spatial axis reduced to the positions kernel row ``r`` reads, every
    ``stride[0]``-th from ``r * dilation[0]``; ``w[r]``: that row's
    ``(*kernel[1:], I, O)`` weights; ``row_sum`` sums the row's taps over
    the remaining spatial axes (from axis 2).  Compile time stays bounded
    (one row of taps is traced).
    """
    k0, s0, d0 = w.shape[0], stride[0], dilation[0]
    ext0 = (out[0] - 1) * s0 + 1

    # Rematerialised: otherwise every step's input rows are stacked as
    # residuals (many times the 2x I/O bound).
    @jax.checkpoint
    def row_term(x, w, r):
        rows = lax.dynamic_slice_in_dim(x, r * d0, ext0, axis=1)[:, ::s0]
        return row_sum(rows, lax.dynamic_index_in_dim(w, r, axis=0, keepdims=False))

    def step(acc, r):
        return acc + row_term(x, w, r), None

    init = batch_zeros(x, (x.shape[0], *out, w.shape[-1]), acc_dtype)
    acc, _ = lax.scan(step, init, jnp.arange(k0))
    return acc


def batch_mesh_axes(x):
    """The mesh axes ``x``'s type shards its batch axis over (Explicit mesh
    axes), or None when its batch is not sharded in its type."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    partition = () if sharding is None else tuple(sharding.spec)
    return partition[0] if partition else None


def out_spatial(x_shape, kernel, stride, dilation) -> tuple[int, ...]:
    """Spatial output sizes of a VALID, strided, dilated window slide."""
    return tuple(
        valid_out_size(n, k, s, d)
        for n, k, s, d in zip(x_shape[1:-1], kernel, stride, dilation)
    )


def zero_pads(padding, nd: int) -> tuple[tuple[int, int], ...]:
    """``padding`` (None, or one non-negative ``(lo, hi)`` pair per spatial
    axis) as a tuple of int pairs; None means no padding."""
    if padding is None:
        return ((0, 0),) * nd
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    if len(pads) != nd or any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ValueError(f"`padding` (={padding!r}) must be {nd} non-negative "
                         "(lo, hi) pairs.")
    return pads


def padded_shape(shape, pads) -> tuple[int, ...]:
    """The shape of ``(N, *S, C)`` after zero-padding its spatial axes."""
    return (shape[0], *(n + lo + hi for n, (lo, hi) in zip(shape[1:-1], pads)),
            shape[-1])


def pad_spatial(x, pads):
    """Zero-pad the spatial axes of ``x (N, *S, C)`` by ``pads``."""
    if all(p == (0, 0) for p in pads):
        return x
    return jnp.pad(x, [(0, 0), *pads, (0, 0)])


def is_depthwise(w_shape: Sequence[int], groups: int, channels: int) -> bool:
    """True when every group holds a single input channel (I == 1, G == C)."""
    return w_shape[-2] == 1 and groups == channels


def contract_tap(xs, wt, groups, precision, acc_dtype):
    """Multiply one tap's input slice by that tap's kernel slice.

    Args:
      xs: ``(..., C)`` input values for one tap at every output position.
      wt: ``(I, O)`` the kernel at that tap; ``C = groups * I``.

    Returns:
      ``(..., O)``: the tap's contribution to every output, in ``acc_dtype``.
    """
    i, o = wt.shape
    lead = xs.shape[:-1]
    if i == 1:
        # Depthwise: an elementwise product with a channel multiplier, no
        # reduction at all — far cheaper than a degenerate matmul.
        m = o // groups
        xs = xs.astype(acc_dtype).reshape(*lead, groups, 1)
        wt = wt.astype(acc_dtype).reshape((1,) * len(lead) + (groups, m))
        return (xs * wt).reshape(*lead, o)
    if groups == 1:
        return matmul(xs, wt, precision, acc_dtype)
    xs = xs.reshape(*lead, groups, i)
    wt = wt.reshape(i, groups, o // groups)
    out = jnp.einsum(
        "...gi,igo->...go", xs, wt, precision=precision,
        preferred_element_type=acc_dtype,
    )
    return out.reshape(*lead, o)


def flat_taps(w: jax.Array) -> tuple[jax.Array, int]:
    """Reshape a kernel ``(*K, I, O)`` to ``(T, I, O)`` with ``T = prod(K)``."""
    t = int(np.prod(w.shape[:-2], dtype=np.int64))
    return w.reshape(t, *w.shape[-2:]), t


def common_dtype(a, b):
    """``a`` and ``b`` cast to their promoted dtype (unchanged where equal)."""
    if a.dtype != b.dtype:
        dt = jnp.promote_types(a.dtype, b.dtype)
        a, b = a.astype(dt), b.astype(dt)
    return a, b


def matmul(a, b, precision, acc_dtype):
    """``a (..., K) @ b (K, N) -> (..., N)`` in ``acc_dtype``.

    ``lax.dot_general`` directly: ``jnp.einsum`` parses its subscripts and
    traces a nested jit on every call, which was 40% of the trace time of a
    16-layer conv stack.  ``a`` is multiplied as the matrix ``(M, K)``: the
    transpose for ``b`` (a kernel gradient) is then one 2-D GEMM
    ``a^T @ ct`` that XLA:CPU runs on both operands in place, where the
    same contraction over several leading axes first copied the cotangent
    transposed (the gradient of a 1x1 conv 16 -> 96 on 32x32: 0.56 -> 1.9
    of lax's speed).
    """
    a, b = common_dtype(a, b)
    out = lax.dot_general(a.reshape(-1, a.shape[-1]), b, (((1,), (0,)), ((), ())),
                          precision=precision, preferred_element_type=acc_dtype)
    return out.reshape(*a.shape[:-1], b.shape[-1])


def take(a, index: Sequence[int]):
    """``a[index]`` for a tuple of static ints, without ``jnp`` indexing."""
    k = len(index)
    start = (*index, *(0,) * (a.ndim - k))
    limit = (*(i + 1 for i in index), *a.shape[k:])
    return lax.squeeze(lax.slice(a, start, limit), tuple(range(k)))
