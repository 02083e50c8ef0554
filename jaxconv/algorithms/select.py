"""The algorithm registry and the ``"auto"`` choice (``"autotune"``, the
measured alternative, lives in ``autotune.py``).

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

    Rule (static shapes only; the measurements behind it are in
    BENCHMARKS.md): always ``"taps"``, whose ``taps_variant`` then picks the
    formulation from the shapes:

    ======================================  =============================
    problem                                 formulation
    ======================================  =============================
    depthwise (I == 1), 1-D, stride 1,      ``toeplitz`` (blocked GEMMs;
    >= 64 taps, multiplier 1                one block-Hankel GEMM per
                                            channel from 512 taps)
    other depthwise                         ``depthwise`` (elementwise)
    1x1 kernel                              ``dot`` (one GEMM)
    grouped, I <= 16                        ``grouped`` (fused FMAs)
    dense, rank >= 2, I > 4, stride 1,      ``alltaps`` (one GEMM;
    all-tap GEMM output <= 2 MiB, or        row blocks when big)
    2-D with I <= 64
    dense, rank >= 2, otherwise             ``im2col`` (row blocks)
    dense 1-D, stride 2+, I < 128           ``s2d`` (space-to-depth)
    dense 1-D, stride 1                     ``alltaps`` (small), ``rows``
                                            (I <= 32), ``wide`` (I > 32)
    anything else                           ``taps`` (per-tap GEMMs; scan
                                            beyond 64 taps)
    ======================================  =============================

    lhs-dilated (transposed) convolutions are first split into sub-pixel
    phases (``_canonical._polyphase``), each one GEMM of the real inputs
    against the phase's taps (contributions zero-padded, never the input).
    ``im2col`` runs in blocks of output rows (``taps._row_blocks``), each
    block zero-padded as it is read; the blocks take up to 80% of the
    2x (input + output) memory bound, between 512 KiB and 2 MiB.
    The full-im2col ``"patches"`` algorithm is never chosen (``im2col`` is
    its row-blocked form).  ``"fft"`` and ``"winograd"`` are never chosen:
    they mix neighbouring inputs, so a NaN/Inf would not stay local.
    """
    del x_shape, w_shape, stride, dilation, groups
    return "taps"


def get_algorithm(name: str, x_shape, w_shape, stride, dilation, groups):
    """The algorithm function for ``name`` (resolving ``"auto"``; the
    ``"autotune"`` choice is made in ``_canonical.conv_canonical``)."""
    if name in ("auto", "autotune"):
        name = choose_algorithm(x_shape, w_shape, stride, dilation, groups)
    return ALGORITHMS[name]


def check_algorithm(algorithm) -> str:
    """Validate the ``algorithm`` argument of every conv op."""
    valid = ("auto", *ALGORITHMS, "autotune")
    if not isinstance(algorithm, str) or algorithm not in valid:
        raise ValueError(
            f"`algorithm` (={algorithm!r}) must be one of "
            f"{', '.join(map(repr, valid))}."
        )
    return algorithm
