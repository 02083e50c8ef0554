"""The longest 1-D depthwise kernels by FFT, behind a finiteness guard.

A 1-D depthwise correlation with ``K`` taps costs ``O(L K)`` per channel
exactly (the depthwise loop, or the blocked Toeplitz GEMMs of
``toeplitz.py``) and ``O(L log L)`` as a product of transforms
(:func:`~jaxconv.algorithms.fft.conv_fft`).  From a few hundred taps the
transform wins by a wide margin (measured on a 2-core Intel Xeon, float32,
``SAME``: ``8192 x 32`` with 512 / 1024 taps 2.6x / 4.0x faster than the
block-Hankel GEMMs, ``8 x 2048 x 64`` 2.3x / 3.3x; below 512 taps not on
every shape: a ``65536 x 16`` signal ran 0.56-0.70x at 128-256 taps;
BENCHMARKS.md).

The transform is not exact in the sense of the other formulations: every
output carries rounding error of order ``eps log2(L)`` times the *whole*
signal's magnitude rather than its own window's (normwise, against the
largest output, it stays within 2x of lax's direct sum on the accuracy
grid; see docs/guarantees.md), and one NaN or Inf anywhere would reach every output.
So it runs only when every input and weight is finite (``lax.cond``); with
a non-finite value the exact depthwise loop runs instead, and NaN/Inf stay
in the windows that hold them.  Only profiles that allow conditionals use
it (``cpu``); the branch-free profiles keep the Toeplitz GEMMs.
"""

from __future__ import annotations

import jax
import numpy as np

from ._common import pad_spatial
from .depthwise import run as run_depthwise
from .fft import conv_fft
from .guards import finite_or
from .toeplitz import is_1d_depthwise_correlation


def applies(problem, profile) -> bool:
    """1-D, depthwise with multiplier 1, stride 1, undilated, real floating
    operands of 32 or 64 bits, and at least ``profile.fft_min_taps`` taps."""
    p = problem
    real = all(np.issubdtype(np.dtype(d), np.floating) and np.dtype(d).itemsize >= 4
               for d in (p.dtype, p.w_dtype, p.acc_dtype))
    return (real and is_1d_depthwise_correlation(p)
            and p.taps >= profile.fft_min_taps)


def run(x, w, plan, precision):
    """Depthwise 1-D correlation ``x (N, P, C)``, ``w (K, 1, C)`` by FFT.

    ``x`` is unpadded; the exact depthwise plan ``plan.inner[0]`` runs
    instead when ``x`` or ``w`` holds a NaN or Inf.
    """
    p = plan.problem
    # Both branches rematerialised: a linearised ``lax.cond`` would keep the
    # residuals of both (the spectra and the padded input); with checkpoints
    # they are ``x`` and ``w`` themselves.
    fast = jax.checkpoint(lambda x, w: conv_fft(
        pad_spatial(x, p.pads), w, stride=p.stride, dilation=p.dilation,
        groups=p.groups, precision=precision, acc_dtype=p.acc_dtype))
    safe = jax.checkpoint(lambda x, w: run_depthwise(x, w, plan.inner[0], precision))
    return finite_or((x, w), lambda: fast(x, w), lambda: safe(x, w))
