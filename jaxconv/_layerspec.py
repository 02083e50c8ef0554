"""The small layer language of ``jaxconv shapes``.

A model is a comma-separated list of layers; each layer is a name followed by
space-separated arguments::

    conv 3x3 32 same, relu, maxpool 2, conv 3x3 64, relu, gap, dense 10

================================  =============================================
``conv KxK C [opts]``             convolution with ``C`` output channels
``dconv KxK [M] [opts]``          depthwise conv (alias ``depthwise``), channel
                                  multiplier ``M`` (default 1)
``tconv KxK C [opts]``            transposed conv (alias ``deconv``)
``maxpool N [sN] [pad]``          max pooling, window ``N`` or ``NxN``
``avgpool N [sN] [pad]``          average pooling
``gap`` / ``gmp``                 global average / max pool
``flatten``                       flatten to a vector
``dense N``                       fully connected, ``N`` outputs (alias
                                  ``linear``, ``fc``)
``relu gelu tanh sigmoid silu``   activations (also ``elu``, ``softmax``)
``dropout P``                     dropout with rate ``P``
================================  =============================================

Options: a padding (``same``, ``valid``, ``full``, ``causal``, ``same_lower``
or ``pN`` for ``N`` cells on every side), ``sN`` stride, ``dN`` dilation,
``gN`` groups, a padding mode (``reflect``, ``replicate``, ``circular``,
``symmetric``), ``nobias``, and for ``tconv`` ``opN`` output padding.  A size
``KxK`` gives one entry per spatial axis (``3`` alone means every axis);
``sN``/``dN``/``pN`` also take ``NxM``.
"""

from __future__ import annotations

import re

from . import nn
from ._args import check_data_format

__all__ = ["LayerSpecError", "parse_layers", "parse_shape"]

_PADDINGS = {"same", "valid", "full", "causal", "same_lower"}
_MODES = {"reflect", "replicate", "circular", "symmetric", "zeros"}
_ACTIVATIONS = {
    "relu": nn.Relu, "gelu": nn.Gelu, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "silu": nn.Silu, "swish": nn.Silu, "elu": nn.Elu, "softmax": nn.Softmax,
    "identity": nn.Identity,
}
_SIZE = re.compile(r"^-?\d+(x-?\d+)*$")


class LayerSpecError(ValueError):
    """A malformed layer description (the message names the bad token)."""


def _size(token: str, what: str) -> int | tuple[int, ...]:
    if not _SIZE.match(token):
        raise LayerSpecError(f"{what} {token!r} is not a size like 3 or 3x3")
    values = tuple(int(v) for v in token.split("x"))
    if any(v < 1 for v in values):
        raise LayerSpecError(f"{what} {token!r} must be positive")
    return values[0] if len(values) == 1 else values


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse an input shape such as ``"28x28x1"`` or ``"28,28,1"``.

    Args:
      text: sizes separated by ``x``, ``,`` or spaces; each a positive int.

    Returns:
      The shape as a tuple of ints.

    Raises:
      LayerSpecError: for an empty, non-numeric or non-positive size.

    Example:
      >>> parse_shape("28x28x1")
      (28, 28, 1)
      >>> parse_shape("3, 224, 224")
      (3, 224, 224)
    """
    body = text.strip().strip("()[]").strip().rstrip(",")
    parts = re.split(r"\s*[x,]\s*|\s+", body)
    if not body:
        raise LayerSpecError(f"input shape {text!r} is empty")
    shape = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            if not p:
                raise LayerSpecError(
                    f"input shape {text!r} has an empty size (write e.g. 28x28x1)"
                ) from None
            raise LayerSpecError(
                f"input shape {text!r}: {p!r} is not an integer (write e.g. 28x28x1)"
            ) from None
        if v < 1:
            raise LayerSpecError(f"input shape {text!r}: size {v} must be positive")
        shape.append(v)
    return tuple(shape)


def _options(tokens: list[str], layer: str, *, conv: bool, transposed: bool = False):
    opts: dict = {}
    for tok in tokens:
        low = tok.lower()
        m = re.match(r"^(op|[sdgp])(-?\d+(?:x-?\d+)*)$", low)
        if low in _PADDINGS:
            opts["padding"] = low.upper()
        elif conv and low in _MODES and not transposed:
            opts["padding_mode"] = low
        elif conv and low == "nobias":
            opts["use_bias"] = False
        elif m and (conv or m.group(1) in "sp"):
            key = {"s": "stride", "d": "dilation", "g": "groups", "p": "padding",
                   "op": "output_padding"}[m.group(1)]
            if key == "groups" and "x" in m.group(2):
                raise LayerSpecError(f"{layer}: groups {tok!r} must be one integer")
            if key == "output_padding" and not transposed:
                raise LayerSpecError(f"{layer}: output padding {tok!r} is for tconv")
            if key in ("padding", "output_padding"):
                values = tuple(int(v) for v in m.group(2).split("x"))
                if any(v < 0 for v in values):
                    raise LayerSpecError(f"{layer}: {key} {tok!r} must be >= 0")
                opts[key] = values[0] if len(values) == 1 else values
            else:
                opts[key] = _size(m.group(2), f"{layer}: {key}")
        else:
            raise LayerSpecError(f"{layer}: unknown option {tok!r}")
    return opts


def _count(tokens: list[str], i: int, layer: str, what: str) -> int:
    if len(tokens) <= i:
        raise LayerSpecError(f"{layer}: missing {what}")
    try:
        v = int(tokens[i])
    except ValueError:
        raise LayerSpecError(
            f"{layer}: {what} {tokens[i]!r} is not an integer"
        ) from None
    if v < 1:
        raise LayerSpecError(f"{layer}: {what} {v} must be positive")
    return v


def _parse_one(text: str, fmt: str) -> nn.Layer:
    tokens = text.split()
    name, args = tokens[0].lower(), tokens[1:]
    if name == "conv":
        if not args:
            raise LayerSpecError(f"{text!r}: missing kernel size (e.g. conv 3x3 32)")
        kernel = _size(args[0], f"{text!r}: kernel size")
        features = _count(args, 1, repr(text), "output channels")
        opts = _options(args[2:], repr(text), conv=True)
        return nn.Conv(features, kernel, data_format=fmt, **opts)
    if name in ("dconv", "depthwise", "dwconv"):
        if not args:
            raise LayerSpecError(f"{text!r}: missing kernel size (e.g. dconv 3x3)")
        kernel = _size(args[0], f"{text!r}: kernel size")
        rest = args[1:]
        mult = 1
        if rest and rest[0].isdigit():
            mult = _count(rest, 0, repr(text), "channel multiplier")
            rest = rest[1:]
        opts = _options(rest, repr(text), conv=True)
        if "groups" in opts:
            raise LayerSpecError(f"{text!r}: depthwise conv takes no groups option")
        return nn.DepthwiseConv(kernel, channel_multiplier=mult, data_format=fmt,
                                **opts)
    if name in ("tconv", "deconv", "convtranspose"):
        if not args:
            raise LayerSpecError(
                f"{text!r}: missing kernel size (e.g. tconv 4x4 32 s2)"
            )
        kernel = _size(args[0], f"{text!r}: kernel size")
        features = _count(args, 1, repr(text), "output channels")
        opts = _options(args[2:], repr(text), conv=True, transposed=True)
        if isinstance(opts.get("padding"), str) and opts["padding"] not in (
            "SAME", "VALID"
        ):
            raise LayerSpecError(f"{text!r}: tconv padding must be same, valid or pN")
        return nn.ConvTranspose(features, kernel, data_format=fmt, **opts)
    if name in ("maxpool", "avgpool", "pool"):
        if not args:
            raise LayerSpecError(f"{text!r}: missing window size (e.g. {name} 2)")
        window = _size(args[0], f"{text!r}: window size")
        opts = _options(args[1:], repr(text), conv=False)
        cls = nn.AvgPool if name == "avgpool" else nn.MaxPool
        return cls(window, data_format=fmt, **opts)
    if name in ("gap", "globalavgpool", "gmp", "globalmaxpool", "flatten"):
        if args:
            raise LayerSpecError(f"{text!r}: {name} takes no arguments")
        if name == "flatten":
            return nn.Flatten()
        pool = nn.GlobalMaxPool if name in ("gmp", "globalmaxpool") else (
            nn.GlobalAvgPool
        )
        return pool(data_format=fmt)
    if name in ("dense", "linear", "fc"):
        features = _count(args, 0, repr(text), "output size")
        if len(args) > 1:
            opts = _options(args[1:], repr(text), conv=True)
            if set(opts) - {"use_bias"}:
                raise LayerSpecError(f"{text!r}: dense takes only 'nobias'")
            return nn.Dense(features, **opts)
        return nn.Dense(features)
    if name in _ACTIVATIONS:
        if args:
            raise LayerSpecError(f"{text!r}: {name} takes no arguments")
        return _ACTIVATIONS[name]()
    if name == "dropout":
        if len(args) != 1:
            raise LayerSpecError(f"{text!r}: write dropout P, e.g. dropout 0.5")
        try:
            rate = float(args[0])
        except ValueError:
            raise LayerSpecError(
                f"{text!r}: rate {args[0]!r} is not a number"
            ) from None
        if not 0.0 <= rate < 1.0:
            raise LayerSpecError(f"{text!r}: rate {rate} must be in [0, 1)")
        return nn.Dropout(rate)
    raise LayerSpecError(
        f"unknown layer {tokens[0]!r} in {text!r} (known: conv, dconv, tconv, "
        f"maxpool, avgpool, gap, gmp, flatten, dense, dropout, "
        f"{', '.join(sorted(_ACTIVATIONS))})"
    )


def parse_layers(text: str, *, data_format: str = "channels_last") -> nn.Sequential:
    """Parse a comma-separated layer list into a :class:`jaxconv.nn.Sequential`.

    Args:
      text: e.g. ``"conv 3x3 32 same, relu, maxpool 2, gap, dense 10"``; the
        language is described in this module's docstring and in
        ``jaxconv shapes --help``.
      data_format: ``"channels_last"`` or ``"channels_first"``, given to every
        conv and pooling layer.

    Returns:
      The model.

    Raises:
      LayerSpecError: naming the first token it cannot read.

    Example:
      >>> model = parse_layers("conv 3x3 32 same s2, relu, gap, dense 10")
      >>> model.layers[0]
      Conv(features=32, kernel_size=(3, 3), stride=2, padding='SAME', ...)
      >>> model.summary((28, 28, 1)).output_shape
      (10,)
      >>> parse_layers("conv 3x3 8", data_format="channels_first").summary(
      ...     (1, 28, 28)).output_shape
      (8, 26, 26)
    """
    fmt = check_data_format(data_format)
    pieces = [p.strip() for p in text.replace(";", ",").split(",")]
    if not any(pieces):
        raise LayerSpecError("the layer list is empty")
    layers = []
    for i, piece in enumerate(pieces):
        if not piece:
            raise LayerSpecError(f"layer {i + 1} is empty (two commas in a row?)")
        layers.append(_parse_one(piece, fmt))
    return nn.Sequential(layers)
