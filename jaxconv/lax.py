"""Drop-in mirror of ``jax.lax``'s convolution API, built without XLA's conv.

``from jaxconv import lax as jl`` can replace ``jax.lax`` wherever its five
convolution functions are used (including as the ``conv_general_dilated``
argument of ``flax.linen.Conv`` and ``flax.nnx.Conv``): same signatures, same
defaults, same output shapes and dtypes, the same exception types for invalid
arguments, and values equal within floating-point tolerance.  Each function
adds one keyword-only argument, ``algorithm`` (``"auto"``, ``"direct"``,
``"patches"``, ``"taps"``, ...; see ``jaxconv.algorithms``).

Documented deviation: where ``jax.lax.conv_transpose`` checks the operand
ranks with an ``assert`` (``AssertionError``), jaxconv raises ``ValueError``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax as _lax

from ._args import check_dtypes, static_dtype
from ._canonical import pad_and_dilate
from ._primitive import conv_primitive
from ._taps import tap_offsets, tap_slice, valid_out_size
from .algorithms.plan import check_algorithm
from .algorithms.profile import Profile, current_profile

ConvDimensionNumbers = _lax.ConvDimensionNumbers

__all__ = [
    "ConvDimensionNumbers",
    "conv",
    "conv_dimension_numbers",
    "conv_general_dilated",
    "conv_general_dilated_patches",
    "conv_transpose",
    "conv_with_general_padding",
]


def conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers):
    """Convert ``dimension_numbers`` to ``ConvDimensionNumbers`` (as jax.lax).

    Example:
      >>> dn = conv_dimension_numbers((1, 5, 5, 3), (3, 3, 3, 8),
      ...                             ("NHWC", "HWIO", "NHWC"))
      >>> dn.lhs_spec, dn.rhs_spec
      ((0, 3, 1, 2), (3, 2, 0, 1))
    """
    return _lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)


# --------------------------------------------------------------------------
# Argument checks mirroring jax.lax's (same exception types, similar text).
# --------------------------------------------------------------------------


def _check_ints(name, values, n, *, minimum):
    values = tuple(values)
    if len(values) != n:
        raise ValueError(
            f"`{name}` (={values}) must have one entry per spatial dimension "
            f"({n})."
        )
    try:
        values = tuple(operator.index(v) for v in values)
    except TypeError as e:
        raise TypeError(f"`{name}` (={values}) must be integers.") from e
    if any(v < minimum for v in values):
        if name.endswith("dilation"):
            # jax.lax: "All dilations must be positive".
            raise TypeError(f"All dilations must be positive, got `{name}`={values}.")
        raise ValueError(f"`{name}` (={values}) must be positive integers.")
    return values


def _check_shapes(lhs_shape, rhs_shape, dn, feature_group_count, batch_group_count):
    """jax.lax's shape rule checks, in the same order with the same types."""
    if len(lhs_shape) != len(rhs_shape):
        raise ValueError(
            "conv_general_dilated lhs and rhs must have the same number of "
            f"dimensions, but got {lhs_shape} and {rhs_shape}."
        )
    for name, count in (("feature_group_count", feature_group_count),
                        ("batch_group_count", batch_group_count)):
        if operator.index(count) <= 0:
            raise ValueError(f"`{name}` (={count}) must be a positive integer.")
    c = lhs_shape[dn.lhs_spec[1]]
    n = lhs_shape[dn.lhs_spec[0]]
    i, o = rhs_shape[dn.rhs_spec[1]], rhs_shape[dn.rhs_spec[0]]
    if c % feature_group_count:
        raise ValueError(
            f"`feature_group_count` (={feature_group_count}) must divide the lhs "
            f"feature dimension size (={c})."
        )
    if c // feature_group_count != i:
        raise ValueError(
            f"The lhs feature dimension size (={c}) divided by "
            f"`feature_group_count` (={feature_group_count}) must equal the rhs "
            f"input feature dimension size (={i})."
        )
    if o % feature_group_count:
        raise ValueError(
            f"The rhs output feature dimension size (={o}) must be a multiple of "
            f"`feature_group_count` (={feature_group_count})."
        )
    if batch_group_count > 1 and n % batch_group_count:
        raise ValueError(
            f"`batch_group_count` (={batch_group_count}) must divide the lhs batch "
            f"dimension size (={n})."
        )
    if o % batch_group_count:
        raise ValueError(
            f"The rhs output feature dimension size (={o}) must be a multiple of "
            f"`batch_group_count` (={batch_group_count})."
        )
    if batch_group_count > 1 and feature_group_count > 1:
        raise ValueError(
            "At most one of batch_group_count and feature_group_count may be > 1, "
            f"got batch_group_count={batch_group_count} and "
            f"feature_group_count={feature_group_count}."
        )


def _explicit_padding(padding, n):
    try:
        pads = tuple((operator.index(lo), operator.index(hi)) for lo, hi in padding)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"`padding` (={padding!r}): the padding argument to "
            "conv_general_dilated should be a string or a sequence of (low, high) "
            f"pairs, got {padding}"
        ) from e
    if len(pads) != n:
        raise TypeError(
            f"Wrong number of explicit pads for convolution: expected {n}, got "
            f"{len(pads)}."
        )
    return pads


def _prepare(lhs, rhs_shape, window_strides, padding, lhs_dilation, rhs_dilation,
             dimension_numbers):
    """Resolve everything static: dimension numbers, dilations, padding."""
    dn = conv_dimension_numbers(lhs.shape, rhs_shape, dimension_numbers)
    nd = len(lhs.shape) - 2
    if lhs_dilation is None:
        lhs_dilation = (1,) * nd
    elif isinstance(padding, str) and tuple(lhs_dilation) != (1,) * len(lhs_dilation):
        raise ValueError(
            "String padding is not implemented for transposed convolution using "
            "this op. Please either exactly specify the required padding or use "
            "conv_transpose."
        )
    if rhs_dilation is None:
        rhs_dilation = (1,) * nd
    if len(tuple(window_strides)) != len(dn.rhs_spec) - 2:
        raise ValueError(
            "conv_general_dilated window and window_strides must have the same "
            f"number of dimensions, but got {len(dn.rhs_spec) - 2} and "
            f"{len(tuple(window_strides))}"
        )
    strides = _check_ints("window_strides", window_strides, nd, minimum=1)
    lhs_dilation = _check_ints("lhs_dilation", lhs_dilation, nd, minimum=1)
    rhs_dilation = _check_ints("rhs_dilation", rhs_dilation, nd, minimum=1)
    in_spatial = tuple(lhs.shape[a] for a in dn.lhs_spec[2:])
    k_spatial = tuple(rhs_shape[a] for a in dn.rhs_spec[2:])
    if isinstance(padding, str):
        effective = [d * (k - 1) + 1 for k, d in zip(k_spatial, rhs_dilation)]
        pads = tuple(
            tuple(p) for p in _lax.padtype_to_pads(in_spatial, effective, strides,
                                                   padding)
        )
    else:
        pads = _explicit_padding(padding, nd)
    dilated = [(n - 1) * d + 1 if n else 0 for n, d in zip(in_spatial, lhs_dilation)]
    if any(n + lo + hi < 0 for n, (lo, hi) in zip(dilated, pads)):
        raise ValueError(
            "Negative padding is larger than the size of the corresponding "
            f"dimension: got padding={pads} for lhs spatial shape {in_spatial}."
        )
    return dn, strides, pads, lhs_dilation, rhs_dilation


def _lhs_perm(dn) -> tuple[int, ...]:
    """The transpose of ``lhs`` to the canonical ``(N, *S, C)``."""
    return (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1])


def _out_perm(dn) -> tuple[int, ...]:
    """The transpose of the canonical ``(N, *S, O)`` to the output layout."""
    perm = (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1])
    return tuple(int(a) for a in np.argsort(perm))


def _precision(precision):
    """``precision`` made hashable (jax.lax also takes a list pair)."""
    if isinstance(precision, list):
        return tuple(precision)
    return precision


class _ConvPlan(NamedTuple):
    """Everything static about one ``conv_general_dilated`` call (hashable)."""

    lhs_perm: tuple[int, ...]
    rhs_perm: tuple[int, ...]  # rhs to the canonical kernel (*K, I, O)
    flip_kernel: bool  # flip the kernel's spatial axes (transpose_kernel)
    out_perm: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    feature_group_count: int
    batch_group_count: int
    precision: Any
    preferred_element_type: Any  # a scalar type (static_dtype) or None
    algorithm: str
    profile: Profile


# One jitted function for every call, the resolved plan its static argument:
# an eager call compiles once per (shapes, dtypes, plan) and a repeated call
# runs the cached executable.
@functools.partial(jax.jit, static_argnames=("plan",))
def _run_conv(lhs, rhs, plan: _ConvPlan):
    x = jnp.transpose(lhs, plan.lhs_perm)
    w = jnp.transpose(rhs, plan.rhs_perm)
    if plan.flip_kernel:
        w = jnp.flip(w, tuple(range(w.ndim - 2)))
    out = conv_primitive(
        x, w, stride=plan.strides, padding=plan.pads,
        lhs_dilation=plan.lhs_dilation, rhs_dilation=plan.rhs_dilation,
        feature_group_count=plan.feature_group_count,
        batch_group_count=plan.batch_group_count, precision=plan.precision,
        preferred_element_type=plan.preferred_element_type,
        algorithm=plan.algorithm, profile=plan.profile,
    )
    return jnp.transpose(out, plan.out_perm)


def _conv_plan(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
               dimension_numbers, feature_group_count, batch_group_count,
               precision, preferred_element_type, algorithm,
               transpose_kernel=False) -> _ConvPlan:
    """Validate a ``conv_general_dilated`` call (as jax.lax); its static plan.

    With ``transpose_kernel`` the kernel's O and I axes are swapped and its
    spatial axes flipped first (``conv_transpose``), inside the jitted run.
    """
    check_algorithm(algorithm)
    rhs_shape = tuple(rhs.shape)
    dn = conv_dimension_numbers(lhs.shape, rhs_shape, dimension_numbers)
    o_axis, i_axis = dn.rhs_spec[0], dn.rhs_spec[1]
    if transpose_kernel and len(rhs_shape) >= 2:
        swapped = list(rhs_shape)
        swapped[o_axis], swapped[i_axis] = rhs_shape[i_axis], rhs_shape[o_axis]
        rhs_shape = tuple(swapped)
        o_axis, i_axis = i_axis, o_axis
    dn, strides, pads, lhs_dil, rhs_dil = _prepare(
        lhs, rhs_shape, window_strides, padding, lhs_dilation, rhs_dilation, dn,
    )
    _check_shapes(lhs.shape, rhs_shape, dn, feature_group_count, batch_group_count)
    pref = check_dtypes(lhs.dtype, rhs.dtype, preferred_element_type)
    return _ConvPlan(
        lhs_perm=_lhs_perm(dn),
        rhs_perm=(*dn.rhs_spec[2:], i_axis, o_axis),
        flip_kernel=bool(transpose_kernel),
        out_perm=_out_perm(dn),
        strides=strides, pads=pads, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
        feature_group_count=operator.index(feature_group_count),
        batch_group_count=operator.index(batch_group_count),
        precision=_precision(precision),
        preferred_element_type=static_dtype(pref), algorithm=algorithm,
        profile=current_profile(),
    )


def _apply_out_sharding(out, out_sharding):
    if out_sharding is None:
        return out
    return jax.lax.with_sharding_constraint(out, out_sharding)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    out_sharding=None,
    *,
    algorithm: str = "auto",
) -> jax.Array:
    """General N-d convolution with dilation: ``jax.lax.conv_general_dilated``.

    Same contract as ``jax.lax.conv_general_dilated``; computed by one of
    jaxconv's algorithms instead of XLA's ``Conv``.

    Args:
      lhs: input, rank ``n + 2`` (layout from ``dimension_numbers``; default
        ``NC<spatial>``).
      rhs: kernel, rank ``n + 2`` (default ``OI<spatial>``).
      window_strides: ``n`` positive ints.
      padding: ``"SAME"``, ``"SAME_LOWER"``, ``"VALID"`` or ``n`` ``(lo, hi)``
        pairs (negative values crop).
      lhs_dilation: ``None`` or ``n`` positive ints (transposed convolution).
      rhs_dilation: ``None`` or ``n`` positive ints (atrous convolution).
      dimension_numbers: ``None``, ``ConvDimensionNumbers`` or a 3-tuple of
        strings such as ``("NHWC", "HWIO", "NHWC")``.
      feature_group_count: grouped convolution (``C_in`` divisible by it).
      batch_group_count: batch grouping (as in XLA; used by kernel gradients).
      precision: as in ``jax.lax`` (``None``, ``Precision``, string or pair).
      preferred_element_type: accumulation/output dtype (e.g. int8 -> int32).
      out_sharding: optional output sharding, applied as a sharding constraint.
      algorithm: ``"auto"``, ``"direct"``, ``"patches"``, ``"taps"``,
        ``"fft"``, ``"winograd"`` or ``"autotune"`` (see
        ``jaxconv.algorithms``).

    Returns:
      The convolution, rank ``n + 2`` in the layout of ``dimension_numbers[2]``.

    Raises:
      TypeError, ValueError, RuntimeError: as ``jax.lax`` for the same input.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.arange(9, dtype=jnp.float32).reshape(1, 1, 3, 3)
      >>> w = jnp.array([[0, 1], [2, 3]], dtype=jnp.float32).reshape(1, 1, 2, 2)
      >>> conv_general_dilated(x, w, (1, 1), "VALID")[0, 0]
      Array([[19., 25.],
             [37., 43.]], dtype=float32)
    """
    lhs = jnp.asarray(lhs)
    rhs = jnp.asarray(rhs)
    plan = _conv_plan(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, batch_group_count, precision,
        preferred_element_type, algorithm,
    )
    return _apply_out_sharding(_run_conv(lhs, rhs, plan), out_sharding)


def conv(lhs, rhs, window_strides: Sequence[int], padding: str, precision=None,
         preferred_element_type=None, *, algorithm: str = "auto") -> jax.Array:
    """Convenience wrapper around ``conv_general_dilated`` (``jax.lax.conv``).

    Layouts are ``NC<spatial>`` for ``lhs`` and ``OI<spatial>`` for ``rhs``.

    Example:
      >>> import jax.numpy as jnp
      >>> conv(jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3)), (1, 1), "SAME").shape
      (2, 4, 8, 8)
    """
    return conv_general_dilated(
        lhs, rhs, window_strides, padding, precision=precision,
        preferred_element_type=preferred_element_type, algorithm=algorithm,
    )


def conv_with_general_padding(lhs, rhs, window_strides: Sequence[int], padding,
                              lhs_dilation: Sequence[int] | None,
                              rhs_dilation: Sequence[int] | None,
                              precision=None, preferred_element_type=None, *,
                              algorithm: str = "auto") -> jax.Array:
    """Convenience wrapper around ``conv_general_dilated`` (as jax.lax).

    Example:
      >>> import jax.numpy as jnp
      >>> conv_with_general_padding(jnp.ones((1, 1, 5)), jnp.ones((1, 1, 3)), (1,),
      ...                           [(1, 1)], (2,), None).shape
      (1, 1, 9)
    """
    return conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, precision=precision,
        preferred_element_type=preferred_element_type, algorithm=algorithm,
    )


def _conv_transpose_padding(k: int, s: int, padding) -> tuple[int, int]:
    """Before/after padding of one axis of a transposed conv (jax.lax's rule)."""
    if padding == "SAME":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else -(-pad_len // 2)
    elif padding == "VALID":
        pad_len = k + s - 2 + max(k - s, 0)
        pad_a = k - 1
    elif isinstance(padding, tuple):
        pads = tuple(k - p - 1 for p in padding)
        pad_a = pads[0]
        pad_len = sum(pads)
    else:
        raise ValueError(f"Invalid padding mode: {padding}")
    return pad_a, pad_len - pad_a


_TRANSPOSE_DEFAULT_DN = {
    2: ("NC", "IO", "NC"),
    3: ("NHC", "HIO", "NHC"),
    4: ("NHWC", "HWIO", "NHWC"),
    5: ("NHWDC", "HWDIO", "NHWDC"),
}


def conv_transpose(lhs, rhs, strides: Sequence[int], padding,
                   rhs_dilation: Sequence[int] | None = None,
                   dimension_numbers=None, transpose_kernel: bool = False,
                   precision=None, preferred_element_type=None,
                   use_consistent_padding: bool = False, *,
                   algorithm: str = "auto") -> jax.Array:
    """N-d transposed convolution, exactly as ``jax.lax.conv_transpose``.

    A fractionally strided convolution: the input is dilated by ``strides``
    and correlated with the kernel.  Default layouts are TensorFlow's
    (``NHWC``, ``HWIO``).  ``padding`` strings (and, with
    ``use_consistent_padding=True``, pairs) are the padding of the forward
    convolution this one transposes; otherwise pairs pad the dilated input.

    Example:
      >>> import jax.numpy as jnp
      >>> conv_transpose(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 3, 5)), (2, 2),
      ...                "SAME").shape
      (1, 8, 8, 5)
    """
    lhs = jnp.asarray(lhs)
    rhs = jnp.asarray(rhs)
    if lhs.ndim != rhs.ndim or lhs.ndim < 2:
        raise ValueError(
            f"`lhs` (ndim={lhs.ndim}) and `rhs` (ndim={rhs.ndim}) must have the "
            "same rank, at least 2."
        )
    ndims = lhs.ndim
    if dimension_numbers is None:
        if ndims not in _TRANSPOSE_DEFAULT_DN:
            raise ValueError("No 4+ dimensional dimension_number defaults.")
        dimension_numbers = _TRANSPOSE_DEFAULT_DN[ndims]
    dn = conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    k_sdims = [rhs.shape[a] for a in dn.rhs_spec[2:]]
    if rhs_dilation is None:
        rhs_dilation = (1,) * (ndims - 2)
    if use_consistent_padding or (isinstance(padding, str)
                                  and padding in {"SAME", "VALID"}):
        effective = [(k - 1) * r + 1 for k, r in zip(k_sdims, rhs_dilation)]
        per_axis = [padding] * len(strides) if isinstance(padding, str) else padding
        pads = tuple(
            _conv_transpose_padding(k, s, p if isinstance(p, str) else tuple(p))
            for k, s, p in zip(effective, strides, per_axis)
        )
    else:
        pads = padding
    # transpose_kernel (flip the spatial axes, swap O and I) is applied
    # inside the jitted run, so that eager calls compile once.
    plan = _conv_plan(
        lhs, rhs, (1,) * (ndims - 2), pads, strides, rhs_dilation, dn, 1, 1,
        precision, preferred_element_type, algorithm,
        transpose_kernel=transpose_kernel,
    )
    return _run_conv(lhs, rhs, plan)


def conv_general_dilated_patches(lhs, filter_shape: Sequence[int],
                                 window_strides: Sequence[int], padding,
                                 lhs_dilation: Sequence[int] | None = None,
                                 rhs_dilation: Sequence[int] | None = None,
                                 dimension_numbers=None, precision=None,
                                 preferred_element_type=None) -> jax.Array:
    """Patches under each window: ``jax.lax.conv_general_dilated_patches``.

    The output feature dimension holds ``C * prod(filter_shape)`` values per
    position, input-channel major and window-position minor (row-major over
    ``filter_shape``), as in jax.lax.  Built by slicing, with no products, so
    ``precision`` has no effect and values are exact.

    Example:
      >>> import jax.numpy as jnp
      >>> conv_general_dilated_patches(jnp.ones((1, 3, 8, 8)), (3, 3), (1, 1),
      ...                              "VALID").shape
      (1, 27, 6, 6)
    """
    del precision  # pure data movement
    lhs = jnp.asarray(lhs)
    filter_shape = tuple(filter_shape)
    dn0 = conv_dimension_numbers(lhs.shape, (1, 1) + filter_shape, dimension_numbers)
    # As in jax.lax, ``filter_shape`` fills the rhs positions that are not
    # O or I, in order.
    rhs_shape = [1] * (len(filter_shape) + 2)
    free = [a for a in range(len(rhs_shape)) if a not in dn0.rhs_spec[:2]]
    for a, k in zip(free, filter_shape):
        rhs_shape[a] = k
    dn, strides, pads, lhs_dil, rhs_dil = _prepare(
        lhs, rhs_shape, window_strides, padding, lhs_dilation, rhs_dilation,
        dn0,
    )
    pref = None
    if preferred_element_type is not None:
        pref = check_dtypes(lhs.dtype, lhs.dtype, preferred_element_type)
    plan = _PatchesPlan(
        lhs_perm=_lhs_perm(dn), pads=pads, lhs_dilation=lhs_dil,
        kernel=tuple(rhs_shape[a] for a in dn.rhs_spec[2:]), strides=strides,
        rhs_dilation=rhs_dil, preferred_element_type=static_dtype(pref),
        out_perm=_out_perm(dn),
    )
    return _run_patches(lhs, plan)


class _PatchesPlan(NamedTuple):
    """Everything static about one ``conv_general_dilated_patches`` call."""

    lhs_perm: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    preferred_element_type: Any  # a scalar type (static_dtype) or None
    out_perm: tuple[int, ...]


@functools.partial(jax.jit, static_argnames=("plan",))
def _run_patches(lhs, plan: _PatchesPlan):
    x = pad_and_dilate(jnp.transpose(lhs, plan.lhs_perm), plan.pads,
                       plan.lhs_dilation)
    kernel, strides, rhs_dil = plan.kernel, plan.strides, plan.rhs_dilation
    out = tuple(
        valid_out_size(n, k, s, d)
        for n, k, s, d in zip(x.shape[1:-1], kernel, strides, rhs_dil)
    )
    t = int(np.prod(kernel, dtype=np.int64))
    dtype = plan.preferred_element_type
    if dtype is None:
        dtype = lhs.dtype
    if 0 in out or 0 in x.shape:
        res = jnp.zeros((x.shape[0], *out, x.shape[-1] * t), dtype)
    else:
        taps = [tap_slice(x, tap, out, strides, rhs_dil) for tap in tap_offsets(kernel)]
        res = jnp.stack(taps, axis=-1)  # (N, *out, C, T): channel-major
        res = res.reshape(*res.shape[:-2], -1).astype(dtype)
    return jnp.transpose(res, plan.out_perm)
