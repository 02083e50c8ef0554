"""Pure-functional layers with shape inference, in the spirit of ``stax``.

A layer is an immutable (frozen dataclass) configuration with two methods::

    params, out_shape = layer.init(key, input_shape)
    y = layer.apply(params, x, *, key=None, train=False)

``input_shape`` is the shape of *one example* (no batch axes), e.g.
``(28, 28, 1)`` for a channels-last image; ``x`` may carry zero or more
leading batch axes, as the ops do.  ``params`` are plain pytrees (dicts of
arrays, empty dicts for parameter-free layers) that ``optax`` and ``jax.tree``
handle directly.

Shapes, parameter counts, FLOPs and receptive fields come from
:mod:`jaxconv.shapes` only, never from running the model, so
``Sequential.summary`` is instant for any input size.

Conventions (where the reference libraries differ or say nothing):

* Initialisation follows Flax's defaults: kernels LeCun-normal
  (``jax.nn.initializers.lecun_normal``, fan-in = ``prod(kernel) * C_in /
  groups``), biases zero; pass ``kernel_init=jax.nn.initializers.he_normal()``
  for He initialisation.  Parameters are float32 unless ``param_dtype`` says
  otherwise.
* Defaults follow :func:`jaxconv.conv` (``padding="VALID"``, channels-last).
* A layer whose rank cannot be read from its parameters or configuration
  (``Flatten``, ``GlobalAvgPool``, pools with an int window) assumes one
  batch axis when used on its own, as the pooling ops do; pass
  ``spatial_dims`` (or use it inside a :class:`Sequential`, which works out
  the batch axes from the layers that know their rank) for other cases.
* FLOPs count a multiply-add as 2 (as :func:`jaxconv.shapes.conv_flops`);
  pools count one operation per window element, global pools one per input
  element; activations, dropout and flatten count 0.
"""

from ._base import Layer as Layer
from ._base import LayerInfo as LayerInfo
from ._basic import Dense as Dense
from ._basic import Dropout as Dropout
from ._basic import Elu as Elu
from ._basic import Flatten as Flatten
from ._basic import Gelu as Gelu
from ._basic import Identity as Identity
from ._basic import LeakyRelu as LeakyRelu
from ._basic import LogSoftmax as LogSoftmax
from ._basic import Relu as Relu
from ._basic import Sigmoid as Sigmoid
from ._basic import Silu as Silu
from ._basic import Softmax as Softmax
from ._basic import Tanh as Tanh
from ._conv import Conv as Conv
from ._conv import ConvTranspose as ConvTranspose
from ._conv import DepthwiseConv as DepthwiseConv
from ._pool import AvgPool as AvgPool
from ._pool import GlobalAvgPool as GlobalAvgPool
from ._pool import GlobalMaxPool as GlobalMaxPool
from ._pool import MaxPool as MaxPool
from ._sequential import Sequential as Sequential
from ._sequential import Summary as Summary
from ._sequential import SummaryRow as SummaryRow
from ._sequential import summary as summary

__all__ = [
    "AvgPool",
    "Conv",
    "ConvTranspose",
    "Dense",
    "DepthwiseConv",
    "Dropout",
    "Elu",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "Identity",
    "Layer",
    "LayerInfo",
    "LeakyRelu",
    "LogSoftmax",
    "MaxPool",
    "Relu",
    "Sequential",
    "Sigmoid",
    "Silu",
    "Softmax",
    "Summary",
    "SummaryRow",
    "Tanh",
    "summary",
]
