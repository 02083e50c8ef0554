"""Pooling: one window-reduction core (:func:`_pool`) under thin front-ends.

Layouts follow the rest of the library: ``channels_last`` x is
``(*batch, *spatial, C)`` and ``channels_first`` x is ``(*batch, C, *spatial)``.
The number of spatial axes is ``len(window_shape)`` (or ``len(output_size)``);
every axis before them (and before the channel axis) is a batch axis, zero or
more.  No reshapes or transposes are needed: the channel axis is just one more
axis the reduction leaves alone.

How a window is reduced: the input is padded (``lax.pad``), and for each spatial
axis in turn (innermost first) the window's taps along that axis are taken as
strided slices (:func:`jaxconv._taps.tap_slice`) and combined pairwise.  Max,
min and sum over a box window are separable, so an ``k1 x k2`` window costs
``k1 + k2`` slices, not ``k1 * k2``; never ``lax.reduce_window``.

Conventions (where the reference libraries differ or say nothing):

* ``window_shape`` (``output_size`` for adaptive pools) given as an int means
  ``x.ndim - 2`` spatial axes: exactly one batch axis, as in PyTorch.  Global
  pools take the same rule unless ``spatial_dims`` says otherwise.
* Integer padding (and ``(lo, hi)`` pairs) behave as PyTorch's ``padding``,
  ``ceil_mode`` included; padding larger than half the window is allowed (PyTorch
  refuses it): a max/min window that holds only padding gives ``-inf``/``+inf``
  (the dtype's extreme for integers), an ``avg_pool(count_include_pad=False)``
  window with no input cell gives ``nan``.
* ``avg_pool`` divides by the number of window cells inside the padded input
  (``count_include_pad=True``) or inside the input (``False``).  That is
  PyTorch's rule, including its ``ceil_mode`` clipping, and for string paddings
  (``"SAME"`` etc.) it equals Flax's ``avg_pool`` (the full window size).
* Max/min pooling route the gradient to the *first* extreme of each window in
  row-major window order, as PyTorch does for ties (``jnp.max`` would split it).
  NaN propagates (the output is NaN when the window holds one).
* dtypes: max/min/sum keep the input dtype (integers included, sums may
  overflow as in ``lax.reduce_window``; ``bool`` sums count as the default
  int).  avg/lp/adaptive-avg promote integers to the default float dtype, as
  ``jnp.mean``.  Complex inputs are accepted by sum/avg pools and refused
  (``TypeError``) by max/min pools.
* ``lp_pool`` is PyTorch's definition, ``(avg_pool(x**p) * prod(window))**(1/p)``
  with ``count_include_pad=True``: the p-norm of each window, except that a
  window clipped by ``ceil_mode`` is scaled up to the full window size, as in
  PyTorch.  Negative inputs with a non-integer ``p`` give NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import shapes
from ._args import (
    _is_sequence,
    check_bool,
    check_data_format,
    check_nonnegative,
    positive_tuple,
)
from ._taps import tap_slice
from ._typing import Padding

__all__ = [
    "max_pool",
    "avg_pool",
    "min_pool",
    "sum_pool",
    "lp_pool",
    "global_max_pool",
    "global_avg_pool",
    "adaptive_avg_pool",
    "adaptive_max_pool",
]

Reducer = Callable[[jax.Array, jax.Array], jax.Array]


# --- layout ---


def _num_spatial(x: jax.Array, size: Any, name: str) -> int:
    """Spatial rank: ``len(size)`` for a sequence, else one batch axis assumed."""
    if _is_sequence(size):
        return len(size)
    if x.ndim < 3:
        raise ValueError(
            f"`{name}` (={size!r}) is an int, so x is taken as (N, *spatial, C) or "
            f"(N, C, *spatial), which needs x.ndim >= 3 (got shape {x.shape}); "
            f"pass a sequence (one entry per spatial axis) instead."
        )
    return x.ndim - 2


def _first_spatial_axis(x: jax.Array, n: int, data_format: str) -> int:
    """Index of the first spatial axis of ``x`` with ``n`` spatial axes."""
    data_format = check_data_format(data_format)
    if x.ndim < n + 1:
        raise ValueError(
            f"x (shape {x.shape}) must have at least {n + 1} axes: {n} spatial "
            f"and a channel axis ({data_format})."
        )
    return x.ndim - n - 1 if data_format == "channels_last" else x.ndim - n


def _broadcastable(a: np.ndarray, ndim: int, first: int) -> np.ndarray:
    """Spatial-shaped ``a`` reshaped to ``ndim`` axes, spatial at ``first``."""
    trailing = ndim - first - a.ndim
    return a.reshape((1,) * first + a.shape + (1,) * trailing)


# --- the core ---


class _Geometry(NamedTuple):
    first: int  # index of the first spatial axis
    spatial: tuple[int, ...]  # input spatial sizes
    window: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]  # user padding, (lo, hi) per axis
    extra: tuple[int, ...]  # right overhang added by ceil_mode
    out: tuple[int, ...]


def _geometry(x, window_shape, *, stride, padding, dilation, ceil_mode, data_format):
    """Validate and resolve every static argument of a pooling call."""
    n = _num_spatial(x, window_shape, "window_shape")
    window = positive_tuple(window_shape, n, "window_shape")
    check_bool(ceil_mode, "ceil_mode")
    first = _first_spatial_axis(x, n, data_format)
    spatial = tuple(x.shape[first : first + n])
    stride = window if stride is None else positive_tuple(stride, n, "stride")
    dilation = positive_tuple(dilation, n, "dilation")
    pads = shapes.resolve_padding(
        padding, spatial, window, stride=stride, dilation=dilation
    )
    out, extra = [], []
    for size, k, s, d, (lo, hi) in zip(spatial, window, stride, dilation, pads):
        span = d * (k - 1) + 1
        if size + lo + hi < span:
            raise ValueError(
                f"`window_shape` (={window_shape!r}) with `dilation` (={d}) spans "
                f"{span} cells, more than the padded input (={size + lo + hi} = "
                f"{size} + padding {(lo, hi)}): the output would be empty."
            )
        o = shapes.pool_output_size(
            size, k, stride=s, padding=(lo, hi), dilation=d, ceil_mode=ceil_mode
        )
        out.append(o)
        extra.append(max(0, (o - 1) * s + span - (size + lo + hi)))
    return _Geometry(
        first, spatial, window, stride, dilation, tuple(pads), tuple(extra),
        tuple(out),
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("g", "reducer", "init", "pad_value"))
def _reduce(x, g: _Geometry, reducer: Reducer, init, pad_value) -> jax.Array:
    """Pad ``x`` and reduce every window of geometry ``g`` with ``reducer``.

    Jitted with every static argument, so eager calls compile once per
    configuration instead of once per slice.
    """
    cfg = [(0, 0, 0)] * x.ndim
    over = [(0, 0, 0)] * x.ndim
    for i, ((lo, hi), e) in enumerate(zip(g.pads, g.extra)):
        cfg[g.first + i] = (lo, hi, 0)
        over[g.first + i] = (0, e, 0)
    y = lax.pad(x, jnp.asarray(pad_value, x.dtype), cfg)
    if any(g.extra):
        y = lax.pad(y, jnp.asarray(init, x.dtype), over)
    # Innermost axis first: a pairwise "first extreme wins" reduction then picks
    # the first extreme in row-major window order (PyTorch's tie-break).
    for i in reversed(range(len(g.window))):
        axis = (g.out[i],), (g.stride[i],), (g.dilation[i],)
        taps = [tap_slice(y, (k,), *axis, g.first + i) for k in range(g.window[i])]
        y = functools.reduce(reducer, taps)
    return y


def _pool(
    x,
    window_shape,
    reducer: Reducer,
    init,
    *,
    stride=None,
    padding="VALID",
    dilation=1,
    ceil_mode=False,
    data_format="channels_last",
    pad_value=None,
) -> jax.Array:
    """Reduce every window of ``x`` with the associative ``reducer``.

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)`` array.
      window_shape: window size, one int per spatial axis (or one int).
      reducer: ``(earlier, later) -> combined``, associative, so that a box
        window can be reduced one axis at a time.
      init: the reducer's identity; fills the ``ceil_mode`` overhang.
      stride, padding, dilation, ceil_mode, data_format: as in :func:`max_pool`.
      pad_value: value of padded cells (default ``init``).

    Returns:
      The reduced windows, ``x``'s layout with the output spatial sizes.
    """
    x = jnp.asarray(x)
    g = _geometry(
        x, window_shape, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=ceil_mode, data_format=data_format,
    )  # fmt: skip
    return _reduce(x, g, reducer, init, init if pad_value is None else pad_value)


# --- reducers ---


def _first_max(a: jax.Array, b: jax.Array) -> jax.Array:
    """``max(a, b)``; ``a`` (the earlier tap) wins ties, NaN propagates."""
    take = b > a
    if jnp.issubdtype(b.dtype, jnp.inexact):
        take = take | jnp.isnan(b)
    return jnp.where(take, b, a)


def _first_min(a: jax.Array, b: jax.Array) -> jax.Array:
    """``min(a, b)``; ``a`` (the earlier tap) wins ties, NaN propagates."""
    take = b < a
    if jnp.issubdtype(b.dtype, jnp.inexact):
        take = take | jnp.isnan(b)
    return jnp.where(take, b, a)


def _identity(dtype, op: str, *, lowest: bool):
    """The identity of max (``lowest=True``) or min for ``dtype``."""
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"`{op}` is not defined for complex inputs (got {dtype}).")
    if dtype == np.bool_:
        return not lowest
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        return info.min if lowest else info.max
    return -np.inf if lowest else np.inf


def _to_inexact(x: jax.Array) -> jax.Array:
    """Integers and bools as the default float dtype (as ``jnp.mean``)."""
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    return x.astype(jnp.result_type(float))


# --- public windowed pools ---

_X_DOC = """x: ``(*batch, *spatial, C)`` (``channels_last``) or
        ``(*batch, C, *spatial)`` (``channels_first``) array."""

_POOL_ARGS_DOC = """window_shape: window size, one int per spatial axis (the length
        sets the number of spatial axes), or one int for ``x.ndim - 2`` spatial
        axes.
      stride: int or one int per axis; ``None`` (default) means the window size.
      padding: ``"VALID"``, ``"SAME"``, ``"SAME_LOWER"``, ``"FULL"``,
        ``"CAUSAL"``, an int, one int per axis, or ``(lo, hi)`` pairs.
      dilation: int or one int per axis: spacing between window cells.
      ceil_mode: round the output size up, as PyTorch's ``ceil_mode``.
      data_format: ``"channels_last"`` or ``"channels_first"``."""

_POOL_RAISES_DOC = """ValueError: for a non-positive window/stride/dilation, an unknown
        ``padding`` or ``data_format``, or an empty output (window larger than
        the padded input)."""


def _doc(f):
    f.__doc__ = f.__doc__.format(x=_X_DOC, args=_POOL_ARGS_DOC, raises=_POOL_RAISES_DOC)
    return f


@_doc
def max_pool(
    x: jax.Array,
    window_shape: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> jax.Array:
    """Maximum over each window; padded cells never win.

    Channels-first with int padding equals ``torch.nn.functional.max_pool{{1,2,3}}d``
    (values and gradients: the gradient goes to the first maximum of each
    window in row-major order).

    Args:
      {x}
      {args}

    Returns:
      Array in ``x``'s layout and dtype with the output spatial sizes
      ``floor((n + lo + hi - dilation*(k-1) - 1) / stride) + 1`` (``ceil`` with
      ``ceil_mode``, see :func:`jaxconv.shapes.pool_output_size`).

    Raises:
      {raises}
      TypeError: for complex ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((8, 32, 32, 3))
      >>> max_pool(x, (2, 2)).shape
      (8, 16, 16, 3)
    """
    x = jnp.asarray(x)
    init = _identity(x.dtype, "max_pool", lowest=True)
    return _pool(
        x, window_shape, _first_max, init, stride=stride, padding=padding,
        dilation=dilation, ceil_mode=ceil_mode, data_format=data_format,
    )  # fmt: skip


@_doc
def min_pool(
    x: jax.Array,
    window_shape: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> jax.Array:
    """Minimum over each window; padded cells never win.

    Equals ``-max_pool(-x, ...)`` for floats (gradient to the first minimum).

    Args:
      {x}
      {args}

    Returns:
      Array in ``x``'s layout and dtype with the pooled spatial sizes.

    Raises:
      {raises}
      TypeError: for complex ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((2, 3, 10))
      >>> min_pool(x, (3,), stride=1, data_format="channels_first").shape
      (2, 3, 8)
    """
    x = jnp.asarray(x)
    init = _identity(x.dtype, "min_pool", lowest=False)
    return _pool(
        x, window_shape, _first_min, init, stride=stride, padding=padding,
        dilation=dilation, ceil_mode=ceil_mode, data_format=data_format,
    )  # fmt: skip


@_doc
def sum_pool(
    x: jax.Array,
    window_shape: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> jax.Array:
    """Sum over each window (padded cells are zeros).

    Args:
      {x}
      {args}

    Returns:
      Array in ``x``'s layout and dtype (``bool`` sums as the default int)
      with the pooled spatial sizes.

    Raises:
      {raises}

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((4, 4, 1), dtype=jnp.int32)
      >>> y = sum_pool(x, (2, 2))
      >>> y.shape, int(y[0, 0, 0])
      ((2, 2, 1), 4)
    """
    x = jnp.asarray(x)
    if x.dtype == np.bool_:
        x = x.astype(jnp.result_type(int))
    return _pool(
        x, window_shape, jnp.add, 0, stride=stride, padding=padding,
        dilation=dilation, ceil_mode=ceil_mode, data_format=data_format,
    )  # fmt: skip


def _window_counts(g: _Geometry, include_pad: bool) -> np.ndarray:
    """Number of cells of each window inside the padded input (or the input).

    Static: one count per axis and output position (windows are boxes, so the
    count is a product), in padded coordinates where the input spans
    ``[lo, lo + n)`` and the padded input ``[0, lo + n + hi)``.
    """
    counts = np.ones((), np.int64)
    for size, k, s, d, (lo, hi), o in zip(
        g.spatial, g.window, g.stride, g.dilation, g.pads, g.out
    ):
        pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d
        if include_pad:
            start, stop = 0, size + lo + hi
        else:
            start, stop = max(lo, 0), min(lo + size, size + lo + hi)
        c = ((pos >= start) & (pos < stop)).sum(axis=1)
        counts = np.multiply.outer(counts, c)
    return counts


@_doc
def avg_pool(
    x: jax.Array,
    window_shape: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    data_format: str = "channels_last",
) -> jax.Array:
    """Mean over each window.

    Channels-first with int padding equals ``torch.nn.functional.avg_pool{{1,2,3}}d``
    (``ceil_mode`` and ``count_include_pad`` included); string paddings equal
    ``flax.linen.avg_pool``.

    Args:
      {x}
      {args}
      count_include_pad: divide by the number of window cells inside the
        padded input (``True``) or inside the input only (``False``).

    Returns:
      Array in ``x``'s layout with the pooled spatial sizes; integer inputs give
      the default float dtype.

    Raises:
      {raises}

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((1, 3, 7, 7))
      >>> avg_pool(x, (3, 3), stride=2, padding=1,
      ...          data_format="channels_first").shape
      (1, 3, 4, 4)
    """
    x = _to_inexact(jnp.asarray(x))
    g = _geometry(
        x, window_shape, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=ceil_mode, data_format=data_format,
    )  # fmt: skip
    return _mean(x, g, check_bool(count_include_pad, "count_include_pad"), 1.0)


@functools.partial(jax.jit, static_argnames=("g", "include_pad", "scale"))
def _mean(x, g: _Geometry, include_pad: bool, scale: float) -> jax.Array:
    """Window sums divided by the window counts, times ``scale``."""
    total = _reduce(x, g, jnp.add, 0, 0)
    counts = _window_counts(g, include_pad) / scale
    counts = _broadcastable(counts, x.ndim, g.first)
    return total / jnp.asarray(counts, total.dtype)


@_doc
def lp_pool(
    x: jax.Array,
    p: float,
    window_shape: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> jax.Array:
    """Power-average pooling, ``(sum over the window of x**p) ** (1/p)``.

    PyTorch's definition, ``(avg_pool(x**p) * prod(window)) ** (1/p)``, so
    channels-first equals ``torch.nn.functional.lp_pool{{1,2,3}}d`` (windows
    clipped by ``ceil_mode`` are scaled to the full window size, as there).

    Args:
      {x}
      p: the power (``norm_type`` in PyTorch), a positive number.
      {args}

    Returns:
      Array in ``x``'s layout with the pooled spatial sizes; integer inputs give
      the default float dtype.

    Raises:
      {raises}
      ValueError: for ``p <= 0``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((2, 9, 4))
      >>> y = lp_pool(x, 2, (3,))
      >>> y.shape, round(float(y[0, 0, 0]) ** 2, 6)
      ((2, 3, 4), 3.0)
    """
    p = float(p)
    if not p > 0:
        raise ValueError(f"`p` (={p!r}) must be a positive number.")
    x = _to_inexact(jnp.asarray(x))
    g = _geometry(
        x, window_shape, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=ceil_mode, data_format=data_format,
    )  # fmt: skip
    return _lp(x, g, p)


@functools.partial(jax.jit, static_argnames=("g", "p"))
def _lp(x, g: _Geometry, p: float) -> jax.Array:
    powered = lax.integer_pow(x, int(p)) if p.is_integer() else jnp.power(x, p)
    mean = _mean(powered, g, True, float(math.prod(g.window)))
    return jnp.power(mean, 1.0 / p)


# --- global and adaptive pools ---


def _spatial_axes(x, spatial_dims, data_format, name="spatial_dims"):
    """Spatial axes of x for global pools (``x.ndim - 2`` by default)."""
    if spatial_dims is None:
        if x.ndim < 2:
            raise ValueError(
                f"x (shape {x.shape}) needs a batch and a channel axis; pass "
                f"`spatial_dims` for other layouts."
            )
        n = x.ndim - 2
    else:
        n = check_nonnegative(spatial_dims, name)
    first = _first_spatial_axis(x, n, data_format)
    return tuple(range(first, first + n))


def _first_max_along(x: jax.Array, axis: int, combine: Reducer, init) -> jax.Array:
    """Reduce ``axis`` to length 1 by halving; the earlier half of a pair wins ties.

    Pairs are adjacent, so every partial result covers a contiguous run and the
    first extreme (in index order) survives, as in a sequential scan.
    """
    while x.shape[axis] > 1:
        if x.shape[axis] % 2:
            cfg = [(0, 0, 0)] * x.ndim
            cfg[axis] = (0, 1, 0)
            x = lax.pad(x, jnp.asarray(init, x.dtype), cfg)
        m = x.shape[axis]
        a = lax.slice_in_dim(x, 0, m, 2, axis)
        b = lax.slice_in_dim(x, 1, m, 2, axis)
        x = combine(a, b)
    return x


def global_max_pool(
    x: jax.Array,
    *,
    data_format: str = "channels_last",
    keepdims: bool = False,
    spatial_dims: int | None = None,
) -> jax.Array:
    """Maximum over all spatial positions (gradient to the first maximum).

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)`` array.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      keepdims: keep the spatial axes with size 1.
      spatial_dims: number of spatial axes; default ``x.ndim - 2`` (one batch
        axis).

    Returns:
      ``(*batch, C)``, or ``x``'s layout with spatial sizes 1 when ``keepdims``.

    Raises:
      ValueError: for a bad ``data_format``/``spatial_dims`` or an empty
        spatial axis.
      TypeError: for complex ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> global_max_pool(jnp.ones((8, 7, 7, 64))).shape
      (8, 64)
    """
    x = jnp.asarray(x)
    axes = _spatial_axes(x, spatial_dims, data_format)
    _check_nonempty(x, axes)
    init = _identity(x.dtype, "global_max_pool", lowest=True)
    return _global_max(x, axes, init, bool(keepdims))


@functools.partial(jax.jit, static_argnames=("axes", "init", "keepdims"))
def _global_max(x, axes: tuple[int, ...], init, keepdims: bool) -> jax.Array:
    for ax in reversed(axes):  # innermost first: row-major first maximum
        x = _first_max_along(x, ax, _first_max, init)
    return x if keepdims else jnp.squeeze(x, axes)


def global_avg_pool(
    x: jax.Array,
    *,
    data_format: str = "channels_last",
    keepdims: bool = False,
    spatial_dims: int | None = None,
) -> jax.Array:
    """Mean over all spatial positions.

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)`` array.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      keepdims: keep the spatial axes with size 1.
      spatial_dims: number of spatial axes; default ``x.ndim - 2`` (one batch
        axis).

    Returns:
      ``(*batch, C)``, or ``x``'s layout with spatial sizes 1 when ``keepdims``;
      integer inputs give the default float dtype.

    Raises:
      ValueError: for a bad ``data_format``/``spatial_dims`` or an empty
        spatial axis.

    Example:
      >>> import jax.numpy as jnp
      >>> global_avg_pool(jnp.ones((8, 64, 7, 7)), data_format="channels_first",
      ...                 keepdims=True).shape
      (8, 64, 1, 1)
    """
    x = jnp.asarray(x)
    axes = _spatial_axes(x, spatial_dims, data_format)
    _check_nonempty(x, axes)
    return jnp.mean(_to_inexact(x), axis=axes, keepdims=keepdims)


def _check_nonempty(x, axes):
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(
            f"x (shape {x.shape}) has an empty spatial axis: nothing to pool."
        )


def _adaptive_geometry(x, output_size, data_format):
    """First spatial axis, input sizes and output sizes of an adaptive pool."""
    n = _num_spatial(x, output_size, "output_size")
    first = _first_spatial_axis(x, n, data_format)
    spatial = tuple(x.shape[first : first + n])
    sizes = list(output_size) if _is_sequence(output_size) else [output_size] * n
    sizes = [s if o is None else o for s, o in zip(spatial, sizes)]
    out = positive_tuple(sizes, n, "output_size")
    _check_nonempty(x, range(first, first + n))
    return first, spatial, out


def _bins(n: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive bins: ``[floor(i*n/out), ceil((i+1)*n/out))``."""
    i = np.arange(out)
    return (i * n) // out, -((-(i + 1) * n) // out)


def adaptive_avg_pool(
    x: jax.Array,
    output_size: int | Sequence[int | None],
    *,
    data_format: str = "channels_last",
) -> jax.Array:
    """Mean over PyTorch's adaptive bins, so the output has ``output_size``.

    Bin ``i`` of an axis of length ``n`` covers ``[floor(i*n/out),
    ceil((i+1)*n/out))``; equals ``torch.nn.functional.adaptive_avg_pool{1,2,3}d``
    for channels-first.  Each axis is one small matrix product (exact sums).

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)`` array.
      output_size: one int (``x.ndim - 2`` spatial axes) or one int per spatial
        axis; ``None`` keeps that axis's size.
      data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
      Array in ``x``'s layout with spatial sizes ``output_size``; integer inputs
      give the default float dtype.

    Raises:
      ValueError: for a non-positive ``output_size``, a bad ``data_format`` or
        an empty spatial axis.

    Example:
      >>> import jax.numpy as jnp
      >>> adaptive_avg_pool(jnp.ones((2, 10, 13, 3)), (4, 5)).shape
      (2, 4, 5, 3)
    """
    x = _to_inexact(jnp.asarray(x))
    first, _, out = _adaptive_geometry(x, output_size, data_format)
    return _adaptive_avg(x, first, out)


@functools.partial(jax.jit, static_argnames=("first", "out"))
def _adaptive_avg(x, first: int, out: tuple[int, ...]) -> jax.Array:
    spatial = x.shape[first : first + len(out)]
    for i, (n, o) in enumerate(zip(spatial, out)):
        start, end = _bins(n, o)
        pos = np.arange(n)
        member = (pos >= start[:, None]) & (pos < end[:, None])  # (o, n)
        ax = first + i
        y = jnp.tensordot(
            x, jnp.asarray(member, x.dtype), axes=((ax,), (1,)),
            precision=lax.Precision.HIGHEST,
        )  # fmt: skip
        count = _broadcastable((end - start).astype(np.float64), x.ndim, x.ndim - 1)
        x = jnp.moveaxis(y / jnp.asarray(count, y.dtype), -1, ax)
    return x


def adaptive_max_pool(
    x: jax.Array,
    output_size: int | Sequence[int | None],
    *,
    data_format: str = "channels_last",
) -> jax.Array:
    """Maximum over PyTorch's adaptive bins, so the output has ``output_size``.

    Equals ``torch.nn.functional.adaptive_max_pool{1,2,3}d`` for channels-first
    (gradient to the first maximum of each bin, row-major).

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)`` array.
      output_size: one int (``x.ndim - 2`` spatial axes) or one int per spatial
        axis; ``None`` keeps that axis's size.
      data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
      Array in ``x``'s layout and dtype with spatial sizes ``output_size``.

    Raises:
      ValueError: for a non-positive ``output_size``, a bad ``data_format`` or
        an empty spatial axis.
      TypeError: for complex ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> adaptive_max_pool(jnp.ones((3, 17)), (5,),
      ...                   data_format="channels_first").shape
      (3, 5)
    """
    x = jnp.asarray(x)
    init = _identity(x.dtype, "adaptive_max_pool", lowest=True)
    first, _, out = _adaptive_geometry(x, output_size, data_format)
    return _adaptive_max(x, first, out, init)


@functools.partial(jax.jit, static_argnames=("first", "out", "init"))
def _adaptive_max(x, first: int, out: tuple[int, ...], init) -> jax.Array:
    spatial = x.shape[first : first + len(out)]
    for i in reversed(range(len(out))):  # innermost first: row-major first max
        n, o, ax = spatial[i], out[i], first + i
        start, end = _bins(n, o)
        width = int((end - start).max())
        # (o, width) indices; cells past a bin's end repeat its first cell, which
        # never beats the first cell itself, so they change neither value nor
        # gradient.
        idx = start[:, None] + np.arange(width)[None, :]
        idx = np.where(idx < end[:, None], idx, start[:, None])
        y = jnp.take(x, jnp.asarray(idx.reshape(-1)), axis=ax)
        y = y.reshape(x.shape[:ax] + (o, width) + x.shape[ax + 1 :])
        y = _first_max_along(y, ax + 1, _first_max, init)
        x = jnp.squeeze(y, ax + 1)
    return x
