"""Friendly convolutions: ``conv``, ``conv1d/2d/3d``, ``conv_transpose``,
``depthwise_conv`` and ``separable_conv``.

Every op here validates its static arguments in Python, rewrites the call into
the canonical problem (channels-last ``x (N, *S, C)``, kernel ``(*K, I, O)``,
explicit ``(lo, hi)`` padding) and hands it to
:func:`jaxconv._canonical.conv_canonical` as one ``jaxconv_conv`` equation
(:mod:`jaxconv._primitive`: ``vmap`` folds into it), jitted with the resolved
configuration as a static argument so that eager calls compile once.

Layouts (``S``: spatial sizes, ``K``: kernel sizes, ``g``: ``groups``):

==================  ===============================  =================================
op                  ``channels_last`` (default)      ``channels_first`` (PyTorch)
==================  ===============================  =================================
x                   ``(*batch, *S, C_in)``           ``(*batch, C_in, *S)``
conv kernel         ``(*K, C_in // g, C_out)``       ``(C_out, C_in // g, *K)``
transposed kernel   ``(*K, C_in, C_out // g)``       ``(C_in, C_out // g, *K)``
depthwise kernel    ``(*K, 1, C_in * M)``            ``(C_in * M, 1, *K)``
pointwise kernel    ``(1, ..., 1, C_mid, C_out)``    ``(C_out, C_mid, 1, ..., 1)``
==================  ===============================  =================================

The number of spatial axes is ``w.ndim - 2``; every axis of ``x`` before the
spatial and channel axes is a batch axis (zero or more), flattened for the
core and restored on the way out.

Conventions (where the reference libraries differ or say nothing):

* ``x`` and ``w`` are promoted to their common dtype (``jnp.result_type``, as
  Flax does; PyTorch would refuse mixed dtypes).  ``preferred_element_type``
  is checked as ``jax.lax`` checks it.
* A kernel needs at least one spatial axis (``w.ndim >= 3``).  A zero-size
  batch gives an empty result; an empty *spatial* output raises
  ``ValueError``, as PyTorch does.
* ``padding_mode`` other than ``"zeros"``: the ``padding`` argument (a string
  included, resolved on the unpadded input) is first turned into ``(lo, hi)``
  pairs, the input is extended with :func:`jaxconv.padding.pad` (negative
  pairs crop first), and the convolution runs ``"VALID"``.  Mixed per-axis
  modes may include ``"zeros"``.  Widths follow PyTorch's limits
  (``"reflect"`` < axis size, ``"circular"`` <= axis size).
* ``conv_transpose`` ``padding="SAME"`` gives exactly ``n * stride`` outputs:
  with ``span = dilation * (k - 1) + 1`` the full transposed output is cropped
  by ``P = span - stride`` cells, ``floor(P / 2)`` at the start and the rest
  at the end — the forward ``"SAME"`` padding of an input of length
  ``n * stride``, so ``conv_transpose(SAME)`` is the adjoint of
  ``conv(SAME)``.  When ``P < 0`` (stride longer than the dilated kernel),
  ``-P`` zero-contributions are appended at the end.  This is the placement
  of ``jax.lax.conv_transpose(..., "SAME", transpose_kernel=True)``, Flax's
  ``ConvTranspose(padding="SAME")`` and Keras.
* ``conv_transpose`` also accepts ``(lo, hi)`` pairs, negative ones included
  (they extend the output); ``output_shape`` together with a non-zero
  ``output_padding`` is a ``ValueError`` (pass one of them).
* ``depthwise_conv`` output channels are ordered ``c * M + m`` (input channel
  major, multiplier minor), as ``jax.lax`` and PyTorch order grouped outputs.
* ``separable_conv`` accepts the pointwise kernel either with ``D`` unit
  spatial axes (Keras / PyTorch) or as a matrix: ``(C_mid, C_out)``
  (channels_last) or ``(C_out, C_mid)`` (channels_first).
  ``preferred_element_type`` applies to both steps.

Transposed-convolution arithmetic: Dumoulin & Visin, "A guide to convolution
arithmetic for deep learning" (arXiv:1603.07285), section 4.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import shapes
from ._args import (
    _is_sequence,
    check_data_format,
    check_dtypes,
    check_positive,
    normalize_padding_string,
    ntuple,
    pad_pairs,
    positive_tuple,
    static_dtype,
)
from ._primitive import conv_primitive
from ._typing import Padding, Size
from .algorithms.plan import check_algorithm
from .algorithms.profile import Profile, current_profile
from .padding import normalize_padding_mode, pad

__all__ = [
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose",
    "depthwise_conv",
    "separable_conv",
]


# --- the static plan and the one jitted runner ---------------------------------


class _Plan(NamedTuple):
    """Everything static about one call, resolved before tracing."""

    channels_first: bool
    nd: int  # spatial rank
    kernel: str  # "conv" or "transpose": how to bring w to (*K, I, O)
    groups: int
    mode_pads: tuple[tuple[int, int], ...] | None  # explicit boundary padding
    modes: tuple[str, ...]
    pads: tuple[tuple[int, int], ...]  # zero padding done by the core
    stride: tuple[int, ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    dtype: Any
    precision: Any
    preferred_element_type: Any  # a scalar type (static_dtype) or None
    algorithm: str
    profile: Profile  # read when the call is planned, not when traced


def _canonical_kernel(w: jax.Array, plan: _Plan) -> jax.Array:
    """The user's kernel as the canonical conv kernel ``(*K, I, O)``."""
    nd = plan.nd
    if plan.channels_first:  # (O, I, *K) or, transposed, (C_in, C_out // g, *K)
        w = jnp.transpose(w, (*range(2, nd + 2), 1, 0) if plan.kernel == "conv"
                          else (*range(2, nd + 2), 0, 1))  # fmt: skip
    if plan.kernel == "conv":
        return w
    # Transposed: w is (*K, C_in, C_out // g); the equivalent conv kernel is
    # flipped and has I/O swapped within each group:
    # W'[k, i, gi * Og + j] = w[flip(k), gi * Ig + i, j].
    kernel, (c_in, og), g = w.shape[:nd], w.shape[nd:], plan.groups
    w = jnp.flip(w, tuple(range(nd)))
    w = w.reshape(*kernel, g, c_in // g, og)
    w = jnp.swapaxes(w, nd, nd + 1)
    return w.reshape(*kernel, c_in // g, g * og)


@functools.partial(jax.jit, static_argnames=("plan",))
def _run(x: jax.Array, w: jax.Array, plan: _Plan) -> jax.Array:
    """Layout in, boundary padding, canonical conv, layout out."""
    nd = plan.nd
    x = x.astype(plan.dtype)
    w = _canonical_kernel(w.astype(plan.dtype), plan)
    if plan.channels_first:
        x = jnp.moveaxis(x, x.ndim - nd - 1, -1)
    batch = x.shape[: x.ndim - nd - 1]
    x = x.reshape(math.prod(batch), *x.shape[len(batch):])
    if plan.mode_pads is not None:
        x = pad(x, plan.mode_pads, mode=plan.modes, axes=tuple(range(1, nd + 1)))
    out = conv_primitive(
        x, w, stride=plan.stride, padding=plan.pads, lhs_dilation=plan.lhs_dilation,
        rhs_dilation=plan.rhs_dilation, feature_group_count=plan.groups,
        precision=plan.precision, preferred_element_type=plan.preferred_element_type,
        algorithm=plan.algorithm, profile=plan.profile,
    )
    out = out.reshape(*batch, *out.shape[1:])
    if plan.channels_first:
        out = jnp.moveaxis(out, -1, len(batch))
    return out


# --- argument checks ------------------------------------------------------------


def _arrays(x, w, *, min_spatial: int = 1):
    x, w = jnp.asarray(x), jnp.asarray(w)
    if w.ndim < min_spatial + 2:
        raise ValueError(
            f"`w` (shape {w.shape}) must have at least {min_spatial + 2} axes: "
            f"the spatial kernel axes and two channel axes."
        )
    nd = w.ndim - 2
    if x.ndim < nd + 1:
        raise ValueError(
            f"`x` (shape {x.shape}) must have at least {nd + 1} axes for a kernel "
            f"with {nd} spatial axes (`w` shape {w.shape}): the spatial axes and "
            f"a channel axis, after zero or more batch axes."
        )
    return x, w, nd


def _split(x, w, nd: int, channels_first: bool, transposed: bool = False):
    """Spatial sizes and channels of ``x``; kernel sizes and channel axes of ``w``."""
    if channels_first:
        c = x.shape[x.ndim - nd - 1]
        spatial = x.shape[x.ndim - nd:]
        kernel = w.shape[2:]
        a, b = w.shape[:2]
        w_in, w_out = (a, b) if transposed else (b, a)
    else:
        c = x.shape[-1]
        spatial = x.shape[x.ndim - nd - 1 : -1]
        kernel = w.shape[:nd]
        w_in, w_out = w.shape[nd:]
    if 0 in kernel:
        raise ValueError(f"`w` (shape {w.shape}) has an empty kernel axis.")
    return tuple(spatial), c, tuple(kernel), w_in, w_out


def _check_groups(groups: Any, c: int, w_in: int, w_out: int, w_shape, transposed):
    g = check_positive(groups, "groups")
    if c % g:
        raise ValueError(f"`groups` (={g}) must divide the input channels (={c}).")
    if transposed:
        if w_in != c:
            raise ValueError(
                f"`w` (shape {w_shape}) has {w_in} input channels, but `x` has "
                f"{c} channels; they must be equal for a transposed convolution."
            )
        return g
    if c // g != w_in:
        raise ValueError(
            f"The input channels (={c}) divided by `groups` (={g}) must equal the "
            f"kernel's input-channel size (={w_in}, `w` shape {w_shape})."
        )
    if w_out % g:
        raise ValueError(
            f"`groups` (={g}) must divide the output channels (={w_out}, `w` shape "
            f"{w_shape})."
        )
    return g


def _dtypes(x, w, preferred_element_type):
    dtype = jnp.result_type(x, w)
    pref = check_dtypes(dtype, dtype, preferred_element_type)
    return np.dtype(dtype), pref


def _precision(precision):
    """``precision`` made hashable (a list pair becomes a tuple)."""
    if isinstance(precision, list):
        return tuple(precision)
    return precision


def _check_not_empty(spatial, kernel, pads, dilation, w_shape):
    for i, (n, k, (lo, hi), d) in enumerate(zip(spatial, kernel, pads, dilation)):
        span = d * (k - 1) + 1
        if n + lo + hi < span:
            raise ValueError(
                f"The kernel (`w` shape {w_shape}) with `dilation` (={d}) spans "
                f"{span} cells on spatial axis {i}, more than the padded input "
                f"(={n + lo + hi} = {n} + padding ({lo}, {hi})): the output would "
                f"be empty."
            )


def _conv_plan(x, w, nd, *, stride, padding, dilation, groups, padding_mode,
               data_format, algorithm, precision, preferred_element_type):
    """Validate a forward conv call; the plan for :func:`_run`."""
    channels_first = check_data_format(data_format) == "channels_first"
    check_algorithm(algorithm)
    spatial, c, kernel, w_in, w_out = _split(x, w, nd, channels_first)
    g = _check_groups(groups, c, w_in, w_out, w.shape, transposed=False)
    strides = positive_tuple(stride, nd, "stride")
    dilations = positive_tuple(dilation, nd, "dilation")
    pads = shapes.resolve_padding(
        padding, spatial, kernel, stride=strides, dilation=dilations
    )
    modes = normalize_padding_mode(padding_mode, nd)
    _check_not_empty(spatial, kernel, pads, dilations, w.shape)
    dtype, pref = _dtypes(x, w, preferred_element_type)
    explicit = any(m != "constant" for m in modes)
    return _Plan(
        channels_first=channels_first, nd=nd, kernel="conv", groups=g,
        mode_pads=pads if explicit else None, modes=modes,
        pads=((0, 0),) * nd if explicit else pads, stride=strides,
        lhs_dilation=(1,) * nd, rhs_dilation=dilations, dtype=dtype,
        precision=_precision(precision),
        preferred_element_type=static_dtype(pref),
        algorithm=algorithm, profile=current_profile(),
    )


# --- public ops ----------------------------------------------------------------


def conv(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: Size = 1,
    padding: Padding = "VALID",
    dilation: Size = 1,
    groups: int = 1,
    padding_mode: str | Sequence[str] = "zeros",
    data_format: str = "channels_last",
    algorithm: str = "auto",
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """N-d convolution (cross-correlation, as in every deep-learning library).

    ``out[..., o] = sum over taps t and channels i of group(o) of
    x_padded[..., p * stride + t * dilation, i] * w[t, i, o]``.

    Args:
      x: input, ``(*batch, *S, C_in)`` (``channels_last``) or
        ``(*batch, C_in, *S)`` (``channels_first``), zero or more batch axes.
      w: kernel, ``(*K, C_in // groups, C_out)`` (``channels_last``, as
        Flax / lax ``HWIO``) or ``(C_out, C_in // groups, *K)``
        (``channels_first``, as PyTorch).  Its rank sets the number of
        spatial axes ``D = w.ndim - 2``.
      stride: an int or ``D`` ints.
      padding: ``"VALID"``, ``"SAME"``, ``"SAME_LOWER"``, ``"FULL"``,
        ``"CAUSAL"`` (any case), an int (both sides of every axis), ``D``
        ints, or ``D`` ``(lo, hi)`` pairs (negative values crop); see
        :func:`jaxconv.shapes.resolve_padding`.
      dilation: kernel dilation, an int or ``D`` ints.
      groups: feature groups; must divide ``C_in`` and ``C_out``.
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"``,
        ``"circular"`` or ``"symmetric"``, or one per spatial axis.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      algorithm: ``"auto"``, ``"direct"``, ``"patches"``, ``"taps"``,
        ``"fft"``, ``"winograd"`` or ``"autotune"`` (time the exact
        formulations once per shape, cache the fastest; see
        ``jaxconv.algorithms``).
      precision: as in ``jax.lax`` (``None``, a ``Precision`` or a pair).
      preferred_element_type: accumulation and output dtype.

    Returns:
      ``(*batch, *out, C_out)`` or ``(*batch, C_out, *out)``, with ``out``
      from :func:`jaxconv.shapes.conv_output_size` on each axis.

    Raises:
      ValueError: for wrong ranks, mismatched channels, ``groups`` not
        dividing the channels, a bad padding, mode, stride or dilation, or an
        empty output.
      TypeError: for non-integer sizes or an incompatible
        ``preferred_element_type``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((2, 28, 28, 3))
      >>> conv(x, jnp.ones((3, 3, 3, 16)), padding="SAME", stride=2).shape
      (2, 14, 14, 16)
      >>> xt = jnp.ones((2, 3, 28, 28))  # PyTorch layout, reflect padding
      >>> conv(xt, jnp.ones((16, 3, 5, 5)), padding=2, padding_mode="reflect",
      ...      data_format="channels_first").shape
      (2, 16, 28, 28)
    """
    x, w, nd = _arrays(x, w)
    plan = _conv_plan(
        x, w, nd, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode, data_format=data_format, algorithm=algorithm,
        precision=precision, preferred_element_type=preferred_element_type,
    )
    return _run(x, w, plan)


def _conv_nd(n: int, name: str, x, w, kwargs) -> jax.Array:
    w = jnp.asarray(w)
    if w.ndim != n + 2:
        raise ValueError(
            f"`w` (shape {w.shape}) must have {n + 2} axes for {name} ({n} "
            f"spatial, 2 channel), got {w.ndim}."
        )
    return conv(x, w, **kwargs)


def conv1d(x: jax.Array, w: jax.Array, **kwargs: Any) -> jax.Array:
    """1-D :func:`conv`; ``w`` must have rank 3.

    Takes every keyword argument of :func:`conv`.

    Raises:
      ValueError: if ``w.ndim != 3``, or as :func:`conv`.

    Example:
      >>> import jax.numpy as jnp
      >>> conv1d(jnp.ones((4, 100, 8)), jnp.ones((5, 8, 16)), padding="CAUSAL").shape
      (4, 100, 16)
    """
    return _conv_nd(1, "conv1d", x, w, kwargs)


def conv2d(x: jax.Array, w: jax.Array, **kwargs: Any) -> jax.Array:
    """2-D :func:`conv`; ``w`` must have rank 4.

    Takes every keyword argument of :func:`conv`.

    Raises:
      ValueError: if ``w.ndim != 4``, or as :func:`conv`.

    Example:
      >>> import jax.numpy as jnp
      >>> conv2d(jnp.ones((1, 3, 32, 32)), jnp.ones((8, 3, 3, 3)), padding=1,
      ...        data_format="channels_first").shape
      (1, 8, 32, 32)
    """
    return _conv_nd(2, "conv2d", x, w, kwargs)


def conv3d(x: jax.Array, w: jax.Array, **kwargs: Any) -> jax.Array:
    """3-D :func:`conv`; ``w`` must have rank 5.

    Takes every keyword argument of :func:`conv`.

    Raises:
      ValueError: if ``w.ndim != 5``, or as :func:`conv`.

    Example:
      >>> import jax.numpy as jnp
      >>> conv3d(jnp.ones((8, 16, 16, 2)), jnp.ones((3, 3, 3, 2, 4))).shape
      (6, 14, 14, 4)
    """
    return _conv_nd(3, "conv3d", x, w, kwargs)


# help() and IDEs show conv's full keyword-only signature on the rank-checked ops.
for _fn in (conv1d, conv2d, conv3d):
    _fn.__signature__ = inspect.signature(conv)
del _fn


def _transpose_axis(n, k, s, d, pad_i, op, target, i, output_shape):
    """One axis of a transposed conv: the core's (lo, hi) padding."""
    reach = d * (k - 1)
    try:
        if target is not None:
            op = shapes.solve_output_padding(
                n, k, target, stride=s, padding=pad_i, dilation=d
            )
        shapes.conv_transpose_output_size(
            n, k, stride=s, padding=pad_i, output_padding=op, dilation=d
        )
    except ValueError as err:
        # The shapes error already names the argument at fault; add the axis,
        # and for a solved output_padding, the target that asked for it.
        where = f"spatial axis {i}"
        if target is not None:
            where = f"`output_shape` (={output_shape}) on {where}"
        raise ValueError(f"{where}: {err}") from None
    if pad_i == "SAME":
        # Crop span - s cells: the forward "SAME" padding of length n * s.
        total = reach + 1 - s
        lo = max(total, 0) // 2
        return (reach - lo, reach - (total - lo))
    lo, hi = pad_i
    return (reach - lo, reach - hi + op)


def conv_transpose(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: Size = 1,
    padding: Padding = 0,
    output_padding: Size = 0,
    dilation: Size = 1,
    groups: int = 1,
    output_shape: Sequence[int] | None = None,
    data_format: str = "channels_last",
    algorithm: str = "auto",
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """N-d transposed convolution: PyTorch's ``conv_transpose{1,2,3}d``.

    The adjoint (gradient with respect to the input) of :func:`conv` with the
    same ``stride``, ``padding``, ``dilation`` and ``groups``, computed as a
    convolution of the input dilated by ``stride`` with the flipped kernel,
    padded by ``dilation * (k - 1) - p_lo`` before and ``dilation * (k - 1) -
    p_hi + output_padding`` after (arXiv:1603.07285, section 4).  Each axis
    has ``(n - 1) * stride - p_lo - p_hi + dilation * (k - 1) +
    output_padding + 1`` outputs.

    Args:
      x: input, ``(*batch, *S, C_in)`` or ``(*batch, C_in, *S)``.
      w: kernel, ``(*K, C_in, C_out // groups)`` (``channels_last``) or
        ``(C_in, C_out // groups, *K)`` (``channels_first``, PyTorch's
        ``ConvTranspose`` weight).  ``D = w.ndim - 2`` spatial axes.
      stride: the forward conv's stride, an int or ``D`` ints.
      padding: the forward conv's padding: an int, ``D`` ints, ``D`` ``(lo,
        hi)`` pairs, ``"VALID"`` (= 0) or ``"SAME"`` (output exactly
        ``n * stride``; the split is described in the module docstring).
      output_padding: cells added at the end of each axis, an int or ``D``
        ints with ``0 <= output_padding < max(stride, dilation)``.
      dilation: kernel dilation, an int or ``D`` ints.
      groups: feature groups; must divide ``C_in``.
      output_shape: the wanted spatial output sizes (``D`` ints); solves for
        ``output_padding`` (then leave ``output_padding`` at 0).
      data_format: ``"channels_last"`` or ``"channels_first"``.
      algorithm: as in :func:`conv`.
      precision: as in ``jax.lax``.
      preferred_element_type: accumulation and output dtype.

    Returns:
      ``(*batch, *out, C_out)`` or ``(*batch, C_out, *out)``.

    Raises:
      ValueError: for wrong ranks or channels, an ``output_padding`` out of
        bounds, an unreachable ``output_shape``, or an empty output.
      TypeError: for non-integer sizes.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((1, 16, 16, 64))
      >>> conv_transpose(x, jnp.ones((4, 4, 64, 32)), stride=2, padding=1).shape
      (1, 32, 32, 32)
      >>> conv_transpose(jnp.ones((1, 8, 7)), jnp.ones((8, 4, 3)), stride=2,
      ...                padding=1, output_shape=(14,),
      ...                data_format="channels_first").shape
      (1, 4, 14)
    """
    x, w, nd = _arrays(x, w)
    channels_first = check_data_format(data_format) == "channels_first"
    check_algorithm(algorithm)
    spatial, c, kernel, w_in, w_out = _split(x, w, nd, channels_first, True)
    g = _check_groups(groups, c, w_in, w_out, w.shape, transposed=True)
    if 0 in spatial:
        raise ValueError(
            f"`x` (shape {x.shape}) has an empty spatial axis; a transposed "
            f"convolution needs at least one input cell per axis."
        )
    strides = positive_tuple(stride, nd, "stride")
    dilations = positive_tuple(dilation, nd, "dilation")
    if isinstance(padding, str):
        mode = normalize_padding_string(padding, ("VALID", "SAME"))
        per_axis = ((0, 0) if mode == "VALID" else "SAME",) * nd
    else:
        per_axis = pad_pairs(padding, nd)
    ops = ntuple(output_padding, nd, "output_padding")
    targets = (None,) * nd
    if output_shape is not None:
        if any(ops):
            raise ValueError(
                f"`output_padding` (={output_padding!r}) must be 0 when "
                f"`output_shape` (={output_shape!r}) is given: pass one of them."
            )
        if not _is_sequence(output_shape):
            raise TypeError(
                f"`output_shape` (={output_shape!r}) must be a sequence of {nd} "
                f"ints (the spatial output sizes)."
            )
        targets = ntuple(output_shape, nd, "output_shape")
    pads = tuple(
        _transpose_axis(n, k, s, d, p, op, t, i, output_shape)
        for i, (n, k, s, d, p, op, t) in enumerate(
            zip(spatial, kernel, strides, dilations, per_axis, ops, targets)
        )
    )
    dtype, pref = _dtypes(x, w, preferred_element_type)
    plan = _Plan(
        channels_first=channels_first, nd=nd, kernel="transpose", groups=g,
        mode_pads=None, modes=("constant",) * nd, pads=pads, stride=(1,) * nd,
        lhs_dilation=strides, rhs_dilation=dilations, dtype=dtype,
        precision=_precision(precision),
        preferred_element_type=static_dtype(pref),
        algorithm=algorithm, profile=current_profile(),
    )
    return _run(x, w, plan)


def depthwise_conv(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: Size = 1,
    padding: Padding = "VALID",
    dilation: Size = 1,
    padding_mode: str | Sequence[str] = "zeros",
    data_format: str = "channels_last",
    algorithm: str = "auto",
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """Depthwise convolution: every input channel convolved on its own.

    :func:`conv` with ``groups = C_in``; each channel gets ``M`` filters
    (the channel multiplier, read from the kernel), output channel
    ``c * M + m`` being filter ``m`` of input channel ``c``.

    Args:
      x: input, ``(*batch, *S, C_in)`` or ``(*batch, C_in, *S)``.
      w: kernel, ``(*K, 1, C_in * M)`` (``channels_last``, as lax / Flax
        ``HWIO`` with ``feature_group_count = C_in``) or ``(C_in * M, 1, *K)``
        (``channels_first``, PyTorch's ``Conv(groups=C_in)`` weight).
      stride: as in :func:`conv`.
      padding: as in :func:`conv`.
      dilation: as in :func:`conv`.
      padding_mode: as in :func:`conv`.
      data_format: as in :func:`conv`.
      algorithm: as in :func:`conv`.
      precision: as in :func:`conv`.
      preferred_element_type: as in :func:`conv`.

    Returns:
      ``(*batch, *out, C_in * M)`` or ``(*batch, C_in * M, *out)``.

    Raises:
      ValueError: if the kernel's input-channel axis is not 1 or its output
        channels are not a multiple of ``C_in``; otherwise as :func:`conv`.

    Example:
      >>> import jax.numpy as jnp
      >>> depthwise_conv(jnp.ones((2, 32, 32, 8)), jnp.ones((3, 3, 1, 16)),
      ...                padding="SAME").shape
      (2, 32, 32, 16)
    """
    x, w, nd = _arrays(x, w)
    channels_first = check_data_format(data_format) == "channels_first"
    _, c, _, w_in, w_out = _split(x, w, nd, channels_first)
    if w_in != 1 or c == 0 or w_out % c:
        layout = "(C_in * M, 1, *K)" if channels_first else "(*K, 1, C_in * M)"
        raise ValueError(
            f"`w` (shape {w.shape}) must be a depthwise kernel {layout} for "
            f"`x` with C_in={c} channels: input-channel axis 1 and a multiple "
            f"of C_in output channels."
        )
    return conv(
        x, w, stride=stride, padding=padding, dilation=dilation, groups=c,
        padding_mode=padding_mode, data_format=data_format, algorithm=algorithm,
        precision=precision, preferred_element_type=preferred_element_type,
    )


def separable_conv(
    x: jax.Array,
    w_depthwise: jax.Array,
    w_pointwise: jax.Array,
    *,
    stride: Size = 1,
    padding: Padding = "VALID",
    dilation: Size = 1,
    padding_mode: str | Sequence[str] = "zeros",
    data_format: str = "channels_last",
    algorithm: str = "auto",
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """Depthwise-separable convolution: a depthwise conv, then a 1x1 conv.

    ``stride``, ``padding``, ``dilation`` and ``padding_mode`` apply to the
    depthwise step; the pointwise step mixes channels at every position.

    Args:
      x: input, ``(*batch, *S, C_in)`` or ``(*batch, C_in, *S)``.
      w_depthwise: as ``w`` of :func:`depthwise_conv`; gives
        ``C_mid = C_in * M`` channels.
      w_pointwise: ``(1, ..., 1, C_mid, C_out)`` (``channels_last``) or
        ``(C_out, C_mid, 1, ..., 1)`` (``channels_first``) with ``D`` unit
        spatial axes, or the matrix alone: ``(C_mid, C_out)`` /
        ``(C_out, C_mid)``.
      stride: as in :func:`conv` (the depthwise step).
      padding: as in :func:`conv` (the depthwise step).
      dilation: as in :func:`conv` (the depthwise step).
      padding_mode: as in :func:`conv` (the depthwise step).
      data_format: as in :func:`conv` (both steps).
      algorithm: as in :func:`conv` (both steps).
      precision: as in :func:`conv` (both steps).
      preferred_element_type: as in :func:`conv` (both steps).

    Returns:
      ``(*batch, *out, C_out)`` or ``(*batch, C_out, *out)``.

    Raises:
      ValueError: for a pointwise kernel that is not 1x1 or whose channels do
        not match; otherwise as :func:`depthwise_conv`.

    Example:
      >>> import jax.numpy as jnp
      >>> separable_conv(jnp.ones((1, 32, 32, 8)), jnp.ones((3, 3, 1, 8)),
      ...                jnp.ones((1, 1, 8, 24)), padding="SAME").shape
      (1, 32, 32, 24)
    """
    w_depthwise = jnp.asarray(w_depthwise)
    w_pointwise = jnp.asarray(w_pointwise)
    nd = w_depthwise.ndim - 2
    channels_first = check_data_format(data_format) == "channels_first"
    if w_pointwise.ndim == 2 and nd >= 1:
        w_pointwise = w_pointwise.reshape(
            (*w_pointwise.shape, *(1,) * nd) if channels_first
            else ((1,) * nd + w_pointwise.shape)
        )  # fmt: skip
    unit = w_pointwise.shape[2:] if channels_first else w_pointwise.shape[:-2]
    if w_pointwise.ndim != nd + 2 or any(k != 1 for k in unit):
        layout = "(C_out, C_mid" + ", 1" * nd + ")" if channels_first else (
            "(" + "1, " * nd + "C_mid, C_out)")  # fmt: skip
        raise ValueError(
            f"`w_pointwise` (shape {w_pointwise.shape}) must be a 1x1 kernel "
            f"{layout} (or a matrix) for `w_depthwise` with {nd} spatial axes."
        )
    c_mid = w_depthwise.shape[0] if channels_first else w_depthwise.shape[-1]
    c_pw = w_pointwise.shape[1] if channels_first else w_pointwise.shape[-2]
    if c_pw != c_mid:
        raise ValueError(
            f"`w_pointwise` (shape {w_pointwise.shape}) expects {c_pw} input "
            f"channels, but the depthwise step gives {c_mid} (`w_depthwise` shape "
            f"{w_depthwise.shape})."
        )
    mid = depthwise_conv(
        x, w_depthwise, stride=stride, padding=padding, dilation=dilation,
        padding_mode=padding_mode, data_format=data_format, algorithm=algorithm,
        precision=precision, preferred_element_type=preferred_element_type,
    )
    return conv(
        mid, w_pointwise, data_format=data_format, algorithm=algorithm,
        precision=precision, preferred_element_type=preferred_element_type,
    )
