"""The canonical convolution problem and the rewrites into it.

Every convolution in jaxconv — ``jaxconv.lax``, the friendly ops, the layers —
ends up here as

    x: (N, *S, C)  channels-last input
    w: (*K, I, O)  kernel, ``C = feature_group_count * I``
    explicit ``(lo, hi)`` padding, strides, lhs and rhs dilation,
    feature_group_count, batch_group_count

and is rewritten into the *canonical problem* the algorithms solve: a VALID,
strided, rhs-dilated, feature-grouped correlation of a zero-padded input
(``algorithms.problem.Problem``), which is then planned
(``algorithms.plan.plan``) and run (``algorithms.plan.execute``).

* lhs dilation and padding (negative padding crops) are one ``lax.pad`` with
  interior padding, exactly XLA's semantics for ``Conv``;
* batch grouping (XLA: lhs batch ``(B, N/B)``, B-major, output features
  ``(B, O/B)``) is feature grouping after moving ``B`` into the channels;
* plain zero padding (non-negative, no lhs dilation) is left to the
  formulation for ``"auto"``, ``"taps"`` and ``"autotune"``: most apply it
  without a padded copy of the input;
* an lhs-dilated, stride-1 problem (a transposed convolution) stays
  undilated for the sub-pixel plan (``algorithms.polyphase``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .algorithms import autotune, polyphase, xla
from .algorithms.plan import Plan, execute, for_reshaped_result, plan
from .algorithms.problem import Problem
from .algorithms.profile import Profile, current_profile, get_profile

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


def canonical_plan(
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
    profile: str | Profile | None = None,
    reshaped: bool | str = False,
) -> Plan:
    """The plan of one call, from the shapes and dtypes of ``x`` and ``w`` alone.

    ``x`` and ``w`` may be arrays, tracers or ``jax.ShapeDtypeStruct``\\ s.
    The plan's problem says which rewrites :func:`conv_canonical` applies
    first: an lhs-dilated problem (``problem.transposed``) is planned
    undilated; a problem whose ``pads`` are all zero while ``padding`` is
    not (or that has batch groups or lhs dilation) is planned on the
    materialised input.  ``reshaped``: the caller reshapes the result (a
    vmapped conv's folded batch); the plan is then adjusted by
    ``for_reshaped_result`` (:mod:`jaxconv.algorithms.plan`); ``"batch"``:
    the caller splits the batch axis alone and re-poisons a depthwise
    result's border itself (``depthwise.poison_border``).
    """
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    profile = current_profile() if profile is None else get_profile(profile)
    facts = dict(stride=stride, dilation=rhs_dilation, acc_dtype=acc_dtype)
    if algorithm == "xla":
        problem = Problem.of(x, w, groups=feature_group_count, pads=padding,
                             lhs_dilation=lhs_dilation, **facts)
        return Plan("xla", problem, profile, "requested: XLA's own convolution",
                    flops=problem.flops)
    problem = None
    if algorithm in ("auto", "taps", "autotune") and batch_group_count == 1:
        problem = Problem.of(x, w, groups=feature_group_count, pads=padding,
                             lhs_dilation=lhs_dilation, **facts)
        late_pad = not problem.transposed and all(lo >= 0 and hi >= 0
                                                  for lo, hi in padding)
        if not (polyphase.applies(problem) or late_pad):
            problem = None
    if problem is None:
        shape = (*x.shape[:-1], x.shape[-1])
        dilated = [(n - 1) * d + 1 + lo + hi if n else max(0, lo + hi)
                   for n, d, (lo, hi) in zip(shape[1:-1], lhs_dilation, padding)]
        shape = (shape[0] // batch_group_count, *dilated,
                 shape[-1] * batch_group_count)
        groups = batch_group_count if batch_group_count > 1 else feature_group_count
        problem = Problem.of(jax.ShapeDtypeStruct(shape, x.dtype), w, groups=groups,
                             **facts)
    if algorithm == "autotune" and not problem.transposed and not problem.empty:
        chosen = autotune.choose(problem, profile, precision)
    else:
        chosen = plan(problem, profile, algorithm)
    if not reshaped:
        return chosen
    return for_reshaped_result(chosen, deferred=reshaped == "batch")


def planned_input(x, chosen: Plan, *, padding, lhs_dilation, batch_group_count: int):
    """``x`` as ``chosen``'s problem reads it.

    The padding stays with the formulation when the plan carries it;
    otherwise the problem was planned on the materialised input (padded,
    lhs-dilated, batch groups as feature groups), made here.  (A shape may
    not tell: padding ``(1, -1)`` crops one end and pads the other.)
    """
    problem = chosen.problem
    carried = (tuple(map(tuple, padding)) == problem.pads and batch_group_count == 1
               and tuple(lhs_dilation) == problem.lhs_dilation)
    if carried:
        return x
    x = pad_and_dilate(x, padding, lhs_dilation)
    if batch_group_count > 1:
        x = batch_groups_to_feature_groups(x, batch_group_count)
    return x


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
    profile: str | Profile | None = None,
    reshaped: bool | str = False,
):
    """Convolve channels-last ``x (N, *S, C)`` with ``w (*K, I, O)``.

    Arguments must already be validated (``jaxconv.lax`` and the friendly ops
    do that).  ``profile`` (a preset name or ``Profile``; default the active
    one) is what the plan reads; ``reshaped`` as in :func:`canonical_plan`.
    Returns ``(N // batch_group_count, *out, O)`` in
    ``preferred_element_type`` or the input dtype.
    """
    kw = dict(stride=stride, padding=padding, lhs_dilation=lhs_dilation,
              rhs_dilation=rhs_dilation, feature_group_count=feature_group_count,
              batch_group_count=batch_group_count, precision=precision,
              preferred_element_type=preferred_element_type)
    chosen = canonical_plan(x, w, algorithm=algorithm, profile=profile,
                            reshaped=reshaped, **kw)
    record_plan(chosen)
    if chosen.formulation == "xla":
        del kw["feature_group_count"]
        return xla.run(x, w, feature_group_count=feature_group_count, **kw)
    problem = chosen.problem
    out_dtype = np.dtype(preferred_element_type or x.dtype)
    x = planned_input(x, chosen, padding=padding, lhs_dilation=lhs_dilation,
                      batch_group_count=batch_group_count)
    if chosen.formulation == "empty":
        # lax returns an empty (or, with no input features, all-zero) result.
        return jnp.zeros((x.shape[0], *problem.out_shape[1:]), out_dtype)
    res = execute(x, w, chosen, precision)
    if out_dtype == np.bool_:
        return res != 0
    return res.astype(out_dtype)


# ``jaxconv.explain`` collects the plans of the convolutions traced while it
# runs (a list per explain call; None otherwise).
RECORDER: contextvars.ContextVar[list[Plan] | None] = contextvars.ContextVar(
    "jaxconv_recorder", default=None)


def record_plan(chosen: Plan) -> None:
    """Report ``chosen`` to a running ``jaxconv.explain``."""
    log = RECORDER.get()
    if log is not None:
        log.append(chosen)
