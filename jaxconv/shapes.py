"""Shape inference for convolutions and pooling: pure Python ints, no arrays.

Every output size in the library comes from :func:`conv_output_size`, the one
place the sliding-window formula is written out; everything else (strings such
as ``"SAME"``, transposed convolutions, pooling with ``ceil_mode``, the
solvers) rewrites its problem into that function's arguments.  Transposed-conv
arithmetic follows Dumoulin & Visin, "A guide to convolution arithmetic for
deep learning" (arXiv:1603.07285), and PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, NamedTuple

from ._args import (
    _is_sequence,
    as_int,
    check_nonnegative,
    check_positive,
    normalize_padding_string,
    ntuple,
    pad_pairs,
    positive_tuple,
    shape_tuple,
)
from ._typing import Padding, Size

__all__ = [
    "ReceptiveField",
    "conv_flops",
    "conv_output_shape",
    "conv_output_size",
    "conv_params",
    "conv_transpose_output_shape",
    "conv_transpose_output_size",
    "pool_output_shape",
    "pool_output_size",
    "receptive_field",
    "resolve_padding",
    "solve_output_padding",
    "solve_padding",
]


def _string_pair(mode: str, n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(lo, hi) for an upper-cased padding string on one axis."""
    reach = d * (k - 1)  # the window spans reach + 1 input positions
    if mode == "VALID":
        return (0, 0)
    if mode in ("SAME", "SAME_LOWER"):
        # jax.lax.padtype_to_pads: out = ceil(n / s), the extra cell at the end
        # for SAME and at the start for SAME_LOWER.
        out = -(-n // s)
        total = max((out - 1) * s + reach + 1 - n, 0)
        small, big = total // 2, total - total // 2
        return (small, big) if mode == "SAME" else (big, small)
    if mode == "FULL":
        return (reach, reach)
    return (reach, 0)  # CAUSAL


def _padding_pair(padding: Padding, n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """One axis' padding: an int (both sides), a (lo, hi) pair, or a string."""
    if isinstance(padding, str):
        return _string_pair(normalize_padding_string(padding), n, k, s, d)
    return _int_or_pair(padding, "an integer, a (lo, hi) pair or a string")


def _int_or_pair(padding, expected: str) -> tuple[int, int]:
    """One axis' numeric padding: an int (both sides) or a (lo, hi) pair.

    ``expected`` lists every form the caller accepts, for the error message.
    """
    if _is_sequence(padding):
        pair = tuple(padding)
        if len(pair) != 2:
            raise ValueError(
                f"`padding` (={padding!r}) must be {expected}, got a sequence of "
                f"length {len(pair)}."
            )
        return (as_int(pair[0], "padding"), as_int(pair[1], "padding"))
    return pad_pairs(padding, 1)[0]


def resolve_padding(
    padding: Padding,
    in_shape: Sequence[int],
    kernel_shape: Size,
    *,
    stride: Size = 1,
    dilation: Size = 1,
) -> tuple[tuple[int, int], ...]:
    """Every padding form of the library as explicit ``(lo, hi)`` pairs.

    Args:
      padding: one of

        - ``"VALID"``: no padding;
        - ``"SAME"``: ``jax.lax``'s rule, output size ``ceil(n / stride)``;
          total ``max((out - 1) * s + d * (k - 1) + 1 - n, 0)``, ``lo =
          total // 2``, the extra cell at the end;
        - ``"SAME_LOWER"``: as ``"SAME"`` with the extra cell at the start;
        - ``"FULL"``: ``d * (k - 1)`` on both sides (every partial overlap);
        - ``"CAUSAL"``: ``d * (k - 1)`` before, 0 after;
        - an int: the same padding on both sides of every axis;
        - a sequence with one entry per axis, each an int (both sides) or a
          ``(lo, hi)`` pair. Pairs may be negative (they crop, as in
          ``jax.lax``); plain ints must be non-negative.

        Strings are case-insensitive.
      in_shape: spatial input sizes ``(n_1, ..., n_D)``.
      kernel_shape: spatial kernel sizes, an int or ``D`` ints.
      stride: an int or ``D`` ints.
      dilation: kernel dilation, an int or ``D`` ints.

    Returns:
      A tuple of ``D`` ``(lo, hi)`` pairs of Python ints.

    Raises:
      ValueError: for an unknown string, a wrong-length sequence, or a
        non-positive kernel size, stride or dilation.
      TypeError: for a padding that is neither a string, an int nor a sequence.

    Example:
      >>> resolve_padding("SAME", (5, 6), (3, 4))
      ((1, 1), (1, 2))
      >>> resolve_padding("causal", (10,), (3,), dilation=2)
      ((4, 0),)
      >>> resolve_padding([1, (2, -1)], (8, 8), 3)
      ((1, 1), (2, -1))
    """
    shape = shape_tuple(in_shape, "in_shape")
    nd = len(shape)
    kernel = positive_tuple(kernel_shape, nd, "kernel_shape")
    strides = positive_tuple(stride, nd, "stride")
    dilations = positive_tuple(dilation, nd, "dilation")
    if isinstance(padding, str):
        mode = normalize_padding_string(padding)
        return tuple(
            _string_pair(mode, n, k, s, d)
            for n, k, s, d in zip(shape, kernel, strides, dilations)
        )
    return pad_pairs(padding, nd)  # TypeError for floats, None, ...


def conv_output_size(
    n: int, k: int, *, stride: int = 1, padding: Padding = 0, dilation: int = 1
) -> int:
    """Output length of a convolution (or any sliding window) along one axis.

    The one formula of the library::

        out = floor((n + p_lo + p_hi - d * (k - 1) - 1) / s) + 1

    i.e. the number of window positions, ``s`` apart, where a window spanning
    ``d * (k - 1) + 1`` cells fits inside the padded axis.  For ``d = 1`` and
    ``p = p_lo + p_hi`` it is ``floor((n - k + p + s) / s)``.

    Args:
      n: input length (>= 0).
      k: kernel (window) size (>= 1).
      stride: window step ``s`` (>= 1).
      padding: an int (each side), a ``(lo, hi)`` pair (may be negative), or a
        padding string as in :func:`resolve_padding`.
      dilation: kernel dilation ``d`` (>= 1).

    Returns:
      The output length, a positive int.

    Raises:
      ValueError: for non-positive ``k``, ``stride`` or ``dilation``, negative
        ``n``, or when the window does not fit the padded input (empty output).

    Example:
      >>> conv_output_size(28, 3, padding=1)
      28
      >>> conv_output_size(224, 7, stride=2, padding=3)
      112
      >>> conv_output_size(10, 3, stride=3, padding="SAME")
      4
    """
    n = check_nonnegative(n, "n")
    k = check_positive(k, "k")
    s = check_positive(stride, "stride")
    d = check_positive(dilation, "dilation")
    lo, hi = _padding_pair(padding, n, k, s, d)
    padded = n + lo + hi
    out = (padded - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ValueError(
            f"`k` (={k}) with `dilation` (={d}) spans {d * (k - 1) + 1} cells, "
            f"more than the padded input (={padded}: n={n}, padding=({lo}, {hi})): "
            f"this gives an empty output."
        )
    return out


def _per_axis_sizes(fn, shape, kernel, names, **per_axis):
    """Apply a 1-D size function per axis, naming the axis in errors."""
    out = []
    for i, (n, k) in enumerate(zip(shape, kernel)):
        kwargs = {key: value[i] for key, value in per_axis.items()}
        try:
            out.append(fn(n, k, **kwargs))
        except ValueError as err:
            raise ValueError(
                f"`{names[0]}` (={names[1]!r}) on spatial axis {i}: {err}"
            ) from None
    return tuple(out)


def conv_output_shape(
    in_shape: Sequence[int],
    kernel_shape: Size,
    *,
    stride: Size = 1,
    padding: Padding = 0,
    dilation: Size = 1,
    lhs_dilation: Size = 1,
) -> tuple[int, ...]:
    """Spatial output shape of an N-d convolution.

    Each axis is :func:`conv_output_size` of the (lhs-dilated) input: with
    ``lhs_dilation`` ``l`` the input of length ``n`` first becomes
    ``(n - 1) * l + 1`` (``0`` stays ``0``), as in
    ``jax.lax.conv_general_dilated``.  String paddings are resolved on the
    dilated size (``jax.lax`` itself rejects strings with ``lhs_dilation``).

    Args:
      in_shape: spatial input sizes ``(n_1, ..., n_D)``.
      kernel_shape: spatial kernel sizes, an int or ``D`` ints.
      stride: an int or ``D`` ints.
      padding: any form accepted by :func:`resolve_padding`.
      dilation: kernel (rhs) dilation, an int or ``D`` ints.
      lhs_dilation: input dilation, an int or ``D`` ints.

    Returns:
      A tuple of ``D`` positive ints.

    Raises:
      ValueError: for invalid arguments, or an empty output on some axis.

    Example:
      >>> conv_output_shape((32, 32), (3, 3), stride=2, padding="SAME")
      (16, 16)
      >>> conv_output_shape((5,), (3,), padding=[(2, 2)], lhs_dilation=2)
      (11,)
    """
    shape = shape_tuple(in_shape, "in_shape")
    nd = len(shape)
    kernel = positive_tuple(kernel_shape, nd, "kernel_shape")
    lhs = positive_tuple(lhs_dilation, nd, "lhs_dilation")
    dilated = tuple((n - 1) * ld + 1 if n > 0 else 0 for n, ld in zip(shape, lhs))
    pads = resolve_padding(padding, dilated, kernel, stride=stride, dilation=dilation)
    return _per_axis_sizes(
        conv_output_size,
        dilated,
        kernel,
        ("kernel_shape", kernel_shape),
        stride=positive_tuple(stride, nd, "stride"),
        padding=pads,
        dilation=positive_tuple(dilation, nd, "dilation"),
    )


def _transpose_pair(padding: Padding) -> tuple[int, int] | str:
    """Transposed-conv padding on one axis: (lo, hi), or "SAME"."""
    if isinstance(padding, str):
        mode = normalize_padding_string(padding, ("VALID", "SAME"))
        return (0, 0) if mode == "VALID" else "SAME"
    return _int_or_pair(padding, 'an integer, a (lo, hi) pair, "VALID" or "SAME"')


def conv_transpose_output_size(
    n: int,
    k: int,
    *,
    stride: int = 1,
    padding: Padding = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length of a transposed convolution along one axis (PyTorch's rule).

    ``(n - 1) * s - p_lo - p_hi + d * (k - 1) + output_padding + 1`` (PyTorch's
    ``(n - 1) * s - 2 * p + ...`` for an int ``p``).  Computed, as the op
    computes it, as the forward conv of the input dilated by ``s`` and padded
    with ``d * (k - 1) - p_lo`` before and ``d * (k - 1) - p_hi +
    output_padding`` after (arXiv:1603.07285, section 4).

    Args:
      n: input length (>= 1).
      k: kernel size (>= 1).
      stride: the forward conv's stride ``s``.
      padding: the forward conv's padding: an int (each side), a ``(lo, hi)``
        pair, ``"VALID"`` (= 0) or ``"SAME"`` (output ``n * s``; then
        ``output_padding`` must be 0).
      output_padding: extra cells at the end, ``0 <= output_padding <
        max(stride, dilation)`` (PyTorch's bound).
      dilation: kernel dilation ``d``.

    Returns:
      The output length, a positive int.

    Raises:
      ValueError: for invalid arguments or an empty output.

    Example:
      >>> conv_transpose_output_size(16, 4, stride=2, padding=1)
      32
      >>> conv_transpose_output_size(7, 3, stride=2, padding=1, output_padding=1)
      14
      >>> conv_transpose_output_size(7, 3, stride=2, padding="SAME")
      14
    """
    n = check_positive(n, "n")
    k = check_positive(k, "k")
    s = check_positive(stride, "stride")
    d = check_positive(dilation, "dilation")
    op = as_int(output_padding, "output_padding")
    if not 0 <= op < max(s, d):
        raise ValueError(
            f"`output_padding` (={output_padding!r}) must satisfy 0 <= "
            f"output_padding < max(stride, dilation) (={max(s, d)})."
        )
    pair = _transpose_pair(padding)
    if pair == "SAME":
        if op != 0:
            raise ValueError(
                f"`output_padding` (={output_padding!r}) must be 0 with "
                f'`padding` (="SAME"), which fixes the output size to n * stride.'
            )
        return n * s
    lo, hi = pair
    reach = d * (k - 1)
    try:
        return conv_output_size(
            (n - 1) * s + 1, k, padding=(reach - lo, reach - hi + op), dilation=d
        )
    except ValueError:
        raise ValueError(
            f"`padding` (={padding!r}) is too large for n={n}, k={k}, stride={s}, "
            f"dilation={d}: this gives an empty output."
        ) from None


def conv_transpose_output_shape(
    in_shape: Sequence[int],
    kernel_shape: Size,
    *,
    stride: Size = 1,
    padding: Padding = 0,
    output_padding: Size = 0,
    dilation: Size = 1,
) -> tuple[int, ...]:
    """Spatial output shape of an N-d transposed convolution.

    :func:`conv_transpose_output_size` on every axis.

    Args:
      in_shape: spatial input sizes ``(n_1, ..., n_D)``.
      kernel_shape: spatial kernel sizes, an int or ``D`` ints.
      stride: an int or ``D`` ints.
      padding: ``"VALID"``, ``"SAME"``, an int, or one int or ``(lo, hi)`` pair
        per axis.
      output_padding: an int or ``D`` ints.
      dilation: an int or ``D`` ints.

    Returns:
      A tuple of ``D`` positive ints.

    Example:
      >>> conv_transpose_output_shape((16, 16), 4, stride=2, padding=1)
      (32, 32)
    """
    shape = shape_tuple(in_shape, "in_shape")
    nd = len(shape)
    kernel = positive_tuple(kernel_shape, nd, "kernel_shape")
    if isinstance(padding, str):
        pads = (padding,) * nd
    else:
        pads = pad_pairs(padding, nd)
    return _per_axis_sizes(
        conv_transpose_output_size,
        shape,
        kernel,
        ("kernel_shape", kernel_shape),
        stride=positive_tuple(stride, nd, "stride"),
        padding=pads,
        output_padding=ntuple(output_padding, nd, "output_padding"),
        dilation=positive_tuple(dilation, nd, "dilation"),
    )


def pool_output_size(
    n: int,
    window: int,
    *,
    stride: int | None = None,
    padding: Padding = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of a pooling window along one axis (PyTorch's rule).

    Without ``ceil_mode`` this is :func:`conv_output_size`.  With it the
    division rounds up (``p_hi`` grows by ``stride - 1``), and, as in PyTorch,
    the last window must start inside the input or the left padding: if
    ``(out - 1) * s >= n + p_lo`` the last window is dropped.  (Only a window
    that overhangs the padded input is dropped; this equals PyTorch wherever
    PyTorch accepts the padding, ``p <= window // 2``, and keeps ``ceil_mode``
    from ever giving fewer windows than floor mode for wider padding.)

    Args:
      n: input length.
      window: window size (>= 1).
      stride: window step; ``None`` means ``window``.
      padding: an int (each side), a ``(lo, hi)`` pair, or a padding string.
      dilation: window dilation.
      ceil_mode: round the number of windows up instead of down.

    Returns:
      The output length, a positive int.

    Raises:
      ValueError: for invalid arguments or an empty output.

    Example:
      >>> pool_output_size(7, 2)
      3
      >>> pool_output_size(7, 2, ceil_mode=True)
      4
      >>> pool_output_size(5, 2, stride=2, padding=1, ceil_mode=True)  # not 4
      3
    """
    window = check_positive(window, "window")
    s = window if stride is None else check_positive(stride, "stride")
    n = check_nonnegative(n, "n")
    d = check_positive(dilation, "dilation")
    lo, hi = _padding_pair(padding, n, window, s, d)
    if not ceil_mode:
        try:
            return conv_output_size(n, window, stride=s, padding=(lo, hi), dilation=d)
        except ValueError as err:
            raise ValueError(str(err).replace("`k`", "`window`", 1)) from None
    try:
        out = conv_output_size(
            n, window, stride=s, padding=(lo, hi + s - 1), dilation=d
        )
    except ValueError:
        out = 0
    last = (out - 1) * s  # start of the last window, in padded coordinates
    if out >= 1 and last + d * (window - 1) + 1 > n + lo + hi and last >= n + lo:
        out -= 1  # an overhanging window may not start in the right padding
    if out < 1:
        raise ValueError(
            f"`window` (={window}) with `dilation` (={d}) does not fit the padded "
            f"input (n={n}, padding=({lo}, {hi})), even with `ceil_mode`: this "
            f"gives an empty output."
        )
    return out


def pool_output_shape(
    in_shape: Sequence[int],
    window_shape: Size,
    *,
    stride: Size | None = None,
    padding: Padding = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
) -> tuple[int, ...]:
    """Spatial output shape of an N-d pooling: :func:`pool_output_size` per axis.

    Args:
      in_shape: spatial input sizes ``(n_1, ..., n_D)``.
      window_shape: an int or ``D`` ints.
      stride: ``None`` (= ``window_shape``), an int or ``D`` ints.
      padding: any form accepted by :func:`resolve_padding`.
      dilation: an int or ``D`` ints.
      ceil_mode: round the number of windows up (PyTorch's rule).

    Returns:
      A tuple of ``D`` positive ints.

    Example:
      >>> pool_output_shape((7, 8), 2, ceil_mode=True)
      (4, 4)
    """
    shape = shape_tuple(in_shape, "in_shape")
    nd = len(shape)
    window = positive_tuple(window_shape, nd, "window_shape")
    strides = window if stride is None else positive_tuple(stride, nd, "stride")
    dilations = positive_tuple(dilation, nd, "dilation")
    pads = resolve_padding(padding, shape, window, stride=strides, dilation=dilations)
    return _per_axis_sizes(
        lambda n, w, **kw: pool_output_size(n, w, ceil_mode=ceil_mode, **kw),
        shape,
        window,
        ("window_shape", window_shape),
        stride=strides,
        padding=pads,
        dilation=dilations,
    )


def solve_padding(
    n: int, k: int, target: int, *, stride: int = 1, dilation: int = 1
) -> tuple[int, int]:
    """The smallest non-negative padding giving output length ``target``.

    The total is split like ``"SAME"``: ``lo = total // 2``, the extra cell at
    the end.  Only padding (never cropping) is considered.

    Args:
      n: input length.
      k: kernel size.
      target: wanted output length (>= 1).
      stride: window step.
      dilation: kernel dilation.

    Returns:
      ``(lo, hi)`` with :func:`conv_output_size` ``== target``.

    Raises:
      ValueError: if ``target`` is smaller than the unpadded output.

    Example:
      >>> solve_padding(28, 3, 28)
      (1, 1)
      >>> solve_padding(224, 7, 112, stride=2)
      (2, 3)
    """
    n = check_nonnegative(n, "n")
    k = check_positive(k, "k")
    target = check_positive(target, "target")
    s = check_positive(stride, "stride")
    d = check_positive(dilation, "dilation")
    # Smallest total with (n + total - d * (k - 1) - 1) // s >= target - 1.
    total = max(0, (target - 1) * s + d * (k - 1) + 1 - n)
    pads = (total // 2, total - total // 2)
    got = conv_output_size(n, k, stride=s, padding=pads, dilation=d)
    if got != target:
        raise ValueError(
            f"`target` (={target}) is unreachable: without padding the output is "
            f"already {got} (n={n}, k={k}, stride={s}, dilation={d}); only "
            f"non-negative padding is considered."
        )
    return pads


def solve_output_padding(
    n: int,
    k: int,
    target: int,
    *,
    stride: int = 1,
    padding: Padding = 0,
    dilation: int = 1,
) -> int:
    """The ``output_padding`` that makes a transposed conv output ``target``.

    Args:
      n: input length.
      k: kernel size.
      target: wanted output length.
      stride: the forward conv's stride.
      padding: as in :func:`conv_transpose_output_size`.
      dilation: kernel dilation.

    Returns:
      ``output_padding`` with ``0 <= output_padding < max(stride, dilation)``.

    Raises:
      ValueError: if no ``output_padding`` within PyTorch's bound reaches
        ``target``.

    Example:
      >>> solve_output_padding(7, 3, 14, stride=2, padding=1)
      1
    """
    target = check_positive(target, "target")
    base = conv_transpose_output_size(
        n, k, stride=stride, padding=padding, dilation=dilation
    )
    s = check_positive(stride, "stride")
    d = check_positive(dilation, "dilation")
    same = isinstance(padding, str) and padding.upper() == "SAME"
    top = base if same else base + max(s, d) - 1
    if not base <= target <= top:
        raise ValueError(
            f"`target` (={target}) is unreachable: a transposed conv with n={n}, "
            f"k={k}, stride={s}, padding={padding!r}, dilation={d} gives sizes "
            f"{base}..{top} (0 <= output_padding < max(stride, dilation))."
        )
    return target - base


class ReceptiveField(NamedTuple):
    """Receptive field of one layer's outputs, in input coordinates.

    Attributes:
      size: how many input cells one output sees (int, or a tuple per axis).
      jump: input distance between neighbouring outputs (product of strides).
      start: input coordinate of the centre of the first output's window;
        input cell ``i`` has centre ``i``, so ``start`` is an int, or a float
        ending in ``.5`` for even kernels (a tuple per axis when per-axis).
    """

    size: Any
    jump: Any
    start: Any


def _number(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def receptive_field(layers: Sequence[Sequence[Any]]) -> list[ReceptiveField]:
    """Receptive field after each layer of a stack of convolutions / pools.

    The standard recurrence, from ``size = 1, jump = 1, start = 0``::

        size_l  = size_{l-1} + d * (k - 1) * jump_{l-1}
        jump_l  = jump_{l-1} * s
        start_l = start_{l-1} + (d * (k - 1) / 2 - pad_lo) * jump_{l-1}

    Args:
      layers: one ``(kernel, stride, dilation)`` or ``(kernel, stride,
        dilation, pad_lo)`` per layer (``pad_lo`` defaults to 0); each entry
        an int or a per-axis tuple.  If any entry is a tuple, every result
        field is a tuple with one value per axis.

    Returns:
      A list with one :class:`ReceptiveField` per layer.

    Raises:
      ValueError: for a malformed layer or non-positive kernel/stride/dilation.

    Example:
      >>> receptive_field([(3, 1, 1), (3, 1, 1)])[-1]
      ReceptiveField(size=5, jump=1, start=2)
      >>> receptive_field([(3, 2, 1, 1), (3, 1, 1, 1)])[-1]
      ReceptiveField(size=7, jump=2, start=0)
      >>> receptive_field([((3, 1), 1, 1)])[0].size
      (3, 1)
    """
    if not _is_sequence(layers):
        raise TypeError(
            f"`layers` (={layers!r}) must be a sequence of (kernel, stride, "
            f"dilation[, pad_lo]) tuples."
        )
    checked = []
    nd = None
    for i, layer in enumerate(layers):
        if not _is_sequence(layer) or len(layer) not in (3, 4):
            raise ValueError(
                f"`layers[{i}]` (={layer!r}) must be (kernel, stride, dilation) "
                f"or (kernel, stride, dilation, pad_lo)."
            )
        layer = tuple(layer) + ((0,) if len(layer) == 3 else ())
        for entry in layer:
            if _is_sequence(entry):
                if nd is not None and len(entry) != nd:
                    raise ValueError(
                        f"`layers[{i}]` (={layer[:4]!r}) has per-axis entries of "
                        f"different lengths ({nd} and {len(entry)})."
                    )
                nd = len(entry)
        checked.append(layer)
    axes = 1 if nd is None else nd
    results = []
    size, jump, start = [1] * axes, [1] * axes, [Fraction(0)] * axes
    for i, layer in enumerate(checked):
        try:
            ks = positive_tuple(layer[0], axes, "kernel")
            ss = positive_tuple(layer[1], axes, "stride")
            ds = positive_tuple(layer[2], axes, "dilation")
            ps = ntuple(layer[3], axes, "pad_lo")
        except ValueError as err:
            raise ValueError(f"`layers[{i}]` (={layers[i]!r}): {err}") from None
        for a in range(axes):
            reach = ds[a] * (ks[a] - 1)
            start[a] += (Fraction(reach, 2) - ps[a]) * jump[a]
            size[a] += reach * jump[a]
            jump[a] *= ss[a]
        if nd is None:
            results.append(ReceptiveField(size[0], jump[0], _number(start[0])))
        else:
            results.append(
                ReceptiveField(tuple(size), tuple(jump), tuple(map(_number, start)))
            )
    return results


def _channels(in_channels: int, out_channels: int, groups: int) -> int:
    """Checked channels per group."""
    c_in = check_positive(in_channels, "in_channels")
    c_out = check_positive(out_channels, "out_channels")
    g = check_positive(groups, "groups")
    if c_in % g:
        raise ValueError(f"`groups` (={g}) must divide `in_channels` (={c_in}).")
    if c_out % g:
        raise ValueError(f"`groups` (={g}) must divide `out_channels` (={c_out}).")
    return c_in // g


def conv_params(
    kernel_shape: Size,
    in_channels: int,
    out_channels: int,
    *,
    groups: int = 1,
    bias: bool = True,
) -> int:
    """Number of parameters of a convolution layer.

    ``prod(kernel_shape) * in_channels / groups * out_channels``, plus
    ``out_channels`` for the bias.

    Args:
      kernel_shape: spatial kernel sizes (an int for 1-D).
      in_channels: input channels.
      out_channels: output channels.
      groups: feature groups; must divide both channel counts.
      bias: count a bias per output channel.

    Returns:
      The parameter count.

    Example:
      >>> conv_params((3, 3), 64, 128)
      73856
      >>> conv_params((3, 3), 32, 32, groups=32, bias=False)
      288
    """
    kernel = (
        shape_tuple(kernel_shape, "kernel_shape", positive=True)
        if _is_sequence(kernel_shape)
        else (check_positive(kernel_shape, "kernel_shape"),)
    )
    per_group = _channels(in_channels, out_channels, groups)
    return math.prod(kernel) * per_group * out_channels + (out_channels if bias else 0)


def conv_flops(
    in_shape: Sequence[int],
    kernel_shape: Size,
    in_channels: int,
    out_channels: int,
    *,
    stride: Size = 1,
    padding: Padding = 0,
    dilation: Size = 1,
    groups: int = 1,
    batch: int = 1,
) -> int:
    """Floating-point operations of a convolution's forward pass.

    Every multiply-add counts as 2 FLOPs; the bias and padded zeros are not
    treated specially (padded cells count, the bias add does not):
    ``2 * batch * prod(out_shape) * out_channels * prod(kernel_shape) *
    in_channels / groups``.

    Args:
      in_shape: spatial input sizes.
      kernel_shape: spatial kernel sizes, an int or one per axis.
      in_channels: input channels.
      out_channels: output channels.
      stride: as in :func:`conv_output_shape`.
      padding: as in :func:`conv_output_shape`.
      dilation: as in :func:`conv_output_shape`.
      groups: feature groups.
      batch: batch size.

    Returns:
      The FLOP count.

    Example:
      >>> conv_flops((56, 56), (3, 3), 64, 64, padding=1)
      231211008
    """
    shape = shape_tuple(in_shape, "in_shape")
    kernel = positive_tuple(kernel_shape, len(shape), "kernel_shape")
    per_group = _channels(in_channels, out_channels, groups)
    b = check_positive(batch, "batch")
    out = conv_output_shape(
        shape, kernel, stride=stride, padding=padding, dilation=dilation
    )
    return 2 * b * math.prod(out) * out_channels * math.prod(kernel) * per_group
