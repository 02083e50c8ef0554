"""The static facts of one canonical convolution, computed once.

Every formulation solves the same *canonical problem*: a strided, dilated,
feature-grouped correlation of a channels-last input ``x (N, *S, C)`` with a
kernel ``w (*K, I, O)`` (``C = groups * I``), after zero padding ``pads``
(which the formulation applies itself, often without a padded copy).  A
transposed convolution keeps its ``lhs_dilation`` (the sub-pixel plan,
``polyphase``, never builds the dilated input); everything else arrives
with ``lhs_dilation`` all ones.  :class:`Problem` holds those facts and the
quantities derived from them (output shape, FLOPs, bytes) so that the plan
and the formulations never recompute them.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .._args import as_int
from .._taps import valid_out_size


def _hint(n) -> int:
    """``n``, or 1 for a symbolic dimension (``jax.export``'s shape polymorphism).

    Planning only needs sizes to compare costs; a symbolic batch is planned
    as if it were one example.
    """
    return n if isinstance(n, int) else 1


@dataclasses.dataclass(frozen=True)
class Problem:
    """One canonical convolution (hashable, plain Python values).

    Attributes:
      x_shape: the input ``(N, *S, C)`` before ``pads`` (and before
        ``lhs_dilation``).
      w_shape: the kernel ``(*K, I, O)``.
      stride: one positive int per spatial axis.
      dilation: the kernel (rhs) dilation, one per spatial axis.
      groups: feature groups (``C = groups * I``).
      pads: ``(lo, hi)`` zero padding per spatial axis, of the lhs-dilated
        input; non-negative unless ``lhs_dilation`` has an entry > 1.
      dtype: the input's dtype name.
      w_dtype: the kernel's dtype name.
      acc_dtype: the dtype products are summed in.
      lhs_dilation: one positive int per spatial axis (> 1: transposed).
    """

    x_shape: tuple
    w_shape: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    pads: tuple[tuple[int, int], ...]
    dtype: str
    w_dtype: str
    acc_dtype: str
    lhs_dilation: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.lhs_dilation:
            object.__setattr__(self, "lhs_dilation", (1,) * self.nd)

    @classmethod
    def of(cls, x, w, *, stride, dilation, groups, pads=None, acc_dtype=None,
           lhs_dilation=None) -> Problem:
        """The problem of arrays (or tracers, or ShapeDtypeStructs) ``x``, ``w``."""
        nd = len(w.shape) - 2
        for d in x.shape[1:]:  # a symbolic batch is fine; sizes must be static
            as_int(d, "input size")
        return cls(
            x_shape=tuple(x.shape), w_shape=tuple(int(d) for d in w.shape),
            stride=tuple(int(s) for s in stride),
            dilation=tuple(int(d) for d in dilation), groups=int(groups),
            pads=tuple((int(lo), int(hi)) for lo, hi in (pads or ((0, 0),) * nd)),
            dtype=np.dtype(x.dtype).name, w_dtype=np.dtype(w.dtype).name,
            acc_dtype=np.dtype(acc_dtype or x.dtype).name,
            lhs_dilation=tuple(int(d) for d in (lhs_dilation or (1,) * nd)),
        )

    # --- shapes ----------------------------------------------------------------

    @property
    def nd(self) -> int:
        """Number of spatial axes."""
        return len(self.w_shape) - 2

    @property
    def kernel(self) -> tuple[int, ...]:
        """The kernel's spatial sizes ``K``."""
        return self.w_shape[:-2]

    @property
    def taps(self) -> int:
        """``T = prod(K)``."""
        return math.prod(self.kernel)

    @property
    def in_per_group(self) -> int:
        """``I``: input channels per group (the GEMM depth of one tap)."""
        return self.w_shape[-2]

    @property
    def out_channels(self) -> int:
        """``O``."""
        return self.w_shape[-1]

    @property
    def channels(self) -> int:
        """``C``: input channels."""
        return self.x_shape[-1]

    @property
    def batch(self) -> int:
        """``N`` as an int (1 for a symbolic batch)."""
        return _hint(self.x_shape[0])

    @property
    def transposed(self) -> bool:
        """Whether the input is lhs-dilated (a transposed convolution)."""
        return any(d > 1 for d in self.lhs_dilation)

    @property
    def stride1(self) -> bool:
        return all(s == 1 for s in self.stride)

    @property
    def depthwise(self) -> bool:
        """Every group holds one input channel (``I == 1``, ``groups == C``)."""
        return self.in_per_group == 1 and self.groups == self.channels

    @property
    def multiplier(self) -> int:
        """Output channels per group."""
        return self.out_channels // self.groups

    @property
    def inexact(self) -> bool:
        """Both operands are float or complex (differentiable)."""
        return all(np.issubdtype(np.dtype(d), np.inexact)
                   for d in (self.dtype, self.w_dtype))

    @functools.cached_property
    def padded_shape(self) -> tuple[int, ...]:
        """``(N, *P, C)``: the input after lhs dilation and ``pads``."""
        return (_hint(self.x_shape[0]),
                *((n - 1) * ld + 1 + lo + hi for n, ld, (lo, hi)
                  in zip(self.x_shape[1:-1], self.lhs_dilation, self.pads)),
                self.channels)

    @functools.cached_property
    def out_spatial(self) -> tuple[int, ...]:
        """Spatial output sizes ``floor((P - d*(k-1) - 1)/s) + 1``."""
        return tuple(valid_out_size(n, k, s, d) for n, k, s, d in zip(
            self.padded_shape[1:-1], self.kernel, self.stride, self.dilation))

    @property
    def out_shape(self) -> tuple[int, ...]:
        """``(N, *out, O)``."""
        return (self.batch, *self.out_spatial, self.out_channels)

    @property
    def empty(self) -> bool:
        return 0 in self.out_shape or 0 in self.padded_shape or 0 in self.w_shape

    # --- costs -----------------------------------------------------------------

    @property
    def acc_itemsize(self) -> int:
        return np.dtype(self.acc_dtype).itemsize

    @property
    def in_bytes(self) -> int:
        return math.prod(_hint(d) for d in self.x_shape) * np.dtype(self.dtype).itemsize

    @property
    def out_bytes(self) -> int:
        return math.prod(self.out_shape) * self.acc_itemsize

    @property
    def w_bytes(self) -> int:
        return math.prod(self.w_shape) * np.dtype(self.w_dtype).itemsize

    @property
    def patch_bytes(self) -> int:
        """Bytes of the whole patch matrix ``(N, *out, T * I)`` (accumulation dtype)."""
        return (math.prod(self.out_shape[:-1]) * self.taps * self.in_per_group
                * self.groups * self.acc_itemsize)

    @property
    def io_bytes(self) -> int:
        """Input plus output bytes (the memory rule allows twice this)."""
        return self.in_bytes + self.out_bytes

    @property
    def flops(self) -> int:
        """Multiply-adds counted as two: ``2 * |out| * T * I``."""
        return 2 * math.prod(self.out_shape) * self.taps * self.in_per_group

    def describe(self) -> str:
        """A one-line summary, e.g. ``1x56x56x64 * 3x3x64x64 s1 d1 g1``."""
        def dims(shape):
            return "x".join(str(d) for d in shape)
        text = (f"{dims(self.x_shape)} * {dims(self.w_shape)} "
                f"s{dims(self.stride)} d{dims(self.dilation)} g{self.groups}")
        if self.transposed:
            text += f" lhs_dil{dims(self.lhs_dilation)}"
        return text
