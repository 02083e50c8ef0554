"""The canonical convolution as one JAX primitive, ``jaxconv_conv``.

Every convolution in jaxconv binds this primitive instead of tracing
:func:`jaxconv._canonical.conv_canonical` inline, so that JAX's
transformations see one equation per convolution:

* ``vmap`` runs one batched convolution.  Traced op by op, a vmapped conv
  would give every slice, scan and ``dot_general`` of the chosen formulation
  an extra batch dimension (batched small GEMMs instead of GEMMs over
  batch x space) and the plan chosen for a batch of one would run ``B``
  times side by side.  The batching rule instead folds the vmapped axis into
  the problem (as ``jax.lax``'s conv batching rule does) and the plan is
  chosen for the folded problem.
* ``grad`` and ``jvp`` of any order: the three *roles* of the primitive are
  each bilinear, and their transposes are the other roles (``ad.defbilinear``).
* ``jit``, ``export`` and sharding: the lowering is the traced
  ``conv_canonical`` (``mlir.lower_fun``), i.e. exactly the ops that ran
  before; eager calls compile once per problem (``xla.apply_primitive``).

``jax.custom_batching.custom_vmap`` was the alternative: it batches the
forward, but reverse-mode differentiation through it fails ("Linearization
failed"), and wrapping it in ``custom_vjp`` restores ``grad`` but loses
``jvp`` and second derivatives.

Roles (static parameter ``role``), with ``x (N, *S, C)``, ``w (*K, I, O)``
and ``y = fwd(x, w)``; every other parameter is a ``conv_canonical`` keyword
(``profile`` resolved when the equation is bound, so that the plan does not
depend on when it is lowered):

=========  ===================  ============================================
role       operands -> result   definition
=========  ===================  ============================================
``fwd``    ``(x, w) -> y``      ``conv_canonical(x, w, ...)``
``lhs_t``  ``(ct, w) -> gx``    transpose of ``x -> fwd(x, w)`` applied to
                                ``ct``; ``operand_shape/dtype`` give ``x``'s
``rhs_t``  ``(x, ct) -> gw``    transpose of ``w -> fwd(x, w)`` applied to
                                ``ct``; ``operand_shape/dtype`` give ``w``'s
=========  ===================  ============================================

The transposed roles run ``jax.vjp`` of ``conv_canonical`` (at zeros: the map
is linear), so the custom derivative rules of the formulations are what runs;
except ``lhs_t`` of a stride-1 problem, which is itself a convolution (of
``ct`` with the flipped kernel, :func:`lhs_t_conv_params`) and is planned as
one, and ``rhs_t`` of a dense stride-1 problem whose plan says
``kernel_grad="tap-scan"`` (1-D over a batch, larger 2-D and 3-D layers):
one 2-D GEMM per tap, computed directly (:func:`_direct_kernel_grad`).
A kernel gradient whose transpose would let a non-finite input element at
the border reach taps that never read it (the shifted-sum forms) checks
the border first (:func:`_autodiff_kernel_grad`).
Transposes (``<a, f(b)> = <f^T(a), b>``): ``fwd``: lhs -> ``lhs_t(ct, w)``,
rhs -> ``rhs_t(x, ct)``; ``lhs_t(ct, w)`` with cotangent ``g`` (x-shaped): ct
-> ``fwd(g, w)``, w -> ``rhs_t(g, ct)``; ``rhs_t(x, ct)`` with ``g``
(w-shaped): x -> ``lhs_t(ct, g)``, ct -> ``fwd(x, g)``.

Batching.  A vmapped problem is one canonical problem on *folded* operands,
``fwd_B(x, w) = unfold_y(fwd'(fold_x(x), fold_w(w)))``, where the folds are
reshapes and transposes (``B``: the vmapped size; ``G``: the feature or
batch group count, whichever is > 1):

* ``x`` vmapped: ``B`` joins the batch ``N`` (``B``-inner of the batch groups
  when ``batch_group_count > 1``, as XLA orders them);
* ``w`` vmapped (per-example kernels): ``B`` joins the output features,
  inside each group (``O = (G, B, O/G)``);
* both: with ``batch_group_count == 1`` ``B`` joins the input channels and the
  output features, group-major (``B * G`` feature groups); otherwise ``B``
  joins the batch and the output features (``B * G`` batch groups).

The folded ``fwd`` and ``lhs_t`` equations carry ``reshaped=True`` (their
results are unfolded by a reshape, which changes how a depthwise loop mends
its border: ``plan.for_reshaped_result``), or ``reshaped="batch"`` for a
``fwd`` whose unfold only splits the batch axis (``x`` vmapped alone, with
several examples per vmapped slice): its depthwise border strips are
re-poisoned after the unfold, ``depthwise.poison_border``.  With one example
per slice (a layer written for one image, which drops the unit axis again)
that ``fwd`` carries ``False``, as every other equation and the forward
convolutions that transposed roles differentiate carry ``False``.
The folds are permutations, so the vmap of a transposed role is the same
transposed role on the folded problem between the inverse folds (vmap of a
transpose is the transpose of the vmap): per-example kernel gradients are
one ``rhs_t`` of the grouped problem.  A transposed role whose result is
vmapped only through the *other* operand (``lhs_t`` with only ``w``
vmapped, ``rhs_t`` with only ``x`` vmapped) first broadcasts its unbatched
cotangent.  A vmapped axis of size 0 gives an empty result.  Every
configuration is folded, except per-example kernels over a *symbolic*
vmapped size (``jax.export`` shape polymorphism), where the group count would
be symbolic, and per-example kernel *gradients* (``rhs_t`` with both
operands vmapped) of depthwise problems and of dense kernels with several
taps: their per-example gradient is already a batch of independent
reductions or GEMMs, which the vmapped per-example formulation runs without
the two transposes the fold costs (:func:`_per_example_by_vmap`).  Those
run one example's planned kernel gradient per example: in a loop over the
examples where the profile says ``per_example_loop`` (``cpu``), else vmapped
op by op, side by side; layers of one image per example with few output
positions (depthwise: ``kernel_grad="positions"``; dense:
``profile.per_example_positions_max``) take every example's products in
one fused loop over the positions (``algorithms/positions.py``), and dense
layers of few positions and many channels, transposed ones included, and
grouped layers of small patches, one GEMM per example and tap (or group)
for every example at once (``algorithms/tapgemm.py``,
``plan.per_example_patches``); dense stride-1 layers with few output
channels (transposed ones included), one GEMM per example against the
cotangent's shifted copies, the input's border tap by tap
(``plan.per_example_cotangent``).

Inside ``shard_map`` (manual mesh axes) and under Explicit mesh axes the
convolution is traced inline instead of bound (the equation would have to
type its result's varying axes and sharding, for which JAX has no public
rule), so ``vmap`` there batches the formulation op by op.

Example:
  >>> import jax, jax.numpy as jnp
  >>> x, w = jnp.ones((5, 1, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
  >>> f = lambda x: conv_primitive(x, w, stride=(1, 1), padding=((1, 1), (1, 1)),
  ...                              lhs_dilation=(1, 1), rhs_dilation=(1, 1))
  >>> jax.vmap(f)(x).shape
  (5, 1, 8, 8, 4)
  >>> [e.primitive.name for e in jax.make_jaxpr(jax.vmap(f))(x).eqns
  ...  if e.primitive.name == "jaxconv_conv"]
  ['jaxconv_conv']
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir, xla

from ._canonical import canonical_plan, conv_canonical, planned_input, record_plan
from ._taps import valid_out_size
from .algorithms import dense, depthwise, polyphase, positions, rowscan, tapgemm
from .algorithms._common import pad_spatial
from .algorithms.guards import finite_or, tap_hits
from .algorithms.plan import (
    kernel_grad_spreads,
    per_example_cotangent,
    per_example_grouped_rows,
    per_example_loop,
    per_example_patches,
    per_example_positions,
)
from .algorithms.profile import Profile, current_profile, get_profile

__all__ = ["conv_p", "conv_primitive"]

conv_p = Primitive("jaxconv_conv")


def _hashable(value):
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _static_dtype(dtype):
    # The scalar type: a np.dtype compares equal to None (np.dtype(None) is
    # float64), which would merge cache entries of different equations.
    return None if dtype is None else np.dtype(dtype).type


def conv_primitive(
    x,
    w,
    *,
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    algorithm: str = "auto",
    profile: str | Profile | None = None,
) -> jax.Array:
    """``conv_canonical(x, w, ...)`` as one ``jaxconv_conv`` equation.

    Same arguments and result as :func:`jaxconv._canonical.conv_canonical`
    (already validated by the caller).  The profile (default: the current
    one) is resolved here, at bind time, and travels with the equation, so
    the plan does not depend on when the equation is lowered.
    """
    params = dict(
        stride=tuple(int(s) for s in stride),
        padding=tuple((int(lo), int(hi)) for lo, hi in padding),
        lhs_dilation=tuple(int(d) for d in lhs_dilation),
        rhs_dilation=tuple(int(d) for d in rhs_dilation),
        feature_group_count=int(feature_group_count),
        batch_group_count=int(batch_group_count),
        precision=_hashable(precision),
        preferred_element_type=_static_dtype(preferred_element_type),
        algorithm=algorithm,
        profile=current_profile() if profile is None else get_profile(profile),
        reshaped=False,
    )
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.manual_axes or mesh.explicit_axes:
        # Inside shard_map, or with Explicit mesh axes, the equation would
        # have to type its result's varying axes and sharding, for which
        # JAX has no public rule: trace the formulation inline instead.
        return conv_canonical(x, w, **params)
    return _bind(x, w, "fwd", None, None, params)


def per_example_plan(x, w_shape, w_dtype, params):
    """Per-example kernel gradients of ``x (B, N, ...)`` (role
    ``rhs_t_each``): one example's plan, the parameters each example's
    kernel gradient runs with, and how the examples run: ``"positions"``,
    all at once as sums of products over the output positions, for one
    image per example where
    :func:`jaxconv.algorithms.plan.per_example_positions` says so;
    ``"patches"``, all at once as one GEMM per example and tap
    (:func:`jaxconv.algorithms.plan.per_example_patches`);
    ``"cotangent"``, all at once as one GEMM per example against the
    cotangent's shifted copies, for one image per example where
    :func:`jaxconv.algorithms.plan.per_example_cotangent` says so, all
    three for the
    ``"auto"``, ``"taps"`` and ``"autotune"`` algorithms; ``"loop"``, one
    after another (:func:`jaxconv.algorithms.plan.per_example_loop`), or
    ``"vmap"``, side by side (a symbolic ``B``, under ``jax.export``, is
    vmapped).
    """
    params = {**params, "reshaped": False}
    one = jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
    plan = canonical_plan(one, jax.ShapeDtypeStruct(w_shape, w_dtype), **params)
    b, prof = x.shape[0], params["profile"]
    # All at once only where the library picks the formulation ("direct",
    # "patches", "fft", "winograd" run as asked, example by example).
    ours = params["algorithm"] in ("auto", "taps", "autotune")
    if ours and x.shape[1] == 1 and per_example_positions(plan, prof):
        return plan, params, "positions"
    # (A plan may materialise an lhs dilation: its problem then shows none,
    # but the GEMMs per group need an undilated input.)
    undilated = all(d == 1 for d in params["lhs_dilation"])
    if (ours and params["batch_group_count"] == 1
            and per_example_patches(plan, prof, b)
            and (params["feature_group_count"] == 1 or undilated)):
        return plan, params, "patches"
    # (Or one whose problem carries the lhs dilation: the copies are then
    # strided slices of the cotangent at the undilated input's positions.)
    carried = tuple(params["lhs_dilation"]) == plan.problem.lhs_dilation
    if (ours and x.shape[1] == 1 and params["batch_group_count"] == 1
            and params["feature_group_count"] == 1 and (undilated or carried)
            and per_example_cotangent(plan, prof)):
        return plan, params, "cotangent"
    return plan, params, _one_by_one(plan, b, prof)


def _one_by_one(plan, b, prof) -> str:
    """How the examples run when not all at once: ``"loop"`` (one after
    another, :func:`jaxconv.algorithms.plan.per_example_loop`) or
    ``"vmap"`` (side by side; a symbolic batch is vmapped)."""
    loop = isinstance(b, int) and per_example_loop(plan, b, prof)
    return "loop" if loop else "vmap"


def _bind(a, b, role, operand_shape, operand_dtype, params):
    return conv_p.bind(a, b, role=role, operand_shape=operand_shape,
                       operand_dtype=operand_dtype, **params)


# --- evaluation -------------------------------------------------------------------


def _impl(a, b, *, role, operand_shape, operand_dtype, **params):
    """The traced computation of one role (lowered by ``mlir.lower_fun``)."""
    with jax.named_scope(f"jaxconv_conv_{role}"):
        if role == "rhs_t_each":  # one kernel gradient per example
            plan, params, how = per_example_plan(a, operand_shape, operand_dtype,
                                                 params)

            if how == "patches":
                # One GEMM per example (and tap), every example at once.
                record_plan(plan)
                return tapgemm.kernel_grads(
                    a, b, operand_shape[:-2], params["stride"], params["padding"],
                    params["lhs_dilation"], params["rhs_dilation"],
                    params["precision"], plan.problem.acc_dtype,
                    params["feature_group_count"]).astype(operand_dtype)

            # One image per example (a layer written for one image): its
            # cotangent arrives as a broadcast of (B, *out, O) to
            # (B, 1, *out, O), a layout XLA:CPU copies whole before slicing
            # examples out of it; dropping the unit axis cancels the broadcast.
            unit = a.shape[1] == 1
            if unit:
                a, b = a[:, 0], b[:, 0]

            if how in ("positions", "cotangent"):  # one image per example
                record_plan(plan)
                p = plan.problem
                xa = planned_input(a, plan, padding=params["padding"],
                                   lhs_dilation=params["lhs_dilation"],
                                   batch_group_count=params["batch_group_count"])
            if how == "positions":
                # Few output positions: every example's products in one
                # fused loop.
                return positions.kernel_grads(
                    pad_spatial(xa, p.pads), b, p.kernel, p.stride, p.dilation,
                    p.groups, p.acc_dtype).astype(operand_dtype)

            def one(x, ct, spread="guard"):
                if unit:
                    x, ct = x[None], ct[None]
                with jax.named_scope("jaxconv_conv_rhs_t"):
                    return _kernel_grad(x, ct, operand_shape, operand_dtype, params,
                                        spread)

            def one_by_one(how):
                if how == "loop":
                    return lax.map(lambda xc: one(*xc), (a, b))
                if not _border_guarded(plan):
                    return jax.vmap(one)(a, b)
                # Side by side, a conditional per example would run both
                # branches: one border check for every example instead.
                return finite_or(
                    _border(a if unit else a.reshape(-1, *a.shape[2:]), plan, params),
                    lambda: jax.vmap(lambda x, ct: one(x, ct, "plain"))(a, b),
                    lambda: jax.vmap(lambda x, ct: one(x, ct, "poison"))(a, b))

            if how == "cotangent":
                # One GEMM per example against the cotangent's shifted
                # copies, the input's border (the positions some tap never
                # reads) tap by tap: no conditional.
                return tapgemm.kernel_grads_by_cotangent(
                    xa[:, None], b[:, None], p.kernel, p.pads, p.dilation,
                    params["precision"], p.acc_dtype, p.lhs_dilation,
                    plan.profile.cotangent_box_min_taps).astype(operand_dtype)
            return one_by_one(how)
        if role == "fwd":
            return conv_canonical(a, b, **params)
        conv_params = (lhs_t_conv_params(a, b, operand_shape, operand_dtype, params)
                       if role == "lhs_t" else None)
        if conv_params is not None:
            wt = flipped_kernel(b, params["feature_group_count"])
            return conv_canonical(a, wt, **conv_params)
        # The forward convolutions below are differentiated, not returned.
        params = {**params, "reshaped": False}
        if role == "rhs_t":
            return _kernel_grad(a, b, operand_shape, operand_dtype, params)
        zero = jnp.zeros(operand_shape, operand_dtype)
        w = b
        params = transposed_forward_params(canonical_plan(zero, w, **params), params)
        chosen = canonical_plan(zero, w, **params)
        _, vjp = jax.vjp(lambda x: conv_canonical(x, w, **params), zero)
        if chosen.formulation == "s2d" and chosen.param("guard") is not None:
            # The zero-padded taps of space-to-depth would meet a non-finite
            # cotangent (its forward guard looks at the input only): the
            # direct loop's transpose pairs real windows alone.
            _, exact = jax.vjp(lambda x: conv_canonical(
                x, w, **{**params, "algorithm": "direct"}), zero)
            return finite_or(a, lambda: vjp(a)[0], lambda: exact(a)[0],
                             branch_free=chosen.profile.branch_free)
        return vjp(a)[0]


def _kernel_grad(x, ct, w_shape, w_dtype, params, spread="guard"):
    """Role ``rhs_t``: the plan's own kernel gradient
    (:func:`_direct_kernel_grad`), else the transpose of the planned forward
    (:func:`_autodiff_kernel_grad`; ``spread`` as there)."""
    params = {**params, "reshaped": False}
    chosen = canonical_plan(x, jax.ShapeDtypeStruct(w_shape, w_dtype), **params)
    gw = _direct_kernel_grad(x, ct, chosen, w_dtype, params)
    if gw is not None:
        return gw
    return _autodiff_kernel_grad(x, ct, chosen, w_shape, w_dtype, params, spread)


def _autodiff_kernel_grad(x, ct, chosen, w_shape, w_dtype, params, spread="guard"):
    """The kernel gradient as the transpose of the planned forward
    (``chosen``: the plan of that forward).

    Where that transpose would let a non-finite input element reach taps
    it never pairs with an output (``plan.kernel_grad_spreads``: the
    shifted-sum forms contract every position with every tap's cotangent,
    zero where the tap reads no output), only the border can do so (an
    inner position is read by every tap).  ``spread="guard"``: when the
    input's border is finite the plain transpose runs, else the poisoned
    one: on the input with its non-finite elements zeroed, the entries
    ``dw[t, i, :]`` whose tap ``t`` reads a non-finite element of channel
    ``i`` then set to NaN (``guards.tap_hits``), non-finite exactly where
    lax's gradient is.  Branch-free profiles and space-to-depth plans (whose
    strided windows skip inner positions) always take the poisoned one;
    ``"plain"`` / ``"poison"`` ask for one (the caller checked the border).
    """
    zero = jnp.zeros(w_shape, w_dtype)

    def plain(x=x):
        _, vjp = jax.vjp(lambda w: conv_canonical(x, w, **params), zero)
        return vjp(ct)[0]

    if spread == "plain" or not kernel_grad_spreads(chosen):
        return plain()

    def poisoned():
        finite = jnp.isfinite(x)
        gw = plain(jnp.where(finite, x, jnp.zeros((), x.dtype)))
        p = chosen.problem
        bad = planned_input((~finite).astype(x.dtype), chosen,
                            padding=params["padding"],
                            lhs_dilation=params["lhs_dilation"],
                            batch_group_count=params["batch_group_count"])
        hits = tap_hits(bad, p.kernel, p.pads, p.stride, p.dilation, p.out_spatial,
                        p.lhs_dilation)
        return jnp.where(hits[..., None], jnp.asarray(jnp.nan, gw.dtype), gw)

    if spread == "poison" or not _border_guarded(chosen):
        return poisoned()
    return finite_or(_border(x, chosen, params), plain, poisoned)


def _border_guarded(chosen) -> bool:
    """Whether ``chosen``'s kernel gradient checks the input's border before
    it takes the poisoned transpose (:func:`_autodiff_kernel_grad`)."""
    return (kernel_grad_spreads(chosen) and not chosen.profile.branch_free
            and chosen.formulation != "s2d")


def _border(x, chosen, params):
    """The elements of ``x (..., *S, C)`` that some tap of the stride-1
    ``chosen`` never reads: per spatial axis the first ``(K-1)*d - lo`` and
    the last ``(K-1)*d - hi`` positions (``lo``, ``hi``: the plan's padding
    of the input as it reads it; divided by the lhs dilation, rounded up,
    where the problem carries one), as a tuple of slabs."""
    p = chosen.problem
    x = planned_input(x, chosen, padding=params["padding"],
                      lhs_dilation=params["lhs_dilation"],
                      batch_group_count=params["batch_group_count"])
    first = x.ndim - 1 - p.nd
    slabs = []
    for a, (k, d, (lo, hi), s) in enumerate(zip(p.kernel, p.dilation, p.pads,
                                                p.lhs_dilation)):
        n = x.shape[first + a]
        reach = (k - 1) * d
        # In a problem that carries an lhs dilation ``s``, element ``q`` sits
        # at position ``lo + q * s``: the first ``ceil((reach - lo) / s)``.
        low = min(n, -(-max(0, reach - lo) // s))
        high = min(n, -(-max(0, reach - hi) // s))
        if low:
            slabs.append(lax.slice_in_dim(x, 0, low, axis=first + a))
        if high:
            slabs.append(lax.slice_in_dim(x, n - high, n, axis=first + a))
    return tuple(slabs)


def _direct_kernel_grad(x, ct, chosen, w_dtype, params):
    """The kernel gradient of ``chosen`` where the plan computes it itself,
    else None.

    Plans with ``kernel_grad="tap-scan"`` (dense stride-1 convs: 1-D over a
    batch, 2-D and 3-D with enough positions and channels) run
    :func:`~jaxconv.algorithms.dense.kernel_grad_tap_scan`: one 2-D GEMM per
    tap, where the transpose of any forward formulation's
    tangent is a patch GEMM per row block or a sum of shifted products;
    with ``kernel_grad="hankel"`` (1-D, many taps on few
    channels) :func:`~jaxconv.algorithms.dense.kernel_grad_hankel`: one
    block-Hankel GEMM.
    Depthwise plans with ``kernel_grad="positions"`` (few output positions
    per example) run :func:`~jaxconv.algorithms.positions.kernel_grad`:
    one fused loop over the output positions.  Transposed (polyphase)
    plans with ``kernel_grad="cotangent"`` run
    :func:`~jaxconv.algorithms.polyphase.kernel_grad`: one GEMM against
    the cotangent's strided slices, every tap at once; with
    ``kernel_grad="taps"``,
    :func:`~jaxconv.algorithms.polyphase.kernel_grad_by_taps`: one GEMM per
    tap of each phase, on the real inputs.
    """
    if chosen.param("kernel_grad") not in ("tap-scan", "hankel", "positions",
                                           "cotangent", "taps"):
        return None
    record_plan(chosen)
    x = planned_input(x, chosen, padding=params["padding"],
                      lhs_dilation=params["lhs_dilation"],
                      batch_group_count=params["batch_group_count"])
    if chosen.param("kernel_grad") == "positions":
        p = chosen.problem
        gw = positions.kernel_grad(
            pad_spatial(x, p.pads), ct, p.kernel, p.stride, p.dilation, p.groups,
            p.acc_dtype, chosen.profile.kernel_grad_position_terms)
    elif chosen.param("kernel_grad") == "cotangent":
        gw = polyphase.kernel_grad(x, ct, chosen.problem, params["precision"],
                                   chosen.profile.cotangent_box_min_taps)
    elif chosen.param("kernel_grad") == "taps":
        gw = polyphase.kernel_grad_by_taps(x, ct, w_dtype, chosen.problem,
                                           params["precision"], chosen.profile)
    elif chosen.param("kernel_grad") == "hankel":
        gw = dense.kernel_grad_hankel(x, ct, chosen, params["precision"],
                                      chosen.param("hankel_block"))
    else:
        gw = dense.kernel_grad_tap_scan(x, ct, chosen, params["precision"])
    return gw.astype(w_dtype)


def lhs_t_conv_params(ct, w, x_shape, x_dtype, params) -> dict | None:
    """The parameters of ``lhs_t`` run as a planned forward convolution, or None.

    For a stride-1, undilated-input problem without batch groups the
    transpose with respect to ``x`` is itself a correlation of the cotangent
    with the flipped kernel (:func:`flipped_kernel`), which the plan then
    treats as any forward convolution: the row-blocked forms and their
    cache-sized temporaries instead of the transpose of the forward's
    formulation.  Per axis, ``gx[q] = sum_k ct[q + k*d - (d*(K-1) - lo)] *
    w[K-1-k]``: padding ``(d*(K-1) - lo, d*(K-1) - hi)`` (negative values
    crop), an output of ``x``'s size.  Only for ``"auto"``/``"taps"``, one
    floating dtype throughout, and no empty axis; ``ct``, ``w`` need only
    ``shape`` and ``dtype``.
    """
    if not (params["algorithm"] in ("auto", "taps")
            and all(s == 1 for s in params["stride"])
            and all(d == 1 for d in params["lhs_dilation"])
            and params["batch_group_count"] == 1
            and np.dtype(ct.dtype) == np.dtype(w.dtype) == np.dtype(x_dtype)
            and jnp.issubdtype(ct.dtype, jnp.floating)
            and all(n > 0 for n in (*x_shape, *ct.shape, *w.shape))):
        return None
    kernel = w.shape[:-2]
    pads = tuple((d * (k - 1) - lo, d * (k - 1) - hi) for k, d, (lo, hi)
                 in zip(kernel, params["rhs_dilation"], params["padding"]))
    return {**params, "padding": pads, "preferred_element_type": None}


def transposed_forward_params(chosen, params) -> dict:
    """The parameters of the forward whose transpose is ``lhs_t`` (where it
    is not planned as a convolution, :func:`lhs_t_conv_params`): the
    forward's own, except for a transposed conv planned as one GEMM against
    every tap (``one_gemm``), whose transpose would gather a cotangent ``T``
    times the input first: its phases' own forms then (the input gradient
    programs of ``tconv2d`` were identical to those before the one GEMM)."""
    if chosen.param("one_gemm"):
        return {**params, "profile": chosen.profile.replace(phase_one_gemm_max_bytes=0)}
    return params


def flipped_kernel(w, groups: int):
    """``w (*K, I, G*M)`` flipped along ``K``, each group's ``(I, M)``
    transposed: ``(*K, M, G*I)``, the kernel of the input gradient."""
    kernel = w.shape[:-2]
    nd = len(kernel)
    i, o = w.shape[-2:]
    m = o // groups
    wt = jnp.flip(w, tuple(range(nd))).reshape(*kernel, i, groups, m)
    return jnp.transpose(wt, (*range(nd), nd + 2, nd + 1, nd)).reshape(
        *kernel, m, groups * i)


def fwd_shape(x_shape, w_shape, *, stride, padding, lhs_dilation, rhs_dilation,
              batch_group_count, **_) -> tuple[int, ...]:
    """Shape of ``fwd``: ``(N // batch_group_count, *out, O)`` where, per axis,
    ``out = valid_out_size((n - 1) * lhs_dilation + 1 + lo + hi, k, stride,
    rhs_dilation)`` (an empty axis stays empty before padding)."""
    out = []
    for n, (lo, hi), ld, k, s, d in zip(x_shape[1:-1], padding, lhs_dilation,
                                        w_shape[:-2], stride, rhs_dilation):
        dilated = n if ld == 1 else ((n - 1) * ld + 1 if n else 0)
        out.append(valid_out_size(dilated + lo + hi, k, s, d))
    return (x_shape[0] // batch_group_count, *out, w_shape[-1])


def _abstract_eval(a, b, *, role, operand_shape, operand_dtype, **params):
    if role == "fwd":
        pref = params["preferred_element_type"]
        return jax.core.ShapedArray(fwd_shape(a.shape, b.shape, **params),
                                    np.dtype(pref or a.dtype))
    if role == "rhs_t_each":
        return jax.core.ShapedArray((a.shape[0], *operand_shape),
                                    np.dtype(operand_dtype))
    return jax.core.ShapedArray(operand_shape, np.dtype(operand_dtype))


conv_p.def_impl(functools.partial(xla.apply_primitive, conv_p))
conv_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(conv_p, mlir.lower_fun(_impl, multiple_results=False))


# --- differentiation: every role is bilinear ----------------------------------------


def _aval(operand):
    return tuple(operand.aval.shape), _static_dtype(operand.aval.dtype)


def _derived(params):
    """The parameters of an equation derived from one (tangent, transpose).

    ``reshaped="batch"`` promises that the caller re-poisons the result's
    depthwise border (the batching rule does, for the primal it binds);
    nobody does for a derived equation, which recomputes its border
    strips instead (``reshaped=True``).
    """
    if params.get("reshaped") == "batch":
        return {**params, "reshaped": True}
    return params


def _t_first(g, a, b, *, role, operand_shape, operand_dtype, **params):
    """Transpose with respect to the first operand."""
    params = _derived(params)
    if role == "rhs_t_each":  # x: per example lhs_t(ct_b, g_b)
        x_shape, x_dtype = a.aval.shape[1:], _static_dtype(a.aval.dtype)
        return jax.vmap(lambda ct, g: _bind(ct, g, "lhs_t", x_shape, x_dtype,
                                            params))(b, g)
    if role == "fwd":  # x of fwd(x, w)
        return _bind(g, b, "lhs_t", *_aval(a), params)
    if role == "lhs_t":  # ct of lhs_t(ct, w)
        return _bind(g, b, "fwd", None, None, params)
    return _bind(b, g, "lhs_t", *_aval(a), params)  # x of rhs_t(x, ct)


def _t_second(g, a, b, *, role, operand_shape, operand_dtype, **params):
    """Transpose with respect to the second operand."""
    params = _derived(params)
    if role == "rhs_t_each":  # ct: per example fwd(x_b, g_b)
        return jax.vmap(lambda x, g: _bind(x, g, "fwd", None, None, params))(a, g)
    if role == "fwd":  # w of fwd(x, w)
        return _bind(a, g, "rhs_t", *_aval(b), params)
    if role == "lhs_t":  # w of lhs_t(ct, w)
        return _bind(g, a, "rhs_t", *_aval(b), params)
    return _bind(a, g, "fwd", None, None, params)  # ct of rhs_t(x, ct)


ad.defbilinear(conv_p, _t_first, _t_second)
# defbilinear's tangents (``bind(t, b)`` and ``bind(a, t)``), with
# :func:`_derived` parameters.
ad.defjvp(conv_p,
          lambda g, a, b, **params: conv_p.bind(g, b, **_derived(params)),
          lambda g, a, b, **params: conv_p.bind(a, g, **_derived(params)))


# --- batching: fold the vmapped axis into the problem --------------------------------


class _Fold:
    """The folds of one vmapped configuration (module docstring, Batching).

    ``bx``/``bw``: whether ``x``/``w`` carry the vmapped axis (at 0, size
    ``size``); ``x_shape``/``w_shape`` are the unbatched canonical shapes.
    """

    def __init__(self, size, bx, bw, x_shape, w_shape, params):
        self.size, self.bx, self.bw = size, bx, bw
        self.x_shape, self.w_shape = tuple(x_shape), tuple(w_shape)
        self.params = params
        fgc, bgc = params["feature_group_count"], params["batch_group_count"]
        self.bgc = bgc
        self.groups = fgc * bgc  # at most one of them is > 1
        self.y_shape = fwd_shape(x_shape, w_shape, **params)

    def folded_params(self):
        if not (self.bx and self.bw):
            return self.params
        key = "feature_group_count" if self.bgc == 1 else "batch_group_count"
        return {**self.params, key: self.params[key] * self.size}

    # x: (B, N, *S, C)
    def fold_x(self, x):
        if not self.bx:
            return x
        b, (n, *s, c) = self.size, self.x_shape
        if self.bw and self.bgc == 1:  # B joins the channels, group-major
            return jnp.moveaxis(x, 0, -2).reshape(n, *s, b * c)
        if not self.bw and self.bgc > 1:  # (B, bgc, N') -> (bgc, B, N')
            x = x.reshape(b, self.bgc, n // self.bgc, *s, c)
            x = jnp.swapaxes(x, 0, 1)
        return x.reshape(b * n, *s, c)

    def unfold_x(self, x):
        if not self.bx:
            return x
        b, (n, *s, c) = self.size, self.x_shape
        if self.bw and self.bgc == 1:
            return jnp.moveaxis(x.reshape(n, *s, b, c), -2, 0)
        if not self.bw and self.bgc > 1:
            x = x.reshape(self.bgc, b, n // self.bgc, *s, c)
            x = jnp.swapaxes(x, 0, 1)
        return x.reshape(b, n, *s, c)

    # w: (B, *K, I, O)
    def fold_w(self, w):
        if not self.bw:
            return w
        b, (*k, i, o), g = self.size, self.w_shape, self.groups
        if self.bx:  # O' = (B, O)
            return jnp.moveaxis(w, 0, -2).reshape(*k, i, b * o)
        w = w.reshape(b, *k, i, g, o // g)  # O' = (G, B, O/G)
        return jnp.moveaxis(w, 0, -2).reshape(*k, i, g * b * (o // g))

    def unfold_w(self, w):
        if not self.bw:
            return w
        b, (*k, i, o), g = self.size, self.w_shape, self.groups
        if self.bx:
            return jnp.moveaxis(w.reshape(*k, i, b, o), -2, 0)
        w = w.reshape(*k, i, g, b, o // g)
        return jnp.moveaxis(w, -2, 0).reshape(b, *k, i, o)

    # y: (B, N', *out, O)
    def fold_y(self, y):
        b, (n, *s, o), g = self.size, self.y_shape, self.groups
        if not self.bw:  # (B, N') -> B * N'
            return y.reshape(b * n, *s, o)
        if self.bx:  # O' = (B, O)
            return jnp.moveaxis(y, 0, -2).reshape(n, *s, b * o)
        y = y.reshape(b, n, *s, g, o // g)  # O' = (G, B, O/G)
        return jnp.moveaxis(y, 0, -2).reshape(n, *s, g * b * (o // g))

    def unfold_y(self, y):
        b, (n, *s, o), g = self.size, self.y_shape, self.groups
        if not self.bw:
            return y.reshape(b, n, *s, o)
        if self.bx:
            return jnp.moveaxis(y.reshape(n, *s, b, o), -2, 0)
        y = y.reshape(n, *s, g, b, o // g)
        return jnp.moveaxis(y, -2, 0).reshape(b, n, *s, o)

    def folded_shape(self, fold, shape, dtype):
        aval = jax.ShapeDtypeStruct((self.size, *shape), dtype)
        return tuple(jax.eval_shape(fold, aval).shape)


def _at_front(operand, dim, size):
    """``operand`` with the vmapped axis at 0 (broadcast when it has none)."""
    if dim is None:
        return jnp.broadcast_to(operand, (size, *operand.shape))
    return jnp.moveaxis(operand, dim, 0)


def _per_example_by_vmap(x_shape, x_dtype, w_shape, w_dtype, params,
                         examples: int | None = None) -> bool:
    """Whether per-example kernel gradients of ``examples`` examples of this
    problem run vmapped as is.

    Folded, ``B`` joins the channels: two transposes of ``x`` and ``ct``
    around a ``B``-times-grouped kernel gradient.  Where the per-example
    kernel gradient is already a batch of independent reductions (depthwise:
    elementwise products summed per channel) or of GEMMs (a dense kernel
    with several taps: patches^T @ ct per example), running the planned
    per-example formulation for each example (side by side, or one after
    another: :func:`per_example_plan`) does those directly, without the transposes
    (measured on a 2-core CPU: depthwise 0.78 -> 1.0 of the batched
    gradient's speed, dense 3x3 0.73 -> 0.86), and so does a 1x1 kernel with
    ``profile.per_example_pointwise_min_o`` output channels or more (a batch
    of ``x_e^T @ ct_e`` GEMMs), or one image per example of at most
    ``profile.per_example_positions_max`` output positions (sums of
    products over the positions: :func:`per_example_plan`), and a
    transposed dense kernel or a grouped one whose per-example gradient is
    one GEMM per tap or group (``plan.per_example_patches``), or, for a
    transposed kernel, one GEMM per example against the cotangent's strided
    slices (``plan.per_example_cotangent``), or a grouped one whose
    one-example plan is the row scan (``plan.per_example_grouped_rows``,
    on profiles that set ``per_example_grouped_carry_bytes``).  Narrower 1x1
    kernels, other transposed and grouped problems fold (their folded forms
    were faster), and so do depthwise problems whose row scan, run side by
    side, would hold more accumulators than the profile's
    ``rowscan_carry_bytes`` (:func:`_side_by_side_carry_outgrows`).
    """
    fgc, bgc = params["feature_group_count"], params["batch_group_count"]
    if bgc != 1:
        return False
    *kernel, i, o = w_shape
    depthwise = fgc > 1 and i == 1 and x_shape[-1] == fgc
    if any(d != 1 for d in params["lhs_dilation"]) or (fgc > 1 and not depthwise):
        # transposed or grouped (not depthwise)
        plan, _, how = per_example_plan(
            jax.ShapeDtypeStruct((1, *x_shape), x_dtype), w_shape, w_dtype, params)
        if how in ("patches", "cotangent"):
            return True
        return per_example_grouped_rows(plan, examples, params["profile"]) is not None
    taps = int(np.prod(kernel))
    prof = params["profile"]
    out = fwd_shape(x_shape, w_shape, **params)[1:-1]
    few_positions = x_shape[0] == 1 and math.prod(out) <= prof.per_example_positions_max
    dense = fgc == 1 and (taps > 1 or o >= prof.per_example_pointwise_min_o
                          or few_positions)
    if depthwise and examples is not None and _side_by_side_carry_outgrows(
            x_shape, x_dtype, w_shape, w_dtype, params, examples):
        return False
    return depthwise or dense


def _side_by_side_carry_outgrows(x_shape, x_dtype, w_shape, w_dtype, params,
                                 examples) -> bool:
    """Whether one example's depthwise kernel-gradient row scan, vmapped
    over ``examples`` examples side by side, carries more than the
    profile's ``rowscan_carry_bytes``.

    The scan's row width keeps one example's ``T * C`` accumulator rows
    within that budget (``rowscan.row_width``); vmapped, every example adds
    its own.  Folded, the examples join the channels and the row width is
    planned for all of them.  Measured on the zoo's 26 batch-8 depthwise
    layers (2-core Intel Xeon): ConvNeXt-T's 7x7 on 16x16x96 (2.4 MB side
    by side) ran its per-example gradients 1.39x faster folded, 0.71 -> 0.99
    of the batched gradient's speed; the 3x3 row scans of 295-663 KB were
    as often slower folded (0.58-0.84x) as faster (1.37-1.38x).
    """
    one = jax.ShapeDtypeStruct(x_shape, x_dtype)
    plan = canonical_plan(one, jax.ShapeDtypeStruct(w_shape, w_dtype),
                          **{**params, "reshaped": False})
    prof = params["profile"]
    if (plan.param("kernel_grad") != "rowscan" or plan.problem.nd < 2
            or not isinstance(examples, (int, np.integer))
            or _one_by_one(plan, examples, prof) != "vmap"):
        return False
    p = plan.problem
    width = plan.param("row_width") or p.out_spatial[1]
    carry = width * rowscan.column_bytes(p.out_spatial, p.taps, p.in_per_group,
                                         p.out_channels, p.acc_itemsize)
    return examples * carry > prof.rowscan_carry_bytes


def _batch_rule(args, dims, *, role, operand_shape, operand_dtype, **params):
    a, b = args
    da, db = dims
    size = a.shape[da] if da is not None else b.shape[db]
    unbatched = [op.shape if d is None else op.shape[:d] + op.shape[d + 1:]
                 for op, d in zip(args, dims)]
    if role == "fwd":
        x_shape, w_shape = unbatched
        bx, bw = da is not None, db is not None
    elif role == "lhs_t":  # (ct, w) -> x-shaped: x is always vmapped
        x_shape, w_shape = operand_shape, unbatched[1]
        bx, bw = True, db is not None
    else:  # (x, ct) -> w-shaped: w is always vmapped
        x_shape, w_shape = unbatched[0], operand_shape
        bx, bw = da is not None, True
    if size == 0:
        out = _abstract_eval(
            *(jax.core.ShapedArray(s, op.dtype) for s, op in zip(unbatched, args)),
            role=role, operand_shape=operand_shape, operand_dtype=operand_dtype,
            **params)
        return jnp.zeros((0, *out.shape), out.dtype), 0
    if bw and not isinstance(size, (int, np.integer)):
        # A symbolic vmapped size (jax.export) would make the group count
        # symbolic: batch the formulation op by op.
        impl = functools.partial(_impl, role=role, operand_shape=operand_shape,
                                 operand_dtype=operand_dtype, **params)
        return jax.vmap(impl, in_axes=(da, db))(a, b), 0
    if role == "rhs_t_each":  # merge the new vmapped axis into the examples
        a, b = _at_front(a, da, size), _at_front(b, db, size)
        merged = [op.reshape(size * op.shape[1], *op.shape[2:]) for op in (a, b)]
        g = _bind(*merged, "rhs_t_each", operand_shape, operand_dtype, params)
        return g.reshape(size, -1, *g.shape[1:]), 0
    if role == "rhs_t" and bx and _per_example_by_vmap(x_shape, a.dtype, w_shape,
                                                      operand_dtype, params, size):
        a, b = _at_front(a, da, size), _at_front(b, db, size)
        return _bind(a, b, "rhs_t_each", operand_shape, operand_dtype, params), 0
    fold = _Fold(size, bx, bw, x_shape, w_shape, params)
    kw = {**fold.folded_params(), "reshaped": True}  # unfold_y/unfold_x reshape
    if role == "fwd":
        x = fold.fold_x(_at_front(a, da, size)) if bx else a
        w = fold.fold_w(_at_front(b, db, size)) if bw else b
        if bw:
            return fold.unfold_y(_bind(x, w, "fwd", None, None, kw)), 0
        # Only the batch axis is split.  One example per vmapped slice (a
        # layer written for one image, as Equinox's are) gets the batched
        # call's plan: such a layer drops the unit batch axis again, so the
        # unfolding reshape and its inverse cancel and the border strips are
        # re-poisoned in place (deferring them to the unit-axis result made
        # XLA:CPU materialise every tap's product: dw3 forward 0.56x of the
        # batched call).  Several examples per slice: the loop leaves its
        # strips to be re-poisoned here, on the unfolded result, which
        # XLA:CPU updates in place (the folded one it would copy whole).
        kw["reshaped"] = False if fold.x_shape[0] == 1 else "batch"
        y = fold.unfold_y(_bind(x, w, "fwd", None, None, kw))
        chosen = canonical_plan(x, w, **kw)
        if chosen.param("guard") == depthwise.DEFERRED:
            y = depthwise.poison_border(y, w, chosen)
        return y, 0
    if role == "lhs_t":
        ct = fold.fold_y(_at_front(a, da, size))
        w = fold.fold_w(_at_front(b, db, size)) if bw else b
        shape = fold.folded_shape(fold.fold_x, x_shape, operand_dtype)
        return fold.unfold_x(_bind(ct, w, "lhs_t", shape, operand_dtype, kw)), 0
    x = fold.fold_x(_at_front(a, da, size)) if bx else a
    ct = fold.fold_y(_at_front(b, db, size))
    shape = fold.folded_shape(fold.fold_w, w_shape, operand_dtype)
    return fold.unfold_w(_bind(x, ct, "rhs_t", shape, operand_dtype, kw)), 0


batching.primitive_batchers[conv_p] = _batch_rule
