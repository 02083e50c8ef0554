"""Static-argument normalisation and validation, shared by every module.

Every helper takes the user-facing argument ``name`` so that its error message
names the argument in backticks with its value and what was expected, e.g.
``"`stride` (=0) must be a positive integer."``.  Integers are anything that
``operator.index`` accepts (Python and NumPy integers) except ``bool``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

PADDING_STRINGS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")
DATA_FORMATS = ("channels_last", "channels_first")


def as_int(value: Any, name: str) -> int:
    """``value`` as a Python int, or a ``TypeError`` naming ``name``.

    >>> as_int(3, "stride")
    3
    """
    if isinstance(value, bool):
        raise TypeError(f"`{name}` (={value!r}) must be an integer, not a bool.")
    try:
        return operator.index(value)
    except TypeError:
        if type(value).__name__ == "_DimExpr":  # jax.export's symbolic dimension
            raise TypeError(
                f"`{name}` (={value!r}) is a symbolic dimension: jaxconv plans "
                "every convolution from static spatial and channel sizes, so only "
                "the batch axes may be symbolic when exporting (e.g. "
                "jax.export.symbolic_shape('b, 32, 32, 3')).") from None
        raise TypeError(
            f"`{name}` (={value!r}) must be an integer, got {type(value).__name__}."
        ) from None


def _is_sequence(value: Any) -> bool:
    """A list/tuple-like (or an array with at least one axis), not a string."""
    if isinstance(value, (str, bytes)):
        return False
    return isinstance(value, Sequence) or getattr(value, "ndim", 0) >= 1


def ntuple(value: Any, n: int, name: str) -> tuple[int, ...]:
    """An int repeated ``n`` times, or a length-``n`` sequence of ints as a tuple.

    Args:
      value: an integer, or a sequence of ``n`` integers (one per axis).
      n: the number of axes.
      name: the argument's name, for error messages.

    Returns:
      A tuple of ``n`` Python ints.

    Raises:
      ValueError: if ``value`` is a sequence whose length is not ``n``.
      TypeError: if ``value`` (or an element) is not an integer.

    Example:
      >>> ntuple(2, 3, "stride")
      (2, 2, 2)
      >>> ntuple([1, 2], 2, "dilation")
      (1, 2)
    """
    if _is_sequence(value):
        values = tuple(value)
        if len(values) != n:
            raise ValueError(
                f"`{name}` (={value!r}) must be an integer or a sequence of {n} "
                f"integers (one per spatial axis), got {len(values)} values."
            )
        return tuple(as_int(v, name) for v in values)
    return (as_int(value, name),) * n


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a bool (NumPy's too), else a ``TypeError`` naming ``name``.

    A string such as ``"no"`` would otherwise count as true.

    >>> check_bool(False, "ceil_mode")
    False
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"`{name}` (={value!r}) must be True or False, got "
                    f"{type(value).__name__}.")


def check_positive(value: Any, name: str) -> int:
    """``value`` as an int, checked to be >= 1.

    Raises:
      ValueError: if ``value`` < 1.
      TypeError: if ``value`` is not an integer.

    Example:
      >>> check_positive(3, "stride")
      3
    """
    v = as_int(value, name)
    if v < 1:
        raise ValueError(f"`{name}` (={value!r}) must be a positive integer.")
    return v


def check_nonnegative(value: Any, name: str) -> int:
    """``value`` as an int, checked to be >= 0.

    Example:
      >>> check_nonnegative(0, "n")
      0
    """
    v = as_int(value, name)
    if v < 0:
        raise ValueError(f"`{name}` (={value!r}) must be a non-negative integer.")
    return v


def positive_tuple(value: Any, n: int, name: str) -> tuple[int, ...]:
    """:func:`ntuple` whose entries must all be positive integers.

    Example:
      >>> positive_tuple(1, 2, "dilation")
      (1, 1)
    """
    values = ntuple(value, n, name)
    if any(v < 1 for v in values):
        if _is_sequence(value):
            raise ValueError(
                f"`{name}` (={value!r}) must contain only positive integers."
            )
        raise ValueError(f"`{name}` (={value!r}) must be a positive integer.")
    return values


def shape_tuple(value: Any, name: str, *, positive: bool = False) -> tuple[int, ...]:
    """A shape (a sequence of non-negative, or positive, ints) as a tuple.

    Example:
      >>> shape_tuple([28, 28], "in_shape")
      (28, 28)
    """
    if not _is_sequence(value):
        raise TypeError(
            f"`{name}` (={value!r}) must be a sequence of integers (one per "
            f"spatial axis)."
        )
    values = tuple(as_int(v, name) for v in value)
    low = 1 if positive else 0
    if any(v < low for v in values):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"`{name}` (={value!r}) must contain only {kind} integers.")
    return values


def normalize_padding_string(value: str, allowed: Sequence[str] = PADDING_STRINGS):
    """The upper-cased padding string, checked against ``allowed``.

    Raises:
      ValueError: for an unknown padding string.

    Example:
      >>> normalize_padding_string("same_lower")
      'SAME_LOWER'
    """
    upper = value.upper()
    if upper not in allowed:
        options = ", ".join(f'"{a}"' for a in allowed)
        raise ValueError(
            f"`padding` (={value!r}) must be one of {options} (any case), an "
            f"integer, a sequence of integers or a sequence of (lo, hi) pairs."
        )
    return upper


def pad_pairs(value: Any, n: int, name: str = "padding") -> tuple[tuple[int, int], ...]:
    """Explicit (non-string) padding as ``n`` ``(lo, hi)`` pairs.

    Accepts an int (both sides of every axis), or a length-``n`` sequence whose
    entries are each an int (both sides of that axis) or a ``(lo, hi)`` pair.
    Plain ints must be non-negative; ``(lo, hi)`` pairs may be negative (they
    crop, as in ``jax.lax.pad``).

    Example:
      >>> pad_pairs(1, 2)
      ((1, 1), (1, 1))
      >>> pad_pairs([2, (0, -1)], 2)
      ((2, 2), (0, -1))
    """
    if isinstance(value, str):
        raise TypeError(f"`{name}` (={value!r}) must not be a string here.")
    if _is_sequence(value):
        entries = list(value)
        if len(entries) != n:
            raise ValueError(
                f"`{name}` (={value!r}) must have one entry per axis (={n}), "
                f"got {len(entries)}."
            )
        pairs = []
        for entry in entries:
            if _is_sequence(entry):
                pair = tuple(entry)
                if len(pair) != 2:
                    raise ValueError(
                        f"`{name}` (={value!r}) entries must be integers or "
                        f"(lo, hi) pairs, got {entry!r}."
                    )
                pairs.append((as_int(pair[0], name), as_int(pair[1], name)))
            else:
                p = as_int(entry, name)
                if p < 0:
                    raise ValueError(
                        f"`{name}` (={value!r}) must contain non-negative integers; "
                        f"use (lo, hi) pairs for negative (cropping) padding."
                    )
                pairs.append((p, p))
        return tuple(pairs)
    p = as_int(value, name)
    if p < 0:
        raise ValueError(
            f"`{name}` (={value!r}) must be a non-negative integer; use (lo, hi) "
            f"pairs for negative (cropping) padding."
        )
    return ((p, p),) * n


def check_data_format(value: Any) -> str:
    """``value`` checked to be ``"channels_last"`` or ``"channels_first"``.

    Example:
      >>> check_data_format("channels_first")
      'channels_first'
    """
    if not isinstance(value, str) or value not in DATA_FORMATS:
        raise ValueError(
            f'`data_format` (={value!r}) must be "channels_last" or "channels_first".'
        )
    return value


def static_dtype(dtype):
    """``dtype`` as a field of a jit static argument: its scalar type, or None.

    A ``np.dtype`` compares equal to ``None`` (``np.dtype(None)`` is
    float64), so two plans differing only in ``None`` against float64 would
    share a jit cache entry; scalar types compare by identity.  Everything
    that takes a dtype takes the scalar type too.

    Example:
      >>> import numpy as np
      >>> static_dtype(np.dtype("float64")) == static_dtype(None)
      False
      >>> np.dtype(static_dtype(np.dtype("float64")))
      dtype('float64')
    """
    return None if dtype is None else np.dtype(dtype).type


def check_dtypes(lhs_dtype, rhs_dtype, preferred_element_type):
    """jax.lax's dtype rules for convolutions; returns the canonical preferred dtype.

    Operands must share a dtype (``TypeError`` otherwise).  A
    ``preferred_element_type`` must suit it as in ``jax.lax``: integer
    (or bool) inputs may accumulate into any float type of any width (the
    signedness then does not matter); otherwise the kind must be kept (integer,
    floating or complex; bool inputs take any type), a signed integer input
    needs a signed type, and the type must not be narrower than the input.
    Kinds are those of ``jax.dtypes.issubdtype``, which knows the ml_dtypes
    types (``bfloat16`` is a float).

    Raises:
      TypeError: for different operand dtypes or an incompatible
        ``preferred_element_type``.

    Example:
      >>> import jax.numpy as jnp
      >>> check_dtypes(jnp.int8, jnp.int8, jnp.bfloat16)
      dtype(bfloat16)
      >>> check_dtypes(jnp.float32, jnp.float32, None) is None
      True
    """
    if lhs_dtype != rhs_dtype:
        raise TypeError(
            "jaxconv.lax.conv_general_dilated requires arguments to have the same "
            f"dtypes, got {lhs_dtype}, {rhs_dtype}."
        )
    if preferred_element_type is None:
        return None
    pref = jax.dtypes.canonicalize_dtype(np.dtype(preferred_element_type))
    inp = np.dtype(lhs_dtype)
    issub = jax.dtypes.issubdtype
    if not (issub(inp, np.integer) and issub(pref, np.floating)):
        for kind in (np.integer, np.floating, np.complexfloating):
            if issub(inp, kind) and not issub(pref, kind):
                raise TypeError(
                    f"`preferred_element_type` (={pref}) is incompatible with the "
                    f"input type (={inp}): the compatible combinations of "
                    "(input_type, preferred_element_type) are (integral, "
                    "integral), (integral, floating), (floating, floating), "
                    "(complex, complex)."
                )
        if issub(inp, np.signedinteger) and not issub(pref, np.signedinteger):
            raise TypeError(
                f"`preferred_element_type` (={pref}) must have the same "
                f"signedness as the input type (={inp})."
            )
    if pref.itemsize < inp.itemsize:
        raise TypeError(
            f"`preferred_element_type` (={pref}) must not be narrower than the "
            f"input type (={inp})."
        )
    return pref
