"""The canonical convolution problem and the rewrites into it.

Every convolution in jaxconv — ``jaxconv.lax``, the friendly ops, the layers —
ends up here as

    x: (N, *S, C)  channels-last input
    w: (*K, I, O)  kernel, ``C = feature_group_count * I``
    explicit ``(lo, hi)`` padding, strides, lhs and rhs dilation,
    feature_group_count, batch_group_count

and is rewritten into the *canonical problem* the algorithms solve: a VALID,
strided, rhs-dilated, feature-grouped correlation of an already padded input.

* lhs dilation and padding (negative padding crops) are one ``lax.pad`` with
  interior padding, exactly XLA's semantics for ``Conv``;
* batch grouping (XLA: lhs batch ``(B, N/B)``, B-major, output features
  ``(B, O/B)``) is feature grouping after moving ``B`` into the channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from ._taps import valid_out_size
from .algorithms.select import ALGORITHMS, choose_algorithm
from .algorithms.taps import taps_variant

_LOW_PRECISION = (np.dtype(jnp.bfloat16), np.dtype(jnp.float16))


def accumulation_dtype(dtype, preferred_element_type):
    """The dtype products are summed in.

    ``preferred_element_type`` when given; float32 for 16-bit floats (as
    XLA's CPU and GPU convolutions do); int32 for bool; else the input dtype.
    """
    if preferred_element_type is not None:
        return np.dtype(preferred_element_type)
    dtype = np.dtype(dtype)
    if dtype in _LOW_PRECISION:
        return np.dtype(np.float32)
    if dtype == np.bool_:
        return np.dtype(np.int32)
    return dtype


def pad_and_dilate(x, padding: Sequence[tuple[int, int]], lhs_dilation: Sequence[int]):
    """Dilate the spatial axes of ``x (N, *S, C)`` and pad them (lo/hi may be < 0)."""
    if all(p == (0, 0) for p in padding) and all(d == 1 for d in lhs_dilation):
        return x
    config = [(0, 0, 0)]
    config += [(lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)]
    config += [(0, 0, 0)]
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def batch_groups_to_feature_groups(x, batch_group_count: int):
    """``(B*N, *S, C) -> (N, *S, B*C)``: XLA's batch groups as feature groups."""
    b = batch_group_count
    n = x.shape[0] // b
    x = x.reshape(b, n, *x.shape[1:])
    x = jnp.moveaxis(x, 0, -2)
    return x.reshape(*x.shape[:-2], b * x.shape[-1])


def conv_canonical(
    x,
    w,
    *,
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    algorithm: str = "auto",
):
    """Convolve channels-last ``x (N, *S, C)`` with ``w (*K, I, O)``.

    Arguments must already be validated (``jaxconv.lax`` and the friendly ops
    do that).  Returns ``(N // batch_group_count, *out, O)`` in
    ``preferred_element_type`` or the input dtype.
    """
    out_dtype = np.dtype(preferred_element_type or x.dtype)
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    x = pad_and_dilate(x, padding, lhs_dilation)
    groups = feature_group_count
    if batch_group_count > 1:
        x = batch_groups_to_feature_groups(x, batch_group_count)
        groups = batch_group_count
    kernel = w.shape[:-2]
    out = tuple(
        valid_out_size(n, k, s, d)
        for n, k, s, d in zip(x.shape[1:-1], kernel, stride, rhs_dilation)
    )
    shape = (x.shape[0], *out, w.shape[-1])
    if 0 in shape or w.shape[-2] == 0:
        # lax returns an empty (or, with no input features, all-zero) result.
        return jnp.zeros(shape, out_dtype)
    if algorithm == "auto":
        algorithm = choose_algorithm(x.shape, w.shape, stride, rhs_dilation, groups)
    if _PLAN_LOG is not None:
        name = algorithm
        if algorithm == "taps":
            name += "/" + taps_variant(x.shape, w.shape, stride, rhs_dilation, groups)
        _PLAN_LOG.append(name)
    fn = ALGORITHMS[algorithm]
    res = fn(
        x, w, stride=tuple(stride), dilation=tuple(rhs_dilation), groups=groups,
        precision=precision, acc_dtype=acc_dtype,
    )
    if out_dtype == np.bool_:
        return res != 0
    return res.astype(out_dtype)


_PLAN_LOG: list[str] | None = None


def describe_plan(f, *args) -> str:
    """The algorithm(s) ``"auto"`` resolves to when tracing ``f(*args)``."""
    global _PLAN_LOG
    _PLAN_LOG = []
    try:
        import jax

        jax.eval_shape(f, *args)
        names = list(dict.fromkeys(_PLAN_LOG))
    finally:
        _PLAN_LOG = None
    return "+".join(names) or "auto"
