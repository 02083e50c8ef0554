"""The plan: how one convolution is computed, decided from static facts.

``plan(problem, profile)`` is the whole ``"auto"`` rule: one function that
reads top to bottom (:func:`choose`), over one :class:`~.problem.Problem`,
with every threshold taken from the :class:`~.profile.Profile`.  It returns a
:class:`Plan`: the formulation, its parameters (row blocks, loop steps,
derivative rule, guard), estimated FLOPs and temporaries, and a one-line
reason.  :func:`execute` runs a plan through the formulation registry;
:func:`candidates` lists the exact formulations ``algorithm="autotune"``
times; ``jaxconv.explain`` reports plans.

Every formulation ``"auto"`` picks is *exact*: an output depends on the
inputs and weights of its own window only, so NaN and Inf stay local, as
with XLA's convolution (formulations that multiply structural zeros run
behind a finiteness guard, ``guards.py``).  ``"fft"`` and ``"winograd"`` mix
neighbouring inputs and are never chosen; ``"xla"`` (XLA's own convolution)
is never chosen either.
"""

from __future__ import annotations

import dataclasses
import math

import jax

from . import (
    dense,
    depthwise,
    grouped,
    groupgemm,
    polyphase,
    rowscan,
    space_to_depth,
    spectral,
    toeplitz,
)
from ._common import pad_spatial
from .blocks import blocking
from .direct import conv_direct
from .fft import conv_fft, next_fast_len
from .patches import conv_patches
from .problem import Problem
from .profile import Profile, current_profile
from .winograd import conv_winograd, winograd_applies

# The values of every conv op's ``algorithm=`` argument.
ALGORITHMS = ("auto", "direct", "patches", "taps", "fft", "winograd", "autotune",
              "xla")
# What "auto" may choose: the shift-and-accumulate family of exact
# formulations (``algorithm="taps"`` asks for the same choice), and for the
# longest 1-D depthwise kernels a product of FFTs behind a finiteness guard
# (``"spectral"``; never for ``"taps"``).
TAPS_FAMILY = ("dot", "taps", "alltaps", "im2col", "rows", "wide", "shifted", "s2d",
               "grouped", "groupgemm", "depthwise", "toeplitz", "spectral",
               "polyphase")


def check_algorithm(algorithm) -> str:
    """Validate the ``algorithm`` argument of every conv op."""
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(
            f"`algorithm` (={algorithm!r}) must be one of "
            f"{', '.join(map(repr, ALGORITHMS))}."
        )
    return algorithm


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one canonical convolution is computed (hashable).

    Attributes:
      formulation: the registry key (``"depthwise"``, ``"im2col"``, ...).
      problem: the problem it solves.
      profile: the profile it was planned with.
      reason: one line saying why.
      params: the formulation's parameters as ``(name, value)`` pairs; read
        them with :meth:`param`.
      inner: sub-plans (space-to-depth's stride-1 problem; the exact plan a
        guarded formulation falls back to).
      flops: estimated floating-point operations (a multiply-add is two).
      temp_bytes: estimated temporaries beyond the input and output.
      loop_steps: sequential loop steps of the forward program (0: none).
    """

    formulation: str
    problem: Problem
    profile: Profile
    reason: str
    params: tuple[tuple[str, object], ...] = ()
    inner: tuple[Plan, ...] = ()
    flops: int = 0
    temp_bytes: int = 0
    loop_steps: int = 0

    def param(self, name: str, default=None):
        """The parameter ``name``, or ``default``."""
        return dict(self.params).get(name, default)

    @property
    def label(self) -> str:
        """``"taps/<formulation>"`` for the shift-and-accumulate family, else
        the algorithm's name (``"fft"``, ``"xla"``, ...)."""
        if self.formulation in TAPS_FAMILY:
            return "taps/" + self.formulation
        return self.formulation

    def __str__(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.label}({extra}): {self.reason}"


# --- the "auto" rule ------------------------------------------------------------


def _whole_patch_matrix(p: Problem, prof: Profile) -> bool:
    """Whether ``im2col`` builds its patch matrix whole, in no row blocks:
    small (``im2col_unblocked_max_bytes``) and within the memory rule (no
    larger than the conv's input, kernel and output together), or a 2-D
    patch matrix (built in two streaming stages) of at most
    ``im2col_2d_unblocked_max_bytes`` within the memory rule's room
    (``2 x (input + kernel + output)``), or one :func:`_im2col_2d_whole`
    builds whole out of the workspace."""
    if p.nd == 2 and p.patch_bytes <= min(prof.im2col_2d_unblocked_max_bytes,
                                          2 * (p.io_bytes + p.w_bytes)):
        return True
    if _im2col_2d_whole(p, prof):
        return True
    return p.patch_bytes <= min(prof.im2col_unblocked_max_bytes,
                                p.io_bytes + p.w_bytes)


def _im2col_2d_whole(p: Problem, prof: Profile) -> bool:
    """Whether a dense 2-D layer runs ``im2col`` with its patch matrix built
    whole out of the workspace (``im2col_2d_whole_min_o`` output channels or
    more, patch matrix up to ``im2col_2d_unblocked_max_bytes``): strided,
    or stride 1 on more than ``outer_max_i`` input channels, not
    kernel-bound (those rules come first) and past the unblocked all-tap
    size (below it ``alltaps`` is one GEMM already, and compiles faster)."""
    return (p.nd == 2 and p.groups == 1 and not p.transposed and not p.depthwise
            and 1 < p.taps <= prof.unroll_limit
            and p.out_channels >= prof.im2col_2d_whole_min_o
            and p.patch_bytes <= prof.im2col_2d_unblocked_max_bytes
            and (not p.stride1 or (p.in_per_group > prof.outer_max_i
                                   and not _kernel_bound(p, prof)
                                   and not _alltaps_whole(p, prof))))


def _alltaps_bytes(p: Problem) -> int:
    """Float32 bytes of the all-tap GEMM output ``(N, *P, T, O)``."""
    return math.prod(p.padded_shape[:-1]) * p.taps * p.out_channels * 4


def _whole_limit(prof: Profile) -> int:
    """Bytes of all-tap GEMM products the whole-GEMM scale allows at once:
    ``alltaps_max_bytes`` times ``alltaps_whole_scale``."""
    return prof.alltaps_max_bytes * prof.alltaps_whole_scale


def _alltaps_whole(p: Problem, prof: Profile) -> bool:
    """Whether the all-tap GEMM output is small enough to run unblocked:
    ``alltaps_max_bytes``, or :func:`_whole_limit` in 1-D."""
    limit = _whole_limit(prof) if p.nd == 1 else prof.alltaps_max_bytes
    return _alltaps_bytes(p) <= limit


def _alltaps_tap_groups(p: Problem, prof: Profile) -> int:
    """Taps per step of a 1-D ``alltaps`` run in a loop over groups of taps
    (0: not so): past the whole all-tap size, where the whole-GEMM scale is
    on (``alltaps_whole_scale`` > 1) and at least two taps' products fit it.

    One group's GEMM and shifted sum per step, its output within the size
    the whole form is allowed; on a 2-core Intel Xeon, the 18 HiFi-GAN
    residual-block records past that size (batch 8, 7 and 11 taps, 32-128
    channels, 29-46 MB of all-tap output) ran forward 1.02-1.35x faster in
    groups of three taps than as ``wide`` row blocks or per-tap GEMMs, their
    gradients 0.94-1.08x.
    """
    if not (p.nd == 1 and p.stride1 and p.groups == 1 and not p.transposed
            and prof.alltaps_whole_scale > 1) or _alltaps_whole(p, prof):
        return 0
    limit = _whole_limit(prof)
    g = limit // (_alltaps_bytes(p) // p.taps)
    return int(g) if 2 <= g < p.taps else 0


def _wide_row_loop(p: Problem, prof: Profile) -> bool:
    """Whether a dense 2-D stride-1 layer runs ``"wide"`` unblocked in a loop
    over its kernel rows: where the whole-GEMM scale is on
    (``alltaps_whole_scale`` > 1), the all-tap GEMM output is past the size
    it allows (``alltaps_max_bytes`` times the scale) and one kernel row's
    products (every image, every padded column) fit it; not for
    kernel-bound layers (their own rule comes first) nor on few input
    channels.

    The 2-D form of :func:`_alltaps_tap_groups`: on a 2-core Intel Xeon,
    against ``shifted`` in row blocks or the per-tap loop, ``dense3_b8`` (8
    x 28 x 28 x 128) ran forward 1.12x faster (0.69 -> 0.77 of lax's speed),
    the U-Net's ``down1`` layers at batch 8 1.10-1.27x; over the 10 zoo and
    suite records it changes forward 0.94-1.27x (geomean 1.04), gradients
    0.93-1.04x (geomean 0.99).  (Whole 2-D all-tap GEMMs of 2-16 MiB won
    on single layers, 1.1-1.7x, but an Equinox U-Net's train step ran 0.85-
    0.93x lax's speed with them against 1.20-1.23x without: not adopted.)
    """
    limit = _whole_limit(prof)
    if not (p.nd == 2 and p.stride1 and p.groups == 1 and not p.transposed
            and p.in_per_group > prof.im2col_max_i and p.taps > 1
            and prof.alltaps_whole_scale > 1) or _alltaps_bytes(p) <= limit:
        return False
    row = p.batch * p.out_spatial[0] * p.padded_shape[2] * p.kernel[1] * p.out_channels
    return row * 4 <= limit


def choose(p: Problem, prof: Profile, exact: bool = False) -> tuple[str, str]:
    """The formulation ``"auto"`` picks for ``p`` and why (static facts only).

    ``exact``: only the shift-and-accumulate formulations, whose rounding
    stays within each output's window (``algorithm="taps"``): never the
    guarded transform (``"spectral"``).
    """
    t, i, g = p.taps, p.in_per_group, p.groups
    if polyphase.applies(p):
        phases = math.prod(p.lhs_dilation)
        why = f"transposed (lhs dilation {_dims(p.lhs_dilation)}), stride 1: "
        if polyphase.depth_to_space_applies(p, prof):
            return "polyphase", why + (f"kernel = stride, {phases} one-tap phases: "
                                       "one GEMM, then depth-to-space")
        if polyphase.one_gemm_applies(p, prof):
            return "polyphase", why + (f"{phases} sub-pixel phases, every tap's "
                                       "product with the real inputs in one GEMM, "
                                       "then each phase's shifted sums")
        return "polyphase", why + f"{phases} sub-pixel phases on the real inputs"
    if p.depthwise and (p.groups > 1 or p.out_channels == 1):
        # (One input channel feeding many outputs is a dense conv of depth
        # T: the patch form below; its kernel gradient is one GEMM.)
        if not exact and spectral.applies(p, prof):
            return "spectral", (f"1-D depthwise, {t} taps >= {prof.fft_min_taps}: "
                                "FFT product of finite inputs")
        if toeplitz.applies(p, prof):
            return "toeplitz", (f"1-D depthwise, {t} taps >= {prof.toeplitz_min_taps}: "
                                "blocked Toeplitz GEMMs")
        return "depthwise", "depthwise (I = 1): elementwise shift-and-accumulate"
    if t == 1:
        return "dot", "1x1 kernel: one GEMM"
    if space_to_depth.patchify(p):
        return "s2d", (f"kernel = stride ({_dims(p.kernel)}): non-overlapping "
                       "patches, one reshape and one GEMM")
    if (g > 1 and i <= prof.grouped_max_i and t * i <= prof.grouped_max_terms
            and t <= prof.unroll_limit):
        return "grouped", (f"{g} groups of I = {i} <= {prof.grouped_max_i}, "
                           f"T*I = {t * i} <= {prof.grouped_max_terms}: fused "
                           "broadcast multiply-adds")
    if g > 1 and t <= prof.unroll_limit:
        return "groupgemm", (f"{g} groups of I = {i}, T*I = {t * i}: one patch GEMM "
                             "per group, batched over groups")
    if g > 1:
        return "taps", f"{g} groups, {t} taps > unroll limit: per-tap grouped GEMMs"
    if t > prof.unroll_limit:
        return "taps", f"{t} taps > unroll limit {prof.unroll_limit}: per-tap GEMMs"
    if i <= prof.outer_max_i and p.stride1:
        return "taps", (f"dense stride 1, I = {i} <= {prof.outer_max_i}: per-tap "
                        "outer products, fused into one elementwise loop")
    if _kernel_bound(p, prof):
        why = f"dense stride 1, kernel > {prof.kernel_bound_ratio}x input bytes"
        if p.patch_bytes <= prof.cache_patch_bytes:
            return "im2col", (f"{why}, patch matrix <= "
                              f"{_mib(prof.cache_patch_bytes)}: one GEMM")
        if p.nd >= 2:
            # (1-D: per-tap GEMMs of so few rows lost to the rules below.)
            loop = " in a loop over taps" if _kernel_bound_loop(p, prof) else ""
            return "taps", f"{why}: per-tap GEMMs{loop} reading the kernel in place"
    if _im2col_2d_whole(p, prof):
        return "im2col", (f"dense 2-D, O = {p.out_channels} >= "
                          f"{prof.im2col_2d_whole_min_o}, patch matrix <= "
                          f"{_mib(prof.im2col_2d_unblocked_max_bytes)}: built whole, "
                          "one GEMM of depth T*I")
    if _wide_row_loop(p, prof):
        limit = _whole_limit(prof)
        return "wide", (f"dense 2-D stride 1, all-tap GEMM output > {_mib(limit)}, "
                        f"one kernel row's <= {_mib(limit)}: one GEMM per kernel "
                        "row over whole padded rows, in a loop over the rows")
    if _shifted_2d(p, prof):
        return "shifted", (f"dense 2-D stride 1, I = {i} >= {prof.shifted_2d_min_i}, "
                           "all-tap GEMM output > "
                           f"{_mib(prof.alltaps_max_bytes)}, every tap's block "
                           "products within the memory rule: per-tap GEMMs over "
                           "whole rows in row blocks, outputs shifted")
    if _blocked_tap_loop(p, prof):
        return "taps", (f"dense stride 1, I = {i} >= {prof.tap_scan_nd_min_i}, output "
                        f">= {_mib(prof.tap_block_min_bytes)}: per-tap GEMMs in a loop "
                        f"over taps, in row blocks of {_mib(prof.tap_block_bytes)} "
                        "of output")
    if p.nd >= 2:
        if i > prof.im2col_max_i and p.stride1:
            if _alltaps_whole(p, prof):
                return "alltaps", ("dense stride 1, all-tap GEMM output <= "
                                   f"{_mib(prof.alltaps_max_bytes)}: one GEMM")
            width = p.out_spatial[-1]
            if p.nd == 2 and (width >= prof.wide_min_width
                              or i <= prof.wide_2d_max_i):
                why = (f"output width {width} >= {prof.wide_min_width}"
                       if width >= prof.wide_min_width
                       else f"I = {i} <= {prof.wide_2d_max_i}")
                return "wide", (f"dense 2-D stride 1, {why}: per row of taps one "
                                "GEMM over whole padded rows")
            if p.nd == 2 and i <= prof.alltaps_max_i:
                return "alltaps", (f"dense 2-D stride 1, I = {i} <= "
                                   f"{prof.alltaps_max_i}: one GEMM against all taps")
        if i <= prof.im2col_max_i:
            return "im2col", (f"dense, I = {i} <= {prof.im2col_max_i}: patch matrix, "
                              "one GEMM of depth T*I")
        why = "strided" if not p.stride1 else f"I = {i}"
        return "im2col", f"dense, {why}: patch matrix, one GEMM of depth T*I"
    (s,), (k,), (d,) = p.stride, p.kernel, p.dilation
    if s > 1 and k > 1 and d == 1 and i < prof.s2d_max_i:
        return "s2d", (f"1-D dense, stride {s}, I = {i} < {prof.s2d_max_i}: stride "
                       "phases folded into channels")
    if s == 1:
        limit = _whole_limit(prof)
        if _alltaps_whole(p, prof):
            return "alltaps", ("1-D dense, all-tap GEMM output <= "
                               f"{_mib(limit)}: one GEMM")
        g = _alltaps_tap_groups(p, prof)
        if g:
            return "alltaps", (f"1-D dense, all-tap GEMM output > {_mib(limit)}: "
                               f"in a loop over groups of {g} taps, one GEMM each "
                               f"of output <= {_mib(limit)}")
        if _tap_loop(p, prof):
            return "taps", (f"1-D dense, I = {i} >= {prof.tap_loop_min_i}, {t} taps "
                            f">= {prof.tap_loop_min_taps}: per-tap GEMMs in a loop "
                            "over taps, one tap's temporaries live")
        if i >= prof.taps_min_i:
            return "taps", (f"1-D dense, I = {i} >= {prof.taps_min_i}: per-tap GEMMs "
                            "deep enough, none over the padding")
        if i <= prof.rows_max_i:
            return "rows", f"1-D dense, I = {i} <= {prof.rows_max_i}: taps concatenated"
        if i <= prof.wide_max_i:
            return "wide", f"1-D dense, I = {i}: one GEMM against all taps"
        return "shifted", ("1-D dense, all-tap GEMM output > "
                           f"{_mib(limit)}: per-tap GEMMs over "
                           "row blocks, outputs shifted")
    return "taps", f"1-D dense, stride {s}, I = {i}: strided per-tap GEMMs"


def plan(problem: Problem, profile: Profile | None = None,
         algorithm: str = "auto") -> Plan:
    """The plan for ``problem`` under ``profile`` (default: the active one).

    ``algorithm`` is the op's argument: ``"auto"`` and ``"taps"`` apply
    :func:`choose` (``"taps"`` without the guarded transform); ``"direct"``,
    ``"patches"``, ``"fft"`` and ``"winograd"`` plan that algorithm
    (``"winograd"`` only where it applies: 2-D 3x3 stride-1 undilated float
    kernels, else the ``"auto"`` plan).
    ``"autotune"`` and ``"xla"`` are resolved before planning
    (``jaxconv._canonical``).
    """
    profile = profile or current_profile()
    if problem.empty or problem.in_per_group == 0:
        return Plan("empty", problem, profile, "empty output, or no input features: "
                    "zeros, as XLA")
    if algorithm in ("direct", "patches", "fft"):
        return Plan(algorithm, problem, profile, "requested", flops=problem.flops)
    prefix = ""
    if algorithm == "winograd":
        if winograd_applies(problem.padded_shape, problem.w_shape, problem.stride,
                            problem.dilation, problem.dtype):
            return Plan("winograd", problem, profile, "requested",
                        flops=problem.flops * 4 // 9)
        prefix = "winograd does not apply; "
    name, reason = choose(problem, profile, exact=algorithm == "taps")
    return make_plan(problem, profile, name, prefix + reason)


def for_reshaped_result(chosen: Plan, deferred: bool = False) -> Plan:
    """``chosen`` for a result its caller reshapes (a vmapped conv's folded
    batch): XLA:CPU copies the whole output first when an in-place update
    that reads it is returned reshaped, so the depthwise loop leaves its
    border strips to the caller, who re-poisons them after the reshape
    (``deferred``: a reshape of the batch axis alone,
    ``depthwise.poison_border``), or recomputes them (:mod:`.depthwise`)."""
    if chosen.param("guard") != depthwise.POISONED:
        return chosen
    guard = depthwise.DEFERRED if deferred else depthwise.RECOMPUTED
    params = tuple((k, guard if k == "guard" else v) for k, v in chosen.params)
    return dataclasses.replace(chosen, params=params)


def make_plan(p: Problem, prof: Profile, name: str, reason: str) -> Plan:
    """The plan of formulation ``name`` for ``p``: its parameters and costs."""
    params: dict[str, object] = {}
    inner: tuple[Plan, ...] = ()
    temp, steps, flops = 0, 0, p.flops
    itemsize = p.acc_itemsize
    if name in dense.BLOCKED:
        kernel, t, i, o = p.kernel, p.taps, p.in_per_group, p.out_channels
        temp_channels = {"im2col": o + 2 * t * i, "wide": (t + 1) * o,
                         "alltaps": (t + 1) * o, "shifted": (kernel[-1] + 1) * o,
                         "rows": kernel[-1] * i + (t // kernel[-1] + 1) * o}[name]
        levels: tuple = ()
        tap_groups = _alltaps_tap_groups(p, prof) if name == "alltaps" else 0
        if name == "im2col":
            blocked = not _whole_patch_matrix(p, prof)
        elif tap_groups:
            # One group's all-tap GEMM output live at a time, unblocked.
            blocked = False
            params["tap_groups"] = tap_groups
            temp_channels = (tap_groups + 1) * o
        elif name == "wide" and _wide_row_loop(p, prof):
            # One kernel row's products live at a time, unblocked.
            blocked = False
            params["row_loop"] = True
            temp_channels = (kernel[-1] + 1) * o
        else:
            blocked = name != "alltaps" or not _alltaps_whole(p, prof)
        if blocked:
            # (The memory rule's bound counts the kernel: deep layers whose
            # kernel outweighs their activations get fewer, deeper GEMMs.)
            room = int(prof.block_io_fraction * 2 * (p.io_bytes + p.w_bytes))
            levels = blocking(
                (p.batch, *p.x_shape[1:]), p.pads, kernel, p.stride, p.dilation,
                itemsize=itemsize, temp_channels=temp_channels, room=room,
                min_bytes=prof.block_min_bytes, max_bytes=prof.block_max_bytes,
                # (1-D: the only axis; the halo is read with each block.)
                block_last=name == "im2col" or p.nd == 1)
        params["blocks"] = levels
        rows = math.prod(p.out_spatial)
        for axis, r, nb in levels:
            rows = rows // p.out_spatial[axis] * r
        temp = p.batch * rows * temp_channels * itemsize
        steps = math.prod(nb for _, _, nb in levels) if levels else 0
        if tap_groups:
            steps = t // tap_groups
        if params.get("row_loop"):
            steps = kernel[0]
        if levels and (name in ("wide", "alltaps", "shifted")
                       or (name == "im2col" and i > prof.im2col_max_i)):
            params["input_tangent"] = "taps-scan"
        if _tap_gemm_kernel_tangent(p, prof):
            params["kernel_tangent"] = "tap-gemms"
        elif tap_groups or params.get("row_loop"):
            pass  # (an unblocked patch matrix would outgrow the loop's products)
        elif name != "im2col" and o + 2 * t * i <= 2 * temp_channels:
            # The kernel gradient of a shifted-sum form transposes into a
            # sum of shifted cotangents; the patch form's is one GEMM per
            # block (in the same blocks: only where its patches take at most
            # twice the block's temporaries).
            params["kernel_tangent"] = "im2col"
    elif name in ("dot", "taps"):
        unrolled = p.taps <= prof.unroll_limit
        block_temp = 0
        if name == "taps" and _blocked_tap_loop(p, prof):
            # Blocks of output rows whose accumulator stays cache-sized
            # (every tap adds into it); within a block a scan over taps.
            b = prof.tap_block_bytes
            levels = blocking(
                (p.batch, *p.x_shape[1:]), p.pads, p.kernel, p.stride, p.dilation,
                itemsize=itemsize, temp_channels=p.out_channels, room=b,
                min_bytes=b, max_bytes=b, block_last=True)
            params["blocks"] = levels
            params["scan"] = True
            steps = p.taps * math.prod(nb for _, _, nb in levels)
            # per block: its output, its padded input rows and one tap's window
            frac = math.prod(r / p.out_spatial[a] for a, r, _ in levels)
            block_temp = int(frac * (p.out_bytes + 2 * p.in_bytes))
        elif not unrolled or (name == "taps" and (_tap_loop(p, prof)
                                                or _kernel_bound_loop(p, prof))):
            params["scan"] = True
            steps = p.taps
        if name == "taps" and unrolled and _tap_gemm_kernel_tangent(p, prof):
            params["kernel_tangent"] = "tap-gemms"
        elif name == "taps" and unrolled and _outer_products(p, prof):
            # Autodiff would reduce each tap's product over every position
            # separately (a skinny GEMM per tap); the patch form's kernel
            # gradient is one GEMM (on a U-Net's input layer at batch 8 the
            # gradient ran 0.2x of lax with autodiff, 0.9-1.1x with this).
            params["kernel_tangent"] = "im2col"
        temp = block_temp or p.out_bytes
    elif name == "s2d":
        xs, ws, stride = space_to_depth.inner_shapes(p)
        sub = dataclasses.replace(p, x_shape=xs, w_shape=ws, stride=stride,
                                  pads=((0, 0),) * p.nd)
        inner = (make_plan(sub, prof, *choose(sub, prof)),)
        params["inner"] = inner[0].formulation
        if not space_to_depth.exact(p):
            params["guard"] = _guard("finite inputs", prof)
        temp, steps = inner[0].temp_bytes + sub.in_bytes, inner[0].loop_steps
    elif name == "groupgemm":
        # Per output position: the patches (T*C values), the GEMM output and
        # its groups-last copy; plus the groups-first copy of the input.  The
        # patches are T times the input (stride 1): blocks of the largest
        # size (cache-sized on cpu) rather than a fraction of the memory
        # bound, whose loop steps slowed the stage-4 ResNeXt layers at batch
        # 8 1.4-2.2x (docs/auto.md).
        temp_channels = p.taps * p.channels + 2 * p.out_channels
        levels = blocking(
            (p.batch, *p.x_shape[1:]), p.pads, p.kernel, p.stride, p.dilation,
            itemsize=itemsize, temp_channels=temp_channels,
            room=prof.block_max_bytes, min_bytes=prof.block_max_bytes,
            max_bytes=prof.block_max_bytes, block_last=True)
        params["blocks"] = levels
        rows = math.prod(p.out_spatial)
        for axis, r, _ in levels:
            rows = rows // p.out_spatial[axis] * r
        temp = p.batch * rows * temp_channels * itemsize + p.in_bytes
        steps = math.prod(nb for _, _, nb in levels) if levels else 0
    elif name == "grouped":
        rule = grouped.rule_applies(p, prof)
        if grouped.rows_applies(p, prof):
            params["form"] = "rows-scan"
            steps = p.kernel[0]
        else:
            params["form"] = "unrolled"
        params["kernel_grad"] = "rowscan" if rule else "autodiff"
        if rule:
            params["row_width"] = _row_width(p, prof)
        temp = p.out_bytes
    elif name == "depthwise":
        if p.taps <= prof.unroll_limit:
            params["form"] = "unrolled"
            params["pad_in_loop"] = pad_in_loop = p.taps <= prof.pad_in_loop_max_taps
            rule = prof.custom_kernel_grads and p.inexact
            params["kernel_grad"] = (("rowscan" if p.nd >= 2 else "flat") if rule
                                     else "autodiff")
            if params["kernel_grad"] == "rowscan":
                params["row_width"] = _row_width(p, prof)
            if rule and math.prod(p.out_spatial) <= prof.kernel_grad_positions_max:
                # Few output positions: the kernel gradient is one fused
                # loop over them (positions.kernel_grad, run by
                # the kernel gradient itself); the tangent above stays for
                # forward mode.
                params["kernel_grad"] = "positions"
            if pad_in_loop and any(pp != (0, 0) for pp in p.pads) and p.inexact:
                params["guard"] = depthwise.POISONED
            if not pad_in_loop:
                temp = p.in_bytes
        elif depthwise.rows_scan_applies(p, prof):
            params["form"] = "rows-scan"
            steps = p.kernel[0]
        else:
            params["form"] = "taps-scan"
            steps = p.taps
    elif name == "toeplitz":
        hankel = toeplitz.hankel_applies(p, prof)
        params["form"] = "hankel" if hankel else "scan"
        params["block"] = b = prof.toeplitz_block
        params["guard"] = ("re-poisoned windows" if prof.branch_free
                           else "finite inputs")
        if prof.depthwise_gemm_precision:
            params["precision"] = prof.depthwise_gemm_precision
        inner = (make_plan(p, prof, "depthwise", "exact fallback: non-finite input"),)
        m_blocks = -(-(b + p.taps - 1) // b)
        steps = p.channels if hankel else m_blocks
        temp = 2 * p.in_bytes + (2 * p.batch * p.padded_shape[1] * m_blocks * itemsize
                                 if hankel else p.out_bytes)
    elif name == "spectral":
        params["guard"] = "finite inputs"
        inner = (make_plan(p, prof, "depthwise", "exact fallback: non-finite input"),)
        # The input padded to the transform length, its spectrum and the
        # spectra's product (half-length complex: each the padded input's
        # bytes); measured 3.5 MB for long1d's 1.2 MB padded input.
        length = next_fast_len(p.padded_shape[1])
        temp = 3 * p.batch * length * p.channels * p.acc_itemsize
    elif name == "polyphase" and polyphase.depth_to_space_applies(p, prof):
        params["phases"] = math.prod(p.lhs_dilation)
        params["depth_to_space"] = True
        temp = p.out_bytes
    elif name == "polyphase":
        counts = polyphase.phase_taps(p)
        forms = [polyphase.phase_form(t, p.groups, p.in_per_group, p.inexact, prof)
                 for t in counts]
        one = polyphase.one_gemm_applies(p, prof)
        params["phases"] = math.prod(p.lhs_dilation)
        params["phase_forms"] = tuple(sorted(set(forms)))
        params["one_gemm"] = one or None
        steps = 0 if one else sum(t for t, f in zip(counts, forms) if f == "scan")
        if one:  # every tap times every real input, cropped products included
            flops = 2 * p.in_per_group * polyphase.one_gemm_values(p)
        else:
            flops = (2 * math.prod(p.out_shape) * p.in_per_group * sum(counts)
                     // max(1, math.prod(p.lhs_dilation)))
        if "im2col|gemm" in forms and not one:
            params["guard"] = _guard("finite weights", prof)
        if "gemm" in forms and p.inexact and _has_border(p):
            # The transpose of a "gemm" phase meets border elements with
            # taps that never read them: every tap at once against the
            # cotangent's strided slices instead, the border tap by tap.
            params["kernel_grad"] = "cotangent"
        elif "im2col|gemm" in forms and p.inexact and prof.custom_kernel_grads:
            # The transpose of an "im2col|gemm" phase builds its patches
            # again, and meets their padding zeros with the cotangent:
            # per-tap GEMMs of the real inputs instead (below the profile's
            # positions, the patches when the cotangent is finite).
            params["kernel_grad"] = "taps"
        temp = 2 * p.out_bytes
        if one:
            temp += polyphase.one_gemm_bytes(p)
    if name in (*dense.BLOCKED, "taps") and _tap_scan_kernel_grad(p, prof):
        params["kernel_grad"] = "tap-scan"
        block = _hankel_kernel_grad_block(p, prof)
        if block is not None:
            params["kernel_grad"], params["hankel_block"] = "hankel", block
    return Plan(name, p, prof, reason, tuple((k, v) for k, v in params.items()
                                              if v is not None),
                inner, flops, temp, steps)


def _tap_gemm_kernel_tangent(p: Problem, prof: Profile) -> bool:
    """Whether a 1-D dense kernel gradient runs one 2-D GEMM per tap.

    On one image each tap's rows are a contiguous block of its ``(L, I)``
    matrix, so the kernel gradient is one 2-D GEMM per tap on the image
    itself.  On HiFi-GAN's 1-D layers at batch 1 with 1024-4096 output rows
    this ran the gradient up to 1.5x faster than the patch form; with 16 or
    128 rows it was slower (each tap writes its own ``(I, O)`` product, a
    lot of traffic for so little depth), and at batch 8 the same GEMMs
    batched over images were as often slower as faster (BENCHMARKS.md).
    """
    return (prof.tap_gemm_kernel_tangent and _dense_1d_taps(p) and _one_image(p)
            and p.out_spatial[0] >= prof.tap_gemm_min_rows)


def _tap_scan_kernel_grad(p: Problem, prof: Profile) -> bool:
    """Whether a dense kernel gradient runs as a scan of per-tap 2-D GEMMs.

    2-D and 3-D problems: :func:`_tap_scan_kernel_grad_nd`.  In 1-D:

    Over a batch of images a tap's rows are not one contiguous block, but
    ``x[:, k*d : k*d + L_out]`` flattened to an ``(N * L_out, I)`` matrix
    is one copy, and ``dw[k]`` one 2-D GEMM of it with the ``(N * L_out,
    O)`` cotangent (``dense.kernel_grad_tap_scan``, run by the kernel
    gradient of the ``jaxconv_conv`` primitive).  A scan over the taps keeps
    one tap's copy live (unrolled, XLA kept them all: 44 MB for 11 taps, 2x
    slower); the patch form's GEMM per row block ran up to 2.8x slower on
    HiFi-GAN's layers at batch 8 (faster on one of five shapes: 11 taps on
    64 channels).  On one image it takes over from the kernel tangent's
    per-tap GEMMs from ``tap_gemm_min_rows`` output rows on: the row-blocked
    forms ran those per block (kernel gradient alone on HiFi-GAN's
    2048-4096-row layers at batch 1: 0.62-0.99 -> 0.97-1.20 of lax's
    speed); on 16-128 rows the scan was slower.  A single output channel
    makes each tap a matrix-vector product, where the patch form's one GEMM
    is faster.
    """
    if p.nd >= 2:
        return _tap_scan_kernel_grad_nd(p, prof)
    return (_dense_1d_taps(p) and p.out_channels >= prof.tap_scan_min_o
            and (not _one_image(p) or p.out_spatial[0] >= prof.tap_gemm_min_rows))


def _hankel_kernel_grad_block(p: Problem, prof: Profile) -> int | None:
    """The block length of a 1-D kernel gradient run as one block-Hankel
    GEMM (``dense.kernel_grad_hankel``), or None for the tap scan.

    For layers of ``hankel_kernel_grad_min_i`` to
    ``hankel_kernel_grad_max_i`` input channels and at least
    ``hankel_kernel_grad_min_tap_channels`` taps times input channels: the
    tap scan's per-tap GEMMs ``(I, N * L) @ (N * L, O)`` have
    outputs of a few thousand values, which XLA:CPU computes far below its
    GEMM rate; the one GEMM of ``(B + T - 1) * I`` by ``B * O`` outputs
    does ``(B + T - 1) / T`` times their multiplies and ran the whole
    gradient of HiFi-GAN's 7- and 11-tap layers of 64 channels 1.4-1.7x
    faster at batch 8 and its 11-tap layers of 32 channels 1.1-1.3x,
    dilated or not (7 taps on 32 channels, or 128 channels: 0.9-1.1x; 3
    taps: no faster).  The block: the first of ``hankel_kernel_grad_blocks``
    that cuts every dilation phase into whole blocks, else the first (the
    guarded form); no positive block, the tap scan.
    """
    depth = p.taps * p.in_per_group
    if p.nd != 1 or depth < prof.hankel_kernel_grad_min_tap_channels \
            or not (prof.hankel_kernel_grad_min_i <= p.in_per_group
                    <= prof.hankel_kernel_grad_max_i):
        return None
    return dense.hankel_block(p.out_spatial[0], p.dilation[0],
                              prof.hankel_kernel_grad_blocks)


def _tap_scan_kernel_grad_nd(p: Problem, prof: Profile) -> bool:
    """Whether a 2-D/3-D dense kernel gradient runs as a scan of per-tap GEMMs.

    The same scan as in 1-D: each tap's window of every image, copied to an
    ``(N * prod(out), I)`` matrix, times the flattened cotangent.  The
    transpose of the row-blocked patch form multiplies a few hundred rows
    per block with a transposed operand; the per-tap GEMMs contract over
    all rows at once.  On the 32 zoo gradient records the rule picks (the
    U-Net's and ResNets' 3x3 layers at 8x8 and more, the 3-D U-Net's 3x3x3
    layers) the gradient went 1.29 -> 1.55x of lax's speed (geomean; 1.20x
    faster, 0.96-1.81x per layer; 3-D U-Net ``up2.conv1`` at batch 8, 10.9
    GFLOP: 0.85 -> 1.24).  With the scan on every dense stride-1 3x3 layer
    of those models it lost where: a few hundred output positions or fewer
    (kernel-bound layers, whose per-tap products are mostly output
    writes), fewer than ``tap_scan_nd_min_i`` input channels, and in 2-D,
    per-tap products of fewer than ``tap_scan_2d_min_io`` values (``I *
    O``; 64 x 64 on 64x64 images ran at 0.8x of the planned forms), whose
    GEMMs run far below the machine's rate.  A symbolic batch counts as one
    image.
    """
    rows = p.batch * math.prod(p.out_spatial)
    io = p.in_per_group * p.out_channels
    return (p.stride1 and p.groups == 1 and p.taps > 1 and not p.transposed
            and p.out_channels >= prof.tap_scan_min_o
            and rows >= prof.tap_scan_nd_min_rows
            and p.in_per_group >= prof.tap_scan_nd_min_i
            and (p.nd >= 3 or io >= prof.tap_scan_2d_min_io))


def _shifted_2d(p: Problem, prof: Profile) -> bool:
    """Whether a dense 2-D stride-1 layer runs ``"shifted"`` (``shifted_2d_min_i``).

    Only where the row blocks hold every tap's products within the memory
    rule's room, ``2 x (input + kernel + output)``: the blocks are sized for
    ``k_w + 1`` products per output position, but XLA keeps all ``T`` live
    until its one fused sum (measured temporaries of 1.2-2.2x the room on
    one-image layers otherwise; sizing the blocks for all ``T`` instead
    made the form lose its speed).
    """
    if not (p.nd == 2 and p.stride1 and p.in_per_group >= prof.shifted_2d_min_i
            and _alltaps_bytes(p) > prof.alltaps_max_bytes):
        return False
    blocked = make_plan(p, prof, "shifted", "")
    live = blocked.temp_bytes * (p.taps + 1) // (p.kernel[-1] + 1)
    return live <= 2 * (p.io_bytes + p.w_bytes)


def _kernel_bound(p: Problem, prof: Profile) -> bool:
    """Whether a dense conv is kernel-bound: stride 1, more than a few input
    channels, and a kernel of more than ``kernel_bound_ratio`` times the
    input's bytes (few positions, many channels: its GEMMs stream the
    weights)."""
    return (p.groups == 1 and p.in_per_group > prof.im2col_max_i and p.stride1
            and p.w_bytes > prof.kernel_bound_ratio * p.in_bytes)


def _kernel_bound_loop(p: Problem, prof: Profile) -> bool:
    """Whether kernel-bound per-tap GEMMs (2-D, 3-D) run in a loop over taps
    (the profile's ``kernel_bound_scan``, whose documentation says why)."""
    return (prof.kernel_bound_scan and p.nd >= 2 and not p.transposed
            and _kernel_bound(p, prof) and p.patch_bytes > prof.cache_patch_bytes)


def _tap_loop(p: Problem, prof: Profile) -> bool:
    """Whether a 1-D dense conv runs its per-tap GEMMs in a loop over taps.

    Deep enough GEMMs (``I >= tap_loop_min_i``) and enough taps: unrolled,
    XLA keeps every tap's input slice and product live together (48 MB for
    11 taps on 8 x 1024 x 128, past the 32 MiB at which the temporaries are
    mapped afresh on every call); in a scan one tap's are.  The one-GEMM
    forms multiply ``taps`` times wider partial outputs and sum them shifted.
    """
    return (_dense_1d_taps(p) and p.in_per_group >= prof.tap_loop_min_i
            and p.taps >= prof.tap_loop_min_taps)


def _dense_1d_taps(p: Problem) -> bool:
    """A 1-D dense stride-1 kernel with several taps (not transposed)."""
    return (p.nd == 1 and p.stride1 and p.groups == 1 and p.taps > 1
            and not p.transposed)


def _one_image(p: Problem) -> bool:
    """The batch is one image (a symbolic batch is not known to be one)."""
    return isinstance(p.x_shape[0], int) and p.x_shape[0] == 1


def _outer_products(p: Problem, prof: Profile) -> bool:
    """Whether a dense ``"taps"`` plan is a sum of per-tap outer products."""
    return (p.stride1 and p.groups == 1 and not p.transposed
            and p.in_per_group <= prof.outer_max_i and p.taps > 1)


def candidates(problem: Problem, profile: Profile | None = None) -> list[Plan]:
    """The formulations ``"auto"`` may run for ``problem`` (what autotune times):
    the exact ones, and the guarded transform where it applies.

    One applicability rule with :func:`choose`: the choice of ``"auto"`` is
    always among them.
    """
    p, prof = problem, profile or current_profile()
    name, reason = choose(p, prof)
    names = [name]
    if p.depthwise and not p.transposed:
        names = ["depthwise"] + (["toeplitz"] if toeplitz.applies(p, prof) else [])
        names += ["spectral"] if spectral.applies(p, prof) else []
    elif p.transposed or p.taps == 1:
        pass
    elif p.groups > 1:
        names = ["grouped"] if p.in_per_group <= prof.grouped_max_i else []
        names += ["groupgemm", "taps"] if p.taps <= prof.unroll_limit else ["taps"]
    else:
        names = ["taps"]
        if p.taps <= prof.unroll_limit:
            names.append("im2col")
            if p.stride1:
                names.append("alltaps")
            if p.stride[-1] == 1 and p.kernel[-1] > 1:
                names += ["rows", "wide", "shifted"]
            if space_to_depth.applies(p):
                names.append("s2d")
    return [make_plan(p, prof, n, reason if n == name else "candidate")
            for n in names]


# --- the registry ----------------------------------------------------------------


def _padded(fn):
    """Adapt an algorithm taking a padded input to the registry signature."""
    def run(x, w, plan, precision):
        p = plan.problem
        return fn(pad_spatial(x, p.pads), w, stride=p.stride, dilation=p.dilation,
                  groups=p.groups, precision=precision, acc_dtype=p.acc_dtype)
    return run


REGISTRY = {
    **{name: dense.run for name in dense.NAMES},
    "s2d": space_to_depth.run,
    "grouped": grouped.run,
    "groupgemm": groupgemm.run,
    "depthwise": depthwise.run,
    "toeplitz": toeplitz.run,
    "spectral": spectral.run,
    "polyphase": polyphase.run,
    "direct": _padded(conv_direct),
    "patches": _padded(conv_patches),
    "fft": _padded(conv_fft),
    "winograd": _padded(conv_winograd),
}


def execute(x, w, plan: Plan, precision=None):
    """Run ``plan`` on the unpadded input ``x`` and kernel ``w``.

    Returns ``(N, *out, O)`` in the problem's ``acc_dtype``; the work is
    named ``jaxconv.<formulation>`` in jaxprs, HLO and profiles.
    """
    with jax.named_scope(f"jaxconv.{plan.formulation}"):
        return REGISTRY[plan.formulation](x, w, plan, precision)


def per_example_loop(one: Plan, examples: int, prof: Profile) -> bool:
    """Whether per-example kernel gradients (``vmap(grad(...))``) of
    ``examples`` examples, each planned as ``one``, run one example after
    another (``lax.map``) rather than vmapped side by side.

    Vmapped, every scan step of the plan gets the examples' axis: per-tap
    GEMMs in a loop become batched GEMMs and their carries ``B`` times
    larger, and the 1-D depthwise kernel tangent's reductions keep a batch
    axis, which XLA:CPU reduces several times slower.  Plans without a loop
    (one patch GEMM per example, the fused depthwise loop) run faster side
    by side, except a depthwise row scan whose examples' outputs together
    reach ``prof.per_example_loop_min_bytes`` (its vmapped temporaries grow
    with them); a grouped row scan loops where
    :func:`per_example_grouped_rows` says so.  Measured on the zoo's
    batch-8 per-example records (2-core CPU): looping ran 1.00-1.63x (5.7x
    for HiFi-GAN's one-output layer) on most loop plans and 0.43-0.99x on
    most of the others.
    """
    if not prof.per_example_loop:
        return False
    rows = per_example_grouped_rows(one, examples, prof)
    if rows is not None:
        return rows == "loop"
    if one.formulation == "spectral":
        # A guard's ``lax.cond`` vmapped over examples (its predicate differs
        # per example) becomes a select that runs both branches.
        return True
    if (one.loop_steps > 0 or one.param("kernel_grad") in ("tap-scan", "hankel", "flat")
            or one.param("kernel_tangent") == "tap-gemms"):
        return True
    return (one.param("kernel_grad") == "rowscan"
            and examples * one.problem.out_bytes >= prof.per_example_loop_min_bytes)


def per_example_grouped_rows(one: Plan, examples, prof: Profile) -> str | None:
    """How per-example kernel gradients of ``examples`` examples of a
    grouped (not depthwise) layer run where one example's plan is the
    fused multiply-adds with the row-scan kernel gradient: ``"vmap"``,
    side by side, while every example's accumulator rows together take at
    most ``prof.per_example_grouped_carry_bytes``; ``"loop"``, one example
    after another, beyond; ``None``: folded into ``B * G`` feature groups
    (the field 0, a symbolic example count, or another plan).  With that
    field 0, examples whose accumulators together reach
    ``prof.per_example_grouped_loop_min_bytes`` run ``"loop"`` and smaller
    ones fold.

    Folding transposes the input and the cotangent so that the examples
    join the channels; each example's own row scan reads both in place.
    Measured on a 2-core Intel Xeon, per-example against the batched
    gradient at batch 8: group32 (28 x 28 x 256, 32 groups; 16.5 MB of
    accumulators side by side) folded 0.75, side by side 0.79, looped 0.99;
    ResNeXt-50 ``layer1.0.conv2`` (16 x 16 x 128; 2.4 MB) 0.82 / 1.01 /
    0.80.
    """
    p = one.problem
    if (one.formulation != "grouped" or one.param("kernel_grad") != "rowscan"
            or p.nd < 2 or not isinstance(examples, int)):
        return None
    width = one.param("row_width") or p.out_spatial[1]
    carry = examples * width * rowscan.column_bytes(
        p.out_spatial, p.taps, p.in_per_group, p.out_channels, p.acc_itemsize)
    if prof.per_example_grouped_carry_bytes <= 0:
        # (on a 2-core AMD EPYC folding beat both other forms on ResNeXt-50
        # ``layer1.0.conv2``, 2.4 MB, and lost to the loop on group32)
        big = carry >= prof.per_example_grouped_loop_min_bytes
        return "loop" if big and prof.per_example_loop else None
    if carry <= prof.per_example_grouped_carry_bytes:
        return "vmap"
    return "loop" if prof.per_example_loop else None


def per_example_positions(one: Plan, prof: Profile) -> bool:
    """Whether per-example kernel gradients of one image each, planned as
    ``one``, are computed as sums of products over the output positions
    (``positions.kernel_grads``, every example at once).

    Depthwise plans whose kernel gradient already runs that way
    (``kernel_grad="positions"``), and dense ones of at most
    ``prof.per_example_positions_max`` output positions: their per-example
    kernel gradient is a GEMM of depth ``positions`` per example, which
    XLA:CPU runs far below its rate and whose ``(I, O)`` result it copies
    into the kernel's layout (a 1x1 kernel's unit axes), where the fused
    products write each example's kernel once.  Kernels whose windows do
    not overlap (a 2x2 kernel of stride 2: the patches are a reshape of the
    input, one GEMM per example with nothing to copy) keep their GEMM.
    """
    p = one.problem
    if one.param("kernel_grad") == "positions":
        return True
    disjoint = p.taps > 1 and all(d * (k - 1) + 1 <= s for k, s, d
                                  in zip(p.kernel, p.stride, p.dilation))
    return (p.groups == 1 and p.inexact and all(d == 1 for d in p.lhs_dilation)
            and not disjoint
            and math.prod(p.out_spatial) <= prof.per_example_positions_max)


def per_example_patches(one: Plan, prof: Profile, examples=None) -> bool:
    """Whether per-example kernel gradients of ``examples`` examples (an
    int; a symbolic or unknown count never takes the size-bounded form
    below), each planned as ``one``, run as one GEMM per example and tap,
    every example at once (``tapgemm.kernel_grads``).

    Dense kernels of several taps whose positions per example (a transposed
    layer's input positions, the ones its GEMMs contract) are at most
    ``prof.per_example_patches_ratio`` times the output channels: the
    gradient then costs what writing the kernels costs, and the patches (or
    the cotangent's per-tap slices) are small beside them.  Transposed
    (lhs-dilated, stride-1) layers would otherwise fold the examples into
    feature groups, GEMMs of the examples' channels written ``(O, I)`` and
    then transposed; ordinary layers run each example's planned gradient
    one after another, which wins until each example's kernel reaches
    ``prof.per_example_patches_min_bytes``, or until the example's plan is
    a patch matrix (``"im2col"``) built in row blocks, a loop each example
    would run on its own, whose whole matrix takes at most
    ``prof.per_example_patches_cache_bytes`` and every example's together
    at most ``prof.per_example_patches_total_bytes`` (and the workspace,
    which they come out of): then one GEMM per example over its whole
    patch matrix (all taps at once, the matrix that ``"im2col"`` builds
    for a batch).  Grouped (not depthwise, not
    lhs-dilated) kernels: one GEMM per example and group where each
    example's patches take at most ``prof.per_example_grouped_patch_bytes``
    (folded into feature groups otherwise).
    """
    p = one.problem
    if p.taps == 1 or p.in_per_group == 1:
        return False
    if p.groups != 1:
        return (all(d == 1 for d in p.lhs_dilation)
                and p.patch_bytes <= prof.per_example_grouped_patch_bytes)
    lhs_dilated = any(d != 1 for d in p.lhs_dilation)
    if lhs_dilated and not p.stride1:
        return False
    if (not lhs_dilated and one.formulation == "im2col" and one.loop_steps > 0
            and p.patch_bytes <= prof.per_example_patches_cache_bytes
            and isinstance(examples, int)
            and examples * p.patch_bytes <= min(prof.per_example_patches_total_bytes,
                                                prof.workspace_bytes)):
        return True
    positions = p.batch * math.prod(p.x_shape[1:-1] if lhs_dilated else p.out_spatial)
    if positions > prof.per_example_patches_ratio * p.out_channels:
        return False
    return lhs_dilated or p.w_bytes >= prof.per_example_patches_min_bytes


def per_example_cotangent(one: Plan, prof: Profile) -> bool:
    """Whether per-example kernel gradients, each planned as ``one``, run as
    one GEMM per example against the cotangent's shifted copies, every
    example at once (``tapgemm.kernel_grads_by_cotangent``): dense
    stride-1 kernels of several taps, one group, whose ``T * O`` copies per
    input position take at most ``prof.per_example_cotangent_ratio`` times
    the values of the input's ``I`` channels over the ``prod(s)`` positions
    of its lhs dilation (a transposed layer's stride ``s``; one without).
    """
    p = one.problem
    copies = p.taps * p.out_channels
    return (p.groups == 1 and p.taps > 1 and p.stride1 and p.inexact
            and copies <= prof.per_example_cotangent_ratio * p.in_per_group
            * math.prod(p.lhs_dilation))


# Formulations that run one GEMM over every input position against all taps
# and then sum shifted slices of its product: their autodiff kernel gradient
# contracts each input position with a cotangent that holds zeros for the
# taps that never pair it (near the borders).
SHIFTED_SUM_FORMS = ("alltaps", "wide", "shifted")


def kernel_grad_spreads(chosen: Plan) -> bool:
    """Whether ``chosen``'s autodiff kernel gradient lets a non-finite input
    element reach taps it never pairs with an output.

    The shifted-sum forms (:data:`SHIFTED_SUM_FORMS`) contract every input
    position with every tap's cotangent, zero where the tap pairs that
    position with no output; ``0 * NaN`` is NaN, so a NaN near the border
    would spoil the gradient of taps lax's gradient leaves finite.  Their
    patch-form (``kernel_tangent="im2col"``) and per-tap
    (``"tap-gemms"``) kernel tangents pair only real windows, as does a
    plan whose kernel gradient is computed directly (``kernel_grad``); a
    space-to-depth plan spreads where its stride-1 inner plan does, and a
    transposed (polyphase) plan where one of its phases is one GEMM against
    all the phase's taps (the ``"gemm"`` phase form), or every phase is a
    sum of slices of one GEMM against every tap (``one_gemm``), unless the plan
    computes its kernel gradient itself (``kernel_grad="cotangent"``, which
    pairs real windows only).  The
    kernel gradient of such a plan runs on the input with its non-finite
    elements zeroed and is then poisoned per tap
    (``guards.tap_hits``, run by the ``jaxconv_conv`` primitive).
    """
    if chosen.formulation == "s2d":
        return bool(chosen.inner) and kernel_grad_spreads(chosen.inner[0])
    if chosen.formulation == "polyphase":
        # A "gemm" phase multiplies every real input by all the phase's taps
        # and sums shifted slices of the product (a shifted-sum form); the
        # plan's own kernel gradient ("cotangent") pairs real windows only.
        gemm = chosen.param("one_gemm") or "gemm" in chosen.param("phase_forms", ())
        return (gemm and chosen.problem.inexact
                and _has_border(chosen.problem) and chosen.param("kernel_grad") is None)
    return (chosen.formulation in SHIFTED_SUM_FORMS and chosen.problem.groups == 1
            and chosen.problem.inexact
            and chosen.param("kernel_grad") is None
            and chosen.param("kernel_tangent") not in ("im2col", "tap-gemms"))


def _has_border(p: Problem) -> bool:
    """Whether some tap of ``p`` leaves an input element unpaired with any
    output: within ``(K-1)*d`` of an edge, less the padding on that side."""
    return any((k - 1) * d > min(lo, hi)
               for k, d, (lo, hi) in zip(p.kernel, p.dilation, p.pads))


def _row_width(p: Problem, prof: Profile) -> int:
    """The kernel-gradient row scan's output columns per step (``rowscan.py``):
    one example's accumulators within ``prof.rowscan_carry_bytes``."""
    return rowscan.row_width(p.out_spatial, p.taps, p.in_per_group, p.out_channels,
                             p.acc_itemsize, prof.rowscan_carry_bytes)


def _guard(what: str, prof: Profile) -> str:
    """How a guard on ``what`` runs: a conditional, or both sides selected."""
    return f"{what} ({'select' if prof.branch_free else 'cond'})"


def _dims(values) -> str:
    return "x".join(str(v) for v in values)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def _blocked_tap_loop(p: Problem, prof: Profile) -> bool:
    """Whether a 2-D/3-D dense stride-1 conv runs per-tap GEMMs in a loop over
    taps inside row blocks of a cache-sized output.

    Each tap is one GEMM of its window ``(rows, I) @ (I, O)`` added into the
    block's output: no patch matrix, and GEMMs that contract over ``I``
    for every row of the block at once.  Not for kernel-bound layers (their
    own rule, :func:`_kernel_bound_loop`).  Where the kernel gradient is the
    per-tap scan (:func:`_tap_scan_kernel_grad_nd`: enough positions and
    channels; elsewhere the gradient through the blocked loop lost up to
    1.5x) and the output is at least ``tap_block_min_bytes``: on the 24
    zoo and suite records this changes (the U-Net's, the 3-D U-Net's and
    ``dense3_b8``/``vol3d``) the forward went 1.23 -> 1.37x of lax's speed
    (geomean; 0.98-1.46x per record; 3-D U-Net ``up2.conv1`` at batch 8:
    1.16 -> 1.60, U-Net ``down1.conv1`` at batch 1: 0.68 -> 0.90), the
    gradient (input gradients planned the same way) 1.67 -> 1.75.
    Unblocked, an output of 4-8 MB was re-read and re-written by every tap
    (3-D U-Net ``up3.conv1`` at batch 8: 2.08 -> 1.61); on smaller outputs
    the patch matrix's one GEMM was as fast or faster.
    """
    return (prof.tap_block_bytes > 0 and p.nd >= 2 and p.taps <= prof.unroll_limit
            and p.out_bytes >= prof.tap_block_min_bytes
            and not _kernel_bound(p, prof) and _tap_scan_kernel_grad_nd(p, prof))
