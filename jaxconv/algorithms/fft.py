"""FFT convolution on the canonical problem: transform, multiply, transform back.

The canonical problem is a VALID, strided, rhs-dilated, grouped correlation
``out[p] = sum_t x[p*s + t*d] . w[t]``.  ``conv_fft``

1. dilates the kernel (inserts ``d - 1`` zeros between taps) and flips it, so
   the correlation becomes a linear convolution;
2. zero-pads both to a common *fast* size ``L >= P`` per spatial axis (the
   input length, not ``P + K - 1``: the circular convolution of length ``L``
   only wraps into the first ``K - 1`` outputs, which the VALID crop drops —
   overlap-save with one block);
3. transforms with ``rfftn`` (real) or ``fftn`` (complex) over the spatial axes;
4. multiplies with a grouped contraction over channels, one small matrix
   product ``(N, I) x (I, O/G)`` per frequency and group (an ``einsum``);
5. transforms back, crops the VALID part and applies the stride by slicing.

Cost is ``O(C * O/G * L log L)``-ish regardless of the kernel size, so it wins
for large kernels.  It is *not* exact: every output mixes rounding error from
the whole input, and a single NaN or Inf anywhere in ``x`` or ``w`` spreads to
every output.  That is why ``"auto"`` never picks it.

Integer inputs are computed in floating point (float64 when
``jax_enable_x64`` is on, else float32), rounded to the nearest integer and
cast back to the integer accumulation dtype (as ``scipy.signal.fftconvolve``
callers like ``scipy.signal.convolve`` do).  The result is exact only while the
rounding error of the transform stays below 0.5, i.e. while the output
magnitudes stay well inside the float mantissa (about ``2**53 / L`` for
float64, ``2**24 / L`` for float32).  Results that overflow the integer dtype
wrap around as in the exact algorithms (the cast goes through the widest
integer type).  Use an exact algorithm when that matters.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._common import out_spatial

__all__ = ["conv_fft", "next_fast_len"]


@functools.lru_cache(maxsize=4096)
def next_fast_len(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are all 2, 3, 5 or 7.

    FFT libraries (pocketfft/ducc on CPU, cuFFT, the TPU FFT) are fastest on
    such sizes.

    Args:
      n: a positive length.

    Returns:
      The padded transform length.

    Example:
      >>> next_fast_len(97), next_fast_len(128)
      (98, 128)
    """
    m = max(int(n), 1)
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _compute_dtypes(acc_dtype) -> tuple[np.dtype, bool]:
    """The real/complex dtype the transform runs in, and whether to round.

    FFTs run in 32 or 64 bits: 16-bit floats (float16, bfloat16) are
    transformed in float32 and the result cast back; integers are computed
    in the widest float and rounded.
    """
    acc = np.dtype(acc_dtype)
    if jax.dtypes.issubdtype(acc, np.inexact):
        if jax.dtypes.issubdtype(acc, np.floating) and acc.itemsize < 4:
            return np.dtype(np.float32), False
        return acc, False
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64)), True


def _grouped_product(xf, wf, groups, precision):
    """``xf (N, *F, C)`` times ``wf (*F, I, O)`` per frequency and group."""
    n = xf.shape[0]
    freq = xf.shape[1:-1]
    i, o = wf.shape[-2:]
    f = int(np.prod(freq, dtype=np.int64))
    xg = xf.reshape(n, f, groups, i)
    wg = wf.reshape(f, i, groups, o // groups)
    out = jnp.einsum("nfgi,figm->nfgm", xg, wg, precision=precision)
    return out.reshape(n, *freq, o)


def conv_fft(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """FFT convolution on the canonical problem (see the module docstring).

    Args:
      x: ``(N, *P, C)`` the padded input.
      w: ``(*K, C // groups, O)`` the kernel.
      stride, dilation: one int per spatial axis.
      groups: the feature group count ``G`` (``C = G * I``, ``G`` divides ``O``).
      precision: passed to the frequency-domain contraction.
      acc_dtype: the result dtype; integers are computed in floating point and
        rounded.

    Returns:
      ``(N, *out, O)`` in ``acc_dtype``.

    Example:
      >>> import jax.numpy as jnp
      >>> x, w = jnp.ones((2, 9, 8, 4)), jnp.ones((3, 3, 2, 6))
      >>> conv_fft(x, w, stride=(1, 2), dilation=(2, 1), groups=2,
      ...          precision=None, acc_dtype=jnp.float32).shape
      (2, 5, 3, 6)
    """
    kernel = w.shape[:-2]
    nd = len(kernel)
    out = out_spatial(x.shape, kernel, stride, dilation)
    compute, rounded = _compute_dtypes(acc_dtype)
    x = x.astype(compute)
    w = w.astype(compute)
    if nd == 0:
        # No spatial axes: the product alone is the convolution.
        res = _grouped_product(x, w, groups, precision)
        return _finish(res, acc_dtype, rounded)

    # 1. Dilate and flip the kernel: correlation -> linear convolution.
    zero = jnp.zeros((), w.dtype)
    config = [(0, 0, d - 1) for d in dilation] + [(0, 0, 0), (0, 0, 0)]
    wd = lax.rev(lax.pad(w, zero, config), tuple(range(nd)))
    span = wd.shape[:nd]

    # 2.-3. Pad to a fast common size and transform.
    spatial = x.shape[1:-1]
    size = tuple(next_fast_len(p) for p in spatial)
    x_axes = tuple(range(1, nd + 1))
    w_axes = tuple(range(nd))
    real = not np.issubdtype(compute, np.complexfloating)
    if real:
        xf = jnp.fft.rfftn(x, s=size, axes=x_axes)
        wf = jnp.fft.rfftn(wd, s=size, axes=w_axes)
    else:
        xf = jnp.fft.fftn(x, s=size, axes=x_axes)
        wf = jnp.fft.fftn(wd, s=size, axes=w_axes)

    # 4. Grouped contraction over channels in the frequency domain.
    yf = _grouped_product(xf, wf, groups, precision)

    # 5. Back, crop the VALID part (conv index p + span - 1), stride.
    if real:
        y = jnp.fft.irfftn(yf, s=size, axes=x_axes)
    else:
        y = jnp.fft.ifftn(yf, s=size, axes=x_axes)
    start = [0] + [k - 1 for k in span] + [0]
    limit = [y.shape[0]]
    limit += [k - 1 + (o - 1) * s + 1 for k, o, s in zip(span, out, stride)]
    limit += [y.shape[-1]]
    y = lax.slice(y, start, limit, [1, *stride, 1])
    return _finish(y.astype(compute), acc_dtype, rounded)


def _finish(y, acc_dtype, rounded):
    if not rounded:
        return y.astype(acc_dtype)
    # Round to the nearest integer; go through the widest integer type so an
    # overflowing result wraps around like the exact algorithms' sums do.
    widest = jax.dtypes.canonicalize_dtype(np.int64)
    return jnp.round(y).astype(widest).astype(acc_dtype)
