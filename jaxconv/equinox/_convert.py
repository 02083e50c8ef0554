"""Convert the ``eqx.nn`` conv and pool layers of a model to jaxconv's."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax

from .._conv import check_algorithm
from . import _conv, _pool

_SAME_NAME = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
              "ConvTranspose3d", "MaxPool1d", "MaxPool2d", "MaxPool3d",
              "AvgPool1d", "AvgPool2d", "AvgPool3d")


def _twin(layer: Any) -> Any:
    """The class of this package that mirrors ``type(layer)``, if any."""
    name = type(layer).__name__
    if name in _SAME_NAME and type(layer) is getattr(eqx.nn, name, None):
        return getattr(_conv, name, None) or getattr(_pool, name)
    if isinstance(layer, eqx.nn.ConvTranspose):  # a subclass or the N-d class
        return _conv.ConvTranspose
    if isinstance(layer, eqx.nn.Conv):
        return _conv.Conv
    return None  # eqx.nn.Pool with another reduction, left as it is


def _convert(layer: Any, cls: Any, algorithm: str) -> Any:
    if issubclass(cls, _pool._Pool):
        return cls(layer.kernel_size, layer.stride, layer.padding, layer.use_ceil)
    names = ["in_channels", "out_channels", "kernel_size", "stride", "padding",
             "dilation", "groups", "use_bias", "padding_mode"]
    if isinstance(layer, eqx.nn.ConvTranspose):
        names.append("output_padding")
    kwargs = {n: getattr(layer, n) for n in names}
    if cls in (_conv.Conv, _conv.ConvTranspose):
        kwargs["num_spatial_dims"] = layer.num_spatial_dims
    # The constructor only traced: its checks and static fields are the usual
    # ones, its weight and bias shapes stand in for the arrays put in next (no
    # random draw runs, nothing is compiled or allocated).
    shell = eqx.filter_eval_shape(
        lambda: cls(dtype=layer.weight.dtype, algorithm=algorithm,
                    key=jax.random.key(0), **kwargs))
    if shell.bias is None:  # use_bias=False
        return eqx.tree_at(lambda m: m.weight, shell, layer.weight)
    return eqx.tree_at(lambda m: (m.weight, m.bias), shell,
                       (layer.weight, layer.bias))


def from_equinox(tree: Any, *, algorithm: str = "auto") -> Any:
    """Swap every ``eqx.nn`` conv and pool layer in ``tree`` for its jaxconv twin.

    ``eqx.nn.Conv``, ``Conv1d/2d/3d``, ``ConvTranspose``,
    ``ConvTranspose1d/2d/3d``, ``MaxPool1d/2d/3d`` and ``AvgPool1d/2d/3d``
    anywhere in ``tree`` (a model, a list, any pytree) become the class of
    the same name in :mod:`jaxconv.equinox`, with the same configuration and
    the same ``weight`` and ``bias`` arrays; everything else is left as it is.
    The result computes the same function up to floating-point rounding, and
    trains like the original (the parameters are the same leaves).
    Conversion computes nothing (no placeholder weights are drawn, nothing
    is compiled), so it is quick, and it also converts an abstract model,
    such as one built with ``eqx.filter_eval_shape``.

    Args:
      tree: a pytree holding Equinox layers.
      algorithm: the ``algorithm`` of every converted convolution (see
        :func:`jaxconv.conv`).

    Returns:
      ``tree`` with those layers swapped.

    Raises:
      ValueError: for an unknown ``algorithm``.

    Example:
      >>> import equinox as eqx, jax, jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> model = eqx.nn.Sequential([
      ...     eqx.nn.Conv2d(1, 4, 3, padding=1, key=jax.random.key(0)),
      ...     eqx.nn.Lambda(jax.nn.relu),
      ...     eqx.nn.MaxPool2d(2, 2)])
      >>> ours = jqx.from_equinox(model)
      >>> [type(layer).__name__ for layer in ours.layers]
      ['Conv2d', 'Lambda', 'MaxPool2d']
      >>> isinstance(ours.layers[0], jqx.Conv2d)
      True
      >>> x = jnp.ones((1, 10, 10))
      >>> bool(jnp.allclose(ours(x), model(x), atol=1e-6))
      True
    """
    check_algorithm(algorithm)
    layers = (eqx.nn.Conv, eqx.nn.ConvTranspose, eqx.nn.Pool)

    def swap(node: Any) -> Any:
        if not isinstance(node, layers):
            return node
        cls = _twin(node)
        return node if cls is None else _convert(node, cls, algorithm)

    return jax.tree.map(swap, tree, is_leaf=lambda n: isinstance(n, layers))
