"""Equinox layers on jaxconv: ``eqx.nn``'s signatures, jaxconv's options.

``eqx.nn.Conv`` calls XLA's convolution and has no argument to swap it.  The
layers here mirror their ``equinox.nn`` namesakes: the same constructor
arguments in the same order with the same defaults, the same parameters
(``weight`` and ``bias``: same shapes, same initialisation from the same
``key``), channels-first inputs of one example (``jax.vmap`` for a batch),
and ``__call__(x, *, key=None)``.  They compute with :func:`jaxconv.conv`,
:func:`jaxconv.conv_transpose`, :func:`jaxconv.max_pool` and
:func:`jaxconv.avg_pool` instead of XLA's convolution and
``reduce_window``.

Layers: :class:`Conv`, :class:`Conv1d`, :class:`Conv2d`, :class:`Conv3d`,
:class:`ConvTranspose`, :class:`ConvTranspose1d`, :class:`ConvTranspose2d`,
:class:`ConvTranspose3d`, :class:`MaxPool1d`, :class:`MaxPool2d`,
:class:`MaxPool3d`, :class:`AvgPool1d`, :class:`AvgPool2d`,
:class:`AvgPool3d`, and N-d :class:`MaxPool` / :class:`AvgPool`;
:func:`from_equinox` converts a model built from ``eqx.nn`` layers.

Options beyond ``eqx.nn``:

* ``Conv``: ``padding`` also ``"FULL"`` and ``"CAUSAL"``; ``padding_mode``
  also ``"SYMMETRIC"`` (NumPy's ``symmetric``), in any case, or one mode per
  spatial axis; keyword-only ``algorithm`` (see :func:`jaxconv.conv`) and
  ``precision``.
* ``ConvTranspose``: keyword-only ``algorithm`` and ``precision``;
  ``output_padding`` up to ``max(stride, dilation) - 1`` (PyTorch's bound;
  ``eqx.nn`` stops at ``stride - 1``).
* Pools: string paddings (``"VALID"``, ``"SAME"``, ...), keyword-only
  ``dilation``, and for ``AvgPool*`` keyword-only ``count_include_pad``
  (``True``, the default, divides by the window size as ``eqx.nn`` does).
  A padding wider than the window is allowed (``eqx.nn`` refuses it).
* Bad arguments raise ``ValueError``/``TypeError`` naming the argument, at
  construction.

Recipe: swap the class, keep everything else (same arguments and ``key``
give bit-identical weights)::

    import equinox as eqx
    import jax
    import jaxconv.equinox as jqx

    k1, k2 = jax.random.split(jax.random.key(0))
    model = eqx.nn.Sequential([
        jqx.Conv2d(1, 16, 3, padding="SAME", padding_mode="reflect", key=k1),
        eqx.nn.Lambda(jax.nn.relu),
        jqx.MaxPool2d(2, stride=2),
        jqx.Conv2d(16, 32, 3, padding="SAME", key=k2),
    ])
    y = jax.vmap(model)(x)            # x: (batch, 1, 28, 28)

or convert a model that is already built (or trained), weights included::

    model = jqx.from_equinox(model)   # eqx.nn conv/pool layers -> jaxconv's
    model = jqx.from_equinox(model, algorithm="taps")   # pin the algorithm

Equinox is an optional dependency (``pip install "jaxconv[equinox]"``);
``import jaxconv`` never imports it, and ``import jaxconv.equinox`` without it
raises ``ImportError`` saying what to install.
"""

try:
    import equinox as _equinox  # noqa: F401
except ImportError as err:
    raise ImportError(
        "jaxconv.equinox needs Equinox, which is not installed: "
        'pip install equinox (or pip install "jaxconv[equinox]").'
    ) from err

from ._conv import Conv as Conv
from ._conv import Conv1d as Conv1d
from ._conv import Conv2d as Conv2d
from ._conv import Conv3d as Conv3d
from ._conv import ConvTranspose as ConvTranspose
from ._conv import ConvTranspose1d as ConvTranspose1d
from ._conv import ConvTranspose2d as ConvTranspose2d
from ._conv import ConvTranspose3d as ConvTranspose3d
from ._convert import from_equinox as from_equinox
from ._pool import AvgPool as AvgPool
from ._pool import AvgPool1d as AvgPool1d
from ._pool import AvgPool2d as AvgPool2d
from ._pool import AvgPool3d as AvgPool3d
from ._pool import MaxPool as MaxPool
from ._pool import MaxPool1d as MaxPool1d
from ._pool import MaxPool2d as MaxPool2d
from ._pool import MaxPool3d as MaxPool3d

__all__ = [
    "Conv", "Conv1d", "Conv2d", "Conv3d",
    "ConvTranspose", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "MaxPool", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "from_equinox",
]  # fmt: skip
