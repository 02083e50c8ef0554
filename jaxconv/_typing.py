"""Type aliases of the arguments every front-end shares.

They spell out what the one normaliser of each argument accepts
(``_args.ntuple`` for sizes; ``_args.pad_pairs`` and
``_args.normalize_padding_string`` for paddings), so that type checkers see
the real contract of the public signatures instead of ``Any``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

__all__ = ["Padding", "Size"]

#: One int for every spatial axis, or one int per spatial axis
#: (``kernel_size``, ``stride``, ``dilation``, ``window_shape``, ...).
Size: TypeAlias = int | Sequence[int]

#: A padding string (``"VALID"``, ``"SAME"``, ``"SAME_LOWER"``, ``"FULL"``,
#: ``"CAUSAL"``, any case), one int for both sides of every axis, or one entry
#: per spatial axis, each an int (both sides) or a ``(lo, hi)`` pair.
Padding: TypeAlias = str | int | Sequence[int | tuple[int, int]]
