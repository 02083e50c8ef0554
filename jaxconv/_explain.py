"""``jaxconv.explain``: which plan every convolution inside a function gets."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import numpy as np
from jax.extend.core import jaxprs_in_params

from ._canonical import RECORDER, canonical_plan
from ._primitive import (
    flipped_kernel,
    lhs_t_conv_params,
    per_example_plan,
    transposed_forward_params,
)
from .algorithms import polyphase
from .algorithms.plan import Plan

# The primitive every jaxconv convolution binds (``jaxconv._primitive``), and
# what its transposed roles are called in a report.
PRIMITIVE = "jaxconv_conv"
ROLE_NAMES = {"fwd": "", "lhs_t": " (input grad)", "rhs_t": " (kernel grad)",
              "rhs_t_each": " (per-example kernel grads)"}


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclasses.dataclass(frozen=True)
class ExplainRow:
    """One convolution traced inside the explained function.

    Attributes:
      op: what kind of convolution (``"conv"``, ``"depthwise conv"``,
        ``"grouped conv"``, ``"transposed conv"``) and, for a gradient,
        which (``" (input grad)"``, ``" (kernel grad)"``,
        ``" (per-example kernel grads)"``; ``", looped)"`` when the
        examples' kernel gradients run one after another, ``", by
        positions)"``, ``", by tap GEMMs)"`` or ``", by cotangent GEMMs)"``
        when they run all at once as sums over the output positions, as one
        GEMM per example and tap, or as one GEMM per example against the
        cotangent's shifted copies).
      input_shape: the canonical (channels-last) input ``(N, *S, C)``.
      kernel_shape: the canonical kernel ``(*K, I, O)``.
      output_shape: ``(N, *out, O)``.
      dtype: the input dtype.
      profile: the profile the plan was made with (its name, with the CPU
        family on the ``cpu`` preset: ``"cpu/avx512"``).
      formulation: the plan's label, e.g. ``"taps/depthwise"``.
      loop_steps: sequential loop steps of the forward program.
      temp_bytes: estimated temporaries.
      reason: why this formulation.
      plan: the full :class:`~jaxconv.algorithms.plan.Plan`.
    """

    op: str
    input_shape: tuple
    kernel_shape: tuple
    output_shape: tuple
    dtype: str
    profile: str
    formulation: str
    loop_steps: int
    temp_bytes: int
    reason: str
    plan: Plan

    @classmethod
    def of(cls, plan: Plan, role: str = "fwd") -> ExplainRow:
        p = plan.problem
        if p.transposed:
            op = "transposed conv"
        elif p.depthwise:
            op = "depthwise conv"
        elif p.groups > 1:
            op = "grouped conv"
        else:
            op = "conv"
        label, steps, temp, reason = (plan.label, plan.loop_steps, plan.temp_bytes,
                                      plan.reason)
        if role == "rhs_t" and plan.param("kernel_grad") == "tap-scan":
            # computed directly, not as the transpose of the forward's form:
            # a scan over the taps holding the padded input (and its
            # channels-first copy) and one tap's window
            window = _window_bytes(p)
            copies = 2 if p.in_per_group >= plan.profile.tap_scan_transpose_min_i else 1
            label, steps = "taps/tap-scan", p.taps
            temp = copies * p.in_bytes + window
            reason = f"{p.nd}-D kernel gradient: a scan of 2-D GEMMs, one per tap"
        elif role == "rhs_t" and plan.param("kernel_grad") == "hankel":
            # one GEMM of the block-Hankel copy of the padded input with the
            # cotangent (viewed, not copied) and its (B + T - 1, I, B, O)
            # product
            b, t, (d,), (l_out,) = (plan.param("hankel_block"), p.taps, p.dilation,
                                    p.out_spatial)
            rows = _window_bytes(p)
            product = (np.dtype(p.acc_dtype).itemsize * (b + t - 1) * b
                       * p.in_per_group * p.out_channels)
            guarded = bool(l_out % (d * b))
            copied_ct = p.out_bytes if (guarded or d > 1) else 0
            label, steps = "taps/hankel", 0
            temp = p.in_bytes + rows * (b + t - 1) // b + copied_ct + product
            reason = (f"1-D kernel gradient: one block-Hankel GEMM (blocks of {b} "
                      f"positions{f' in {d} dilation phases' if d > 1 else ''}, "
                      f"{b + t - 1} input rows each)")
            if guarded:
                reason += ("; where the input's last rows are not finite, a scan "
                           "of 2-D GEMMs, one per tap")
        elif role == "rhs_t" and plan.param("kernel_grad") == "taps":
            reason = reason + ("; kernel gradient: the phases' patch GEMMs when the "
                               "cotangent is finite, else one GEMM per tap of each "
                               "phase" if polyphase.taps_kernel_grad_guarded(
                                   p, plan.profile) else
                               "; kernel gradient: one GEMM per tap of each phase, "
                               "on the real inputs")
        return cls(op + ROLE_NAMES[role], p.x_shape, p.w_shape, p.out_shape, p.dtype,
                   plan.profile.label, label, steps, temp, reason, plan)


def _window_bytes(p) -> int:
    """The bytes of the input's values at the output positions: one tap's
    window of every image (the kernel-gradient rows' copies)."""
    return p.in_bytes // max(1, math.prod(p.x_shape[1:-1])) * math.prod(p.out_spatial)


class Explanation(tuple):
    """The rows of :func:`explain` (a tuple of :class:`ExplainRow`);
    ``str()`` is a table."""

    @property
    def rows(self) -> tuple[ExplainRow, ...]:
        return tuple(self)

    def __str__(self) -> str:
        header = ("op", "input", "kernel", "output", "dtype", "profile",
                  "formulation", "loops", "temp", "reason")
        table = [header] + [
            (r.op, _dims(r.input_shape), _dims(r.kernel_shape), _dims(r.output_shape),
             r.dtype, r.profile, r.formulation, str(r.loop_steps),
             _size(r.temp_bytes), r.reason)
            for r in self
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
        lines = []
        for k, row in enumerate(table):
            cells = [c.ljust(wd) for c, wd in zip(row[:-1], widths)]
            lines.append("  ".join(cells + [row[-1]]).rstrip())
            if k == 0:
                lines.append("  ".join("-" * wd for wd in widths) + "  ------")
        if not self:
            lines.append("(no jaxconv convolution)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Explanation({len(self)} rows)"


def _walk(jaxpr, rows: list) -> None:
    """Append a row for every ``jaxconv_conv`` equation, sub-jaxprs included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == PRIMITIVE:
            rows.append(_row(eqn))
        for sub in jaxprs_in_params(eqn.params):
            _walk(sub, rows)


def _row(eqn) -> ExplainRow:
    params = dict(eqn.params)
    role = params.pop("role")
    shape, dtype = params.pop("operand_shape"), params.pop("operand_dtype")
    a, b = (jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
    operand = jax.ShapeDtypeStruct(shape, dtype) if shape is not None else None
    if role == "lhs_t":
        conv = lhs_t_conv_params(a, b, shape, dtype, params)
        if conv is not None:  # planned as a convolution of ct (see _primitive)
            wt = jax.eval_shape(
                lambda w: flipped_kernel(w, params["feature_group_count"]), b)
            return ExplainRow.of(canonical_plan(a, wt, **conv), role)
    if role != "fwd":  # differentiated forward convolutions: result not reshaped
        params["reshaped"] = False
    if role == "rhs_t_each":  # the plan of one example's kernel gradient
        plan, _, how = per_example_plan(a, shape, dtype, params)
        row = ExplainRow.of(plan, role)
        if how == "vmap":
            return row
        label, how_run = {
            "positions": ("by positions",
                          "every example's products over its "
                          f"{math.prod(plan.problem.out_spatial)} output positions "
                          "in one fused loop"),
            "patches": ("by tap GEMMs",
                        "one GEMM per example and tap, every example at once"),
            "cotangent": ("by cotangent GEMMs",
                          "one GEMM per example against the cotangent's "
                          f"{plan.problem.taps} shifted copies, every example at "
                          "once (behind a finiteness guard)"),
            "loop": ("looped", f"the {a.shape[0]} examples one after another"),
        }[how]
        return dataclasses.replace(row, op=row.op.replace("grads)", f"grads, {label})"),
                                   reason=f"{row.reason}; {how_run}")
    x, w = {"fwd": (a, b), "lhs_t": (operand, b), "rhs_t": (a, operand)}[role]
    if role == "lhs_t":  # the transpose of this forward (see _primitive)
        params = transposed_forward_params(canonical_plan(x, w, **params), params)
    return ExplainRow.of(canonical_plan(x, w, **params), role)


def explain(f: Callable, *args, **kwargs) -> Explanation:
    """How jaxconv computes every convolution inside ``f(*args, **kwargs)``.

    ``f`` is traced abstractly (``jax.make_jaxpr``: nothing is computed, so
    ``args`` may be ``jax.ShapeDtypeStruct``\\ s) and every jaxconv
    convolution in the trace reports its plan: one row per convolution, in
    program order, gradients included (``jax.grad`` adds an input-gradient
    and a kernel-gradient row per convolution: the kernel gradient
    differentiates the forward's plan; the input gradient of a stride-1
    convolution is planned as a convolution of the output cotangent with the
    flipped kernel, other input gradients differentiate the forward's
    plan).  ``f`` can be one op, a Flax ``apply``, a ``jaxconv.nn`` model or
    a ``jax.grad`` of any of them.

    Args:
      f: any function of arrays.
      *args: its positional arguments (arrays or ``jax.ShapeDtypeStruct``).
      **kwargs: its keyword arguments.

    Returns:
      An :class:`Explanation`: a tuple of :class:`ExplainRow` whose ``str()``
      is a readable table (op, shapes, dtype, profile, formulation, loop
      steps, estimated temporaries, reason).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv
      >>> x = jax.ShapeDtypeStruct((1, 32, 32, 16), jnp.float32)
      >>> w = jax.ShapeDtypeStruct((3, 3, 1, 16), jnp.float32)
      >>> rows = jaxconv.explain(jaxconv.depthwise_conv, x, w)
      >>> rows[0].formulation
      'taps/depthwise'
    """
    log: list[Plan] = []
    token = RECORDER.set(log)
    try:
        jaxpr = jax.make_jaxpr(lambda *a, **k: f(*a, **k))(*args, **kwargs)
    finally:
        RECORDER.reset(token)
    rows: list[ExplainRow] = []
    _walk(jaxpr.jaxpr, rows)
    if not rows:  # convolutions traced inline (not bound as one equation)
        rows = [ExplainRow.of(p) for p in log]
    return Explanation(rows)
