"""Composition and the layer table: :class:`Sequential`, :class:`Summary`,
:func:`summary`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import shapes as _shapes
from ._base import Layer, LayerInfo, Shape, check_shape
from ._basic import Dense, Dropout
from ._conv import Conv, ConvTranspose, DepthwiseConv
from ._pool import _Pool


class SummaryRow(NamedTuple):
    """One row of :class:`Summary`.

    Attributes:
      name: the layer, e.g. ``"Conv(32, 3x3, SAME)"``.
      output_shape: one example's output shape.
      params: trainable parameters.
      flops: forward FLOPs for one example.
      receptive_field: per-axis receptive-field size (tuple), ``"global"`` or
        ``None`` (unknown, e.g. after a transposed conv).
      jump: input distance between neighbouring outputs (tuple) or ``None``.
    """

    name: str
    output_shape: Shape
    params: int
    flops: int
    receptive_field: Any
    jump: Any


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _fmt_rf(rf) -> str:
    if rf is None:
        return "?"
    if isinstance(rf, str):
        return rf
    return "x".join(str(s) for s in rf)


@dataclasses.dataclass(frozen=True)
class Summary:
    """Table of a model's layers: output shape, params, FLOPs, receptive field.

    ``str(summary)`` (and ``repr``) is the formatted table; the numbers are in
    ``rows``, ``total_params`` and ``total_flops``.  FLOPs are per example.
    """

    input_shape: Shape
    rows: tuple[SummaryRow, ...]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_flops(self) -> int:
        return sum(r.flops for r in self.rows)

    @property
    def output_shape(self) -> Shape:
        return self.rows[-1].output_shape if self.rows else self.input_shape

    def __str__(self) -> str:
        head = ("layer", "output shape", "params", "FLOPs", "receptive field")
        nd = max(len(self.input_shape) - 1, 1)
        body = [("input", _fmt_shape(self.input_shape), "", "", "x".join("1" * nd))]
        for r in self.rows:
            rf = _fmt_rf(r.receptive_field)
            if r.jump is not None and not isinstance(r.receptive_field, str):
                rf += f" (jump {'x'.join(str(j) for j in r.jump)})"
            body.append((r.name, _fmt_shape(r.output_shape), _fmt_int(r.params),
                         _fmt_int(r.flops), rf))
        body.append(("total", "", _fmt_int(self.total_params),
                     _fmt_int(self.total_flops), ""))
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(5)]

        def line(row):
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [row[i].rjust(widths[i]) for i in (2, 3)]
            cells.append(row[4].ljust(widths[4]))
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(tuple("-" * w for w in widths)))
        lines = [line(head), rule, *(line(r) for r in body[:-1]), rule,
                 line(body[-1])]
        return "\n".join(lines)

    __repr__ = __str__


def _not_one(v) -> bool:
    return any(int(e) != 1 for e in ((v,) if isinstance(v, int) else v))


def _describe(layer: Layer) -> str:
    """A short name for the summary table."""
    name = layer._name()
    if isinstance(layer, (Conv, ConvTranspose, DepthwiseConv)):
        k = layer.kernel_size
        k = "x".join(map(str, k)) if not isinstance(k, int) else str(k)
        parts = [str(layer.features)] if not isinstance(layer, DepthwiseConv) else []
        if isinstance(layer, DepthwiseConv) and layer.channel_multiplier != 1:
            parts.append(f"x{layer.channel_multiplier}")
        parts.append(k)
        pad = layer.padding
        parts.append(pad.upper() if isinstance(pad, str) else f"pad={pad}")
        for field in ("stride", "dilation", "groups"):
            v = getattr(layer, field, 1)
            if _not_one(v):
                parts.append(f"{field}={v}")
        return f"{name}({', '.join(parts)})"
    if isinstance(layer, _Pool):
        w = layer.window_shape
        w = "x".join(map(str, w)) if not isinstance(w, int) else str(w)
        extra = "" if layer.stride is None else f", stride={layer.stride}"
        return f"{name}({w}{extra})"
    if isinstance(layer, Dense):
        return f"Dense({layer.features})"
    if isinstance(layer, Dropout):
        return f"Dropout({layer.rate})"
    return name


def _flatten_batch(x, rank: int):
    """``x (*batch, *example)`` as ``(B, *example)`` plus the batch shape."""
    if x.ndim < rank:
        raise ValueError(
            f"x (shape {x.shape}) has fewer axes than one example needs ({rank})."
        )
    batch = x.shape[: x.ndim - rank]
    return x.reshape((math.prod(batch), *x.shape[x.ndim - rank :])), batch


@dataclasses.dataclass(frozen=True, init=False)
class Sequential(Layer):
    """Layers applied one after the other; params are a tuple, one per layer.

    Inside ``apply`` the batch axes are worked out once (from the first layer
    whose parameters or configuration fix its input rank), flattened into one
    axis for the layers and restored at the end, so any number of batch axes
    works.  With ``train=True`` the ``key`` is split among the layers.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxconv.nn import Conv, Dense, Flatten, MaxPool, Relu
      >>> model = Sequential([Conv(8, (3, 3), padding="SAME"), Relu(),
      ...                     MaxPool((2, 2)), Flatten(), Dense(10)])
      >>> params, out_shape = model.init(jax.random.key(0), (28, 28, 1))
      >>> out_shape
      (10,)
      >>> model.apply(params, jnp.ones((2, 3, 28, 28, 1))).shape
      (2, 3, 10)
      >>> model.summary((28, 28, 1)).total_params
      15770
    """

    layers: tuple[Layer, ...]

    def __init__(self, layers: Sequence[Layer]):
        if isinstance(layers, (Layer, str)) or not hasattr(layers, "__iter__"):
            raise TypeError(
                f"`layers` (={layers!r}) must be a sequence of jaxconv.nn layers, "
                f"e.g. Sequential([Conv(8, 3), Relu()])."
            )
        layers = tuple(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"`layers[{i}]` (={layer!r}) is not a jaxconv.nn layer."
                )
        object.__setattr__(self, "layers", layers)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def _infos(self, input_shape):
        shape = check_shape(input_shape)
        infos = []
        for i, layer in enumerate(self.layers):
            try:
                info = layer.info(shape)
            except (ValueError, TypeError) as err:
                raise type(err)(
                    f"layer {i} ({_describe(layer)}) on input {shape}: {err}"
                ) from None
            infos.append(info)
            shape = info.output_shape
        return infos

    def info(self, input_shape):
        infos = self._infos(input_shape)
        if not infos:
            return LayerInfo(check_shape(input_shape), 0, 0, None)
        rfs = [i.rf for i in infos]
        rf = "global" if "global" in rfs else "unknown" if "unknown" in rfs else (
            _compose_rf([r for r in rfs if r is not None])
        )
        return LayerInfo(infos[-1].output_shape, sum(i.params for i in infos),
                         sum(i.flops for i in infos), rf)

    def _init_params(self, key, input_shape):
        infos = self._infos(input_shape)  # shape errors first, layer named
        shapes = [check_shape(input_shape)] + [i.output_shape for i in infos]
        keys = jax.random.split(key, max(len(self), 1))
        return tuple(layer._init_params(k, shape)
                     for layer, k, shape in zip(self.layers, keys, shapes))

    def _rank(self, params):
        for layer, p in zip(self.layers, params):
            rank = layer._rank(p)
            if rank is not None:
                return rank
            if not layer._keeps_rank:
                return None
        return None

    def apply(self, params, x, *, key=None, train=False):
        if len(params) != len(self.layers):
            raise ValueError(
                f"`params` has {len(params)} entries for {len(self.layers)} layers."
            )
        x = jnp.asarray(x)
        rank = self._rank(params)
        batch = None
        if rank is not None:
            x, batch = _flatten_batch(x, rank)
        keys = (jax.random.split(key, len(self.layers)) if key is not None
                else [None] * len(self.layers))
        for layer, p, k in zip(self.layers, params, keys):
            x = layer.apply(p, x, key=k, train=train)
        if batch is not None:
            x = x.reshape((*batch, *x.shape[1:]))
        return x

    def summary(self, input_shape: Sequence[int]) -> Summary:
        """The layer table for one example of ``input_shape``, without running.

        Args:
          input_shape: one example's shape (no batch axes).

        Returns:
          A :class:`Summary`; ``print`` it for the table.

        Raises:
          ValueError: naming the first layer whose input does not fit.

        Example:
          >>> from jaxconv.nn import Conv, Relu
          >>> s = Sequential([Conv(32, (3, 3)), Relu()]).summary((28, 28, 1))
          >>> s.rows[0].params, s.rows[0].flops, s.rows[0].receptive_field
          (320, 389376, (3, 3))
          >>> print(s)  # doctest: +ELLIPSIS
          layer                 output shape  params    FLOPs  receptive field
          ---...
          input                 (28, 28, 1)                    1x1
          Conv(32, 3x3, VALID)  (26, 26, 32)     320  389,376  3x3 (jump 1x1)
          Relu                  (26, 26, 32)       0        0  3x3 (jump 1x1)
          ---...
          total                                  320  389,376
        """
        return summary(self, input_shape)


def _flat_layers(layer: Layer):
    if isinstance(layer, Sequential):
        for sub in layer.layers:
            yield from _flat_layers(sub)
    else:
        yield layer


def _compose_rf(steps):
    if not steps:
        return None
    return _shapes.receptive_field(steps)[-1]


def summary(layer: Layer, input_shape: Sequence[int]) -> Summary:
    """Summary table of a layer or model (nested Sequentials are flattened).

    Everything comes from :mod:`jaxconv.shapes`; nothing is run.  The
    receptive field is the per-axis size (and jump) from
    :func:`jaxconv.shapes.receptive_field` over the spatial layers so far;
    ``"global"`` once every output sees the whole input (global pools,
    dense layers), ``"?"`` after a transposed convolution.

    Args:
      layer: any layer, usually a :class:`Sequential`.
      input_shape: one example's shape (no batch axes).

    Returns:
      A :class:`Summary`.

    Example:
      >>> from jaxconv.nn import Conv
      >>> s = summary(Conv(64, (3, 3), padding="SAME"), (56, 56, 64))
      >>> s.total_params, s.total_flops
      (36928, 231211008)
    """
    shape = check_shape(input_shape)
    flat = Sequential(list(_flat_layers(layer)))
    infos = flat._infos(shape)
    rows = []
    steps: list = []
    state: Any = ()  # () nothing spatial yet; "global"; "unknown"
    nd = max(len(shape) - 1, 1)
    for sub, info in zip(flat.layers, infos):
        if isinstance(state, tuple):
            if info.rf in ("global", "unknown"):
                state = info.rf
            elif info.rf is not None:
                steps.append(info.rf)
        if state == "global":
            rf, jump = "global", None
        elif state == "unknown":
            rf, jump = None, None
        elif steps:
            last = _shapes.receptive_field(steps)[-1]
            rf, jump = tuple(last.size), tuple(last.jump)
        else:
            rf, jump = (1,) * nd, (1,) * nd
        rows.append(SummaryRow(_describe(sub), info.output_shape, info.params,
                               info.flops, rf, jump))
    return Summary(shape, tuple(rows))
