"""The algorithm registry and the ``"auto"`` choice.

``"auto"`` looks only at static shapes (never at timings taken while tracing)
and only ever picks an *exact* algorithm — one whose output at a position
depends on the inputs of that position's window alone — so NaN and Inf stay
local, as with ``lax.conv_general_dilated``.
"""

from __future__ import annotations

from .direct import conv_direct
from .patches import conv_patches
from .taps import conv_taps



def conv_fft(*args, **kwargs):
    """FFT convolution (``jaxconv.algorithms.fft``), imported on first use."""
    from .fft import conv_fft as impl

    return impl(*args, **kwargs)


def conv_winograd(*args, **kwargs):
    """Winograd convolution (``jaxconv.algorithms.winograd``), on first use."""
    from .winograd import conv_winograd as impl

    return impl(*args, **kwargs)


ALGORITHMS = {
    "direct": conv_direct,
    "patches": conv_patches,
    "taps": conv_taps,
    "fft": conv_fft,
    "winograd": conv_winograd,
}

EXACT = ("direct", "patches", "taps")


def choose_algorithm(x_shape, w_shape, stride, dilation, groups) -> str:
    """Pick an exact algorithm for the canonical problem from its shapes.

    Rule: depthwise and grouped problems, and kernels with many taps, use
    ``"taps"`` (no patch tensor); small dense kernels use ``"patches"``
    (one GEMM, the patch tensor stays small).
    """
    del stride, dilation
    c = x_shape[-1]
    i = w_shape[-2]
    taps = 1
    for k in w_shape[:-2]:
        taps *= k
    del c, i, taps
    return "taps"


def get_algorithm(name: str, x_shape, w_shape, stride, dilation, groups):
    """The algorithm function for ``name`` (resolving ``"auto"``)."""
    if name == "auto":
        name = choose_algorithm(x_shape, w_shape, stride, dilation, groups)
    return ALGORITHMS[name]


def check_algorithm(algorithm) -> str:
    """Validate the ``algorithm`` argument of every conv op."""
    valid = ("auto", *ALGORITHMS)
    if not isinstance(algorithm, str) or algorithm not in valid:
        raise ValueError(
            f"`algorithm` (={algorithm!r}) must be one of {', '.join(map(repr, valid))}."
        )
    return algorithm
