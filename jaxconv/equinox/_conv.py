"""Convolution and transposed-convolution layers, as ``eqx.nn.Conv*``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._args import check_positive, ntuple, positive_tuple
from .._conv import check_algorithm, conv, conv_transpose
from ..padding import normalize_padding_mode
from ._common import (
    CONV_PADDINGS,
    IntOrSeq,
    PaddingArg,
    check_groups,
    check_input,
    conv_weights,
    padding_arg,
)


class Conv(eqx.Module):
    """N-d convolution layer, as ``eqx.nn.Conv``, computed by :func:`jaxconv.conv`.

    Args:
      num_spatial_dims: number of spatial axes ``D``.
      in_channels: input channels.
      out_channels: output channels.
      kernel_size: an int or ``D`` ints.
      stride: an int or ``D`` ints.
      padding: ``"VALID"``, ``"SAME"``, ``"SAME_LOWER"``, ``"FULL"``,
        ``"CAUSAL"`` (any case), an int, ``D`` ints or ``D`` ``(lo, hi)``
        pairs; see :func:`jaxconv.shapes.resolve_padding`.
      dilation: kernel dilation, an int or ``D`` ints.
      groups: feature groups; must divide both channel counts.
      use_bias: add a bias of shape ``(out_channels, 1, ..., 1)``.
      padding_mode: ``"ZEROS"``, ``"REFLECT"``, ``"REPLICATE"``,
        ``"CIRCULAR"`` or ``"SYMMETRIC"`` (any case), or one per spatial axis.
      dtype: parameter dtype; float64 under ``JAX_ENABLE_X64``, else float32.
      algorithm: as in :func:`jaxconv.conv` (``"auto"`` by default).
      precision: as in ``jax.lax`` (``None``, a ``Precision`` or a pair).
      key: a PRNG key for the initialisation, U(-lim, lim) with ``lim =
        1 / sqrt(in_channels / groups * prod(kernel_size))``, as ``eqx.nn``.

    Raises:
      ValueError: for ``groups`` not dividing the channels, or a bad size,
        padding, padding mode or algorithm.
      TypeError: for non-integer sizes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> layer = jqx.Conv(2, 3, 8, kernel_size=3, padding="SAME",
      ...                  padding_mode="symmetric", key=jax.random.key(0))
      >>> layer(jnp.ones((3, 32, 32))).shape
      (8, 32, 32)
      >>> jax.vmap(layer)(jnp.ones((4, 3, 32, 32))).shape
      (4, 8, 32, 32)
    """

    num_spatial_dims: int = eqx.field(static=True)
    weight: jax.Array
    bias: jax.Array | None
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    kernel_size: tuple[int, ...] = eqx.field(static=True)
    stride: tuple[int, ...] = eqx.field(static=True)
    padding: str | tuple[tuple[int, int], ...] = eqx.field(static=True)
    dilation: tuple[int, ...] = eqx.field(static=True)
    groups: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    padding_mode: str | tuple[str, ...] = eqx.field(static=True)
    algorithm: str = eqx.field(static=True)
    precision: Any = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrSeq,
        stride: IntOrSeq = 1,
        padding: PaddingArg = 0,
        dilation: IntOrSeq = 1,
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str | Sequence[str] = "ZEROS",
        dtype: Any = None,
        *,
        algorithm: str = "auto",
        precision: Any = None,
        key: jax.Array,
    ):
        nd = check_positive(num_spatial_dims, "num_spatial_dims")
        self.num_spatial_dims = nd
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = positive_tuple(kernel_size, nd, "kernel_size")
        self.stride = positive_tuple(stride, nd, "stride")
        self.dilation = positive_tuple(dilation, nd, "dilation")
        self.groups = check_groups(in_channels, out_channels, groups)
        self.padding = padding_arg(padding, nd, CONV_PADDINGS)
        normalize_padding_mode(padding_mode, nd)  # raises for a bad mode
        if isinstance(padding_mode, str):
            self.padding_mode = padding_mode.upper()
        else:
            self.padding_mode = tuple(m.upper() for m in padding_mode)
        self.algorithm = check_algorithm(algorithm)
        self.precision = precision
        self.use_bias = bool(use_bias)
        self.weight, self.bias = conv_weights(
            key, out_channels, in_channels // self.groups, self.kernel_size, nd,
            self.use_bias, dtype,
        )

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Convolve one example.

        Args:
          x: ``(in_channels, *spatial)``.
          key: ignored (the Equinox calling convention).

        Returns:
          ``(out_channels, *out)``, ``out`` from
          :func:`jaxconv.shapes.conv_output_size` on each axis.
        """
        del key
        x = check_input(x, self.num_spatial_dims, type(self).__name__)
        pm = self.padding_mode
        mode = pm.lower() if isinstance(pm, str) else [m.lower() for m in pm]
        with jax.named_scope(f"jaxconv.equinox.{type(self).__name__}"):
            y = conv(
                x, self.weight, stride=self.stride, padding=self.padding,
                dilation=self.dilation, groups=self.groups, padding_mode=mode,
                data_format="channels_first", algorithm=self.algorithm,
                precision=self.precision,
            )
            if self.bias is not None:
                y = y + self.bias
        return y


class Conv1d(Conv):
    """:class:`Conv` with ``num_spatial_dims=1``, as ``eqx.nn.Conv1d``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> layer = jqx.Conv1d(2, 4, 3, padding="CAUSAL", key=jax.random.key(0))
      >>> layer(jnp.ones((2, 100))).shape
      (4, 100)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq,
                 stride: IntOrSeq = 1, padding: PaddingArg = 0,
                 dilation: IntOrSeq = 1, groups: int = 1, use_bias: bool = True,
                 padding_mode: str | Sequence[str] = "ZEROS", dtype: Any = None, *,
                 algorithm: str = "auto", precision: Any = None, key: jax.Array):
        super().__init__(1, in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, use_bias, padding_mode, dtype,
                         algorithm=algorithm, precision=precision, key=key)


class Conv2d(Conv):
    """:class:`Conv` with ``num_spatial_dims=2``, as ``eqx.nn.Conv2d``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> layer = jqx.Conv2d(3, 8, 5, stride=2, padding=2, padding_mode="reflect",
      ...                    key=jax.random.key(0))
      >>> layer(jnp.ones((3, 32, 32))).shape
      (8, 16, 16)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq,
                 stride: IntOrSeq = (1, 1), padding: PaddingArg = (0, 0),
                 dilation: IntOrSeq = (1, 1), groups: int = 1, use_bias: bool = True,
                 padding_mode: str | Sequence[str] = "ZEROS", dtype: Any = None, *,
                 algorithm: str = "auto", precision: Any = None, key: jax.Array):
        super().__init__(2, in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, use_bias, padding_mode, dtype,
                         algorithm=algorithm, precision=precision, key=key)


class Conv3d(Conv):
    """:class:`Conv` with ``num_spatial_dims=3``, as ``eqx.nn.Conv3d``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> layer = jqx.Conv3d(2, 4, 3, padding="SAME", key=jax.random.key(0))
      >>> layer(jnp.ones((2, 8, 8, 8))).shape
      (4, 8, 8, 8)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq,
                 stride: IntOrSeq = (1, 1, 1), padding: PaddingArg = (0, 0, 0),
                 dilation: IntOrSeq = (1, 1, 1), groups: int = 1,
                 use_bias: bool = True, padding_mode: str | Sequence[str] = "ZEROS",
                 dtype: Any = None, *, algorithm: str = "auto", precision: Any = None,
                 key: jax.Array):
        super().__init__(3, in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, use_bias, padding_mode, dtype,
                         algorithm=algorithm, precision=precision, key=key)


class ConvTranspose(eqx.Module):
    """N-d transposed convolution layer, as ``eqx.nn.ConvTranspose``.

    Computed by :func:`jaxconv.conv_transpose`.  The weight has ``eqx.nn``'s
    layout ``(out_channels, in_channels // groups, *kernel)`` and meaning: a
    convolution of the stride-dilated input with this kernel
    (arXiv:1603.07285, section 4).  The layer flips and regroups it into the
    transposed-convolution weight jaxconv takes.

    Args:
      num_spatial_dims: number of spatial axes ``D``.
      in_channels: input channels.
      out_channels: output channels.
      kernel_size: an int or ``D`` ints.
      stride: the stride of the equivalent forward conv, an int or ``D`` ints.
      padding: the forward conv's padding: ``"VALID"``, ``"SAME"`` or
        ``"SAME_LOWER"`` (output ``n * stride - output_padding``, as
        ``eqx.nn``), an int, ``D`` ints or ``D`` ``(lo, hi)`` pairs.
      output_padding: an int or ``D`` ints, ``0 <= output_padding <
        max(stride, dilation)``: cells added at the end of each axis (with
        the ``"SAME"`` strings: cells removed, as ``eqx.nn``).
      dilation: kernel dilation, an int or ``D`` ints.
      groups: feature groups; must divide both channel counts.
      use_bias: add a bias of shape ``(out_channels, 1, ..., 1)``.
      padding_mode: ``"ZEROS"``, or ``"CIRCULAR"`` with ``"SAME"`` or
        ``"SAME_LOWER"`` padding and ``output_padding=0`` (as ``eqx.nn``).
      dtype: parameter dtype; float64 under ``JAX_ENABLE_X64``, else float32.
      algorithm: as in :func:`jaxconv.conv`.
      precision: as in ``jax.lax``.
      key: a PRNG key; the initialisation is ``eqx.nn``'s.

    Raises:
      ValueError: for ``groups`` not dividing the channels, a bad size,
        padding, output padding, padding mode or algorithm.
      TypeError: for non-integer sizes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> up = jqx.ConvTranspose(2, 16, 8, kernel_size=4, stride=2, padding=1,
      ...                        key=jax.random.key(0))
      >>> up(jnp.ones((16, 14, 14))).shape
      (8, 28, 28)
    """

    num_spatial_dims: int = eqx.field(static=True)
    weight: jax.Array
    bias: jax.Array | None
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    kernel_size: tuple[int, ...] = eqx.field(static=True)
    stride: tuple[int, ...] = eqx.field(static=True)
    padding: str | tuple[tuple[int, int], ...] = eqx.field(static=True)
    output_padding: tuple[int, ...] = eqx.field(static=True)
    dilation: tuple[int, ...] = eqx.field(static=True)
    groups: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    padding_mode: str = eqx.field(static=True)
    algorithm: str = eqx.field(static=True)
    precision: Any = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrSeq,
        stride: IntOrSeq = 1,
        padding: PaddingArg = 0,
        output_padding: IntOrSeq = 0,
        dilation: IntOrSeq = 1,
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str = "ZEROS",
        dtype: Any = None,
        *,
        algorithm: str = "auto",
        precision: Any = None,
        key: jax.Array,
    ):
        nd = check_positive(num_spatial_dims, "num_spatial_dims")
        self.num_spatial_dims = nd
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = positive_tuple(kernel_size, nd, "kernel_size")
        self.stride = positive_tuple(stride, nd, "stride")
        self.dilation = positive_tuple(dilation, nd, "dilation")
        self.output_padding = ntuple(output_padding, nd, "output_padding")
        for o, s, d in zip(self.output_padding, self.stride, self.dilation):
            if not 0 <= o < max(s, d):
                raise ValueError(
                    f"`output_padding` (={output_padding!r}) must satisfy 0 <= "
                    f"output_padding < max(stride, dilation) on every axis "
                    f"(stride={self.stride}, dilation={self.dilation})."
                )
        self.groups = check_groups(in_channels, out_channels, groups)
        self.padding = padding_arg(padding, nd, ("VALID", "SAME", "SAME_LOWER"))
        mode = padding_mode.upper() if isinstance(padding_mode, str) else None
        if mode not in ("ZEROS", "CIRCULAR"):
            raise ValueError(
                f'`padding_mode` (={padding_mode!r}) must be "ZEROS" or '
                f'"CIRCULAR" for a transposed convolution.'
            )
        if mode == "CIRCULAR" and (
            self.padding not in ("SAME", "SAME_LOWER") or any(self.output_padding)
        ):
            raise ValueError(
                f'`padding_mode` (={padding_mode!r}) needs padding "SAME" or '
                f'"SAME_LOWER" and output_padding 0, got padding={padding!r}, '
                f"output_padding={output_padding!r}."
            )
        self.padding_mode = mode
        self.algorithm = check_algorithm(algorithm)
        self.precision = precision
        self.use_bias = bool(use_bias)
        self.weight, self.bias = conv_weights(
            key, out_channels, in_channels // self.groups, self.kernel_size, nd,
            self.use_bias, dtype,
        )

    def _core_pads(self) -> list[tuple[int, int]]:
        # Padding of the stride-dilated input (arXiv:1603.07285, relationship
        # 14), with eqx.nn's split of the "SAME" strings.
        pads = []
        for i, (k, s, a, d) in enumerate(
            zip(self.kernel_size, self.stride, self.output_padding, self.dilation)
        ):
            reach = d * (k - 1)
            if self.padding == "VALID":
                p0 = p1 = 0
            elif isinstance(self.padding, str):
                # eqx.nn: output_padding shortens the "SAME" output to n * s - a;
                # when no padding is left to remove, the rest is output padding.
                total = reach - s + a + 1
                a, total = max(-total, 0), max(total, 0)
                p0 = (total + (self.padding == "SAME_LOWER")) // 2
                p1 = total - p0
            else:
                p0, p1 = self.padding[i]
            pads.append((reach - p0, reach - p1 + a))
        return pads

    def _kernel(self) -> jax.Array:
        # eqx.nn's (O, I/g, *K) kernel, applied unflipped to the dilated input,
        # is the transposed-conv weight (I, O/g, *K) flipped, group by group.
        g, o, i, k = self.groups, self.out_channels, self.in_channels, self.kernel_size
        w = self.weight.reshape(g, o // g, i // g, *k)
        w = jnp.swapaxes(w, 1, 2).reshape(i, o // g, *k)
        return jnp.flip(w, axis=tuple(range(2, w.ndim)))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Transposed-convolve one example.

        Args:
          x: ``(in_channels, *spatial)``.
          key: ignored (the Equinox calling convention).

        Returns:
          ``(out_channels, *out)``; ``out = (n - 1) * stride - p_lo - p_hi +
          dilation * (kernel - 1) + output_padding + 1`` on each axis
          (``n * stride - output_padding`` for the ``"SAME"`` strings).
        """
        del key
        x = check_input(x, self.num_spatial_dims, type(self).__name__)
        core = self._core_pads()
        with jax.named_scope(f"jaxconv.equinox.{type(self).__name__}"):
            if self.padding_mode == "CIRCULAR":
                # As eqx.nn: whole strides of padding become wrapped input cells.
                wrap = [(lo // s, hi // s) for (lo, hi), s in zip(core, self.stride)]
                x = jnp.pad(x, [(0, 0), *wrap], mode="wrap")
                core = [(lo % s, hi % s) for (lo, hi), s in zip(core, self.stride)]
            # jaxconv takes the forward conv's padding, core = reach - padding;
            # a core pad beyond the reach at the end is output padding.
            reach = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation)]
            y = conv_transpose(
                x, self._kernel(), stride=self.stride,
                padding=[(r - lo, max(r - hi, 0)) for r, (lo, hi) in zip(reach, core)],
                output_padding=[max(hi - r, 0) for r, (_, hi) in zip(reach, core)],
                dilation=self.dilation, groups=self.groups,
                data_format="channels_first", algorithm=self.algorithm,
                precision=self.precision,
            )
            if self.bias is not None:
                y = y + self.bias
        return y


class ConvTranspose1d(ConvTranspose):
    """:class:`ConvTranspose` with ``num_spatial_dims=1``, as ``eqx.nn``'s.

    As in ``eqx.nn.ConvTranspose1d``, ``output_padding`` comes before
    ``padding``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> up = jqx.ConvTranspose1d(4, 2, 3, stride=2, key=jax.random.key(0))
      >>> up(jnp.ones((4, 5))).shape
      (2, 11)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq,
                 stride: IntOrSeq = 1, output_padding: IntOrSeq = 0,
                 padding: PaddingArg = 0, dilation: IntOrSeq = 1, groups: int = 1,
                 use_bias: bool = True, padding_mode: str = "ZEROS",
                 dtype: Any = None, *, algorithm: str = "auto", precision: Any = None,
                 key: jax.Array):
        super().__init__(1, in_channels, out_channels, kernel_size, stride, padding,
                         output_padding, dilation, groups, use_bias, padding_mode,
                         dtype, algorithm=algorithm, precision=precision, key=key)


class ConvTranspose2d(ConvTranspose):
    """:class:`ConvTranspose` with ``num_spatial_dims=2``, as ``eqx.nn``'s.

    As in ``eqx.nn.ConvTranspose2d``, ``output_padding`` comes before
    ``padding``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> up = jqx.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1, padding=1,
      ...                          key=jax.random.key(0))
      >>> up(jnp.ones((4, 5, 5))).shape
      (2, 10, 10)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq,
                 stride: IntOrSeq = (1, 1), output_padding: IntOrSeq = (0, 0),
                 padding: PaddingArg = (0, 0), dilation: IntOrSeq = (1, 1),
                 groups: int = 1, use_bias: bool = True, padding_mode: str = "ZEROS",
                 dtype: Any = None, *, algorithm: str = "auto", precision: Any = None,
                 key: jax.Array):
        super().__init__(2, in_channels, out_channels, kernel_size, stride, padding,
                         output_padding, dilation, groups, use_bias, padding_mode,
                         dtype, algorithm=algorithm, precision=precision, key=key)


class ConvTranspose3d(ConvTranspose):
    """:class:`ConvTranspose` with ``num_spatial_dims=3``, as ``eqx.nn``'s.

    As in ``eqx.nn.ConvTranspose3d``, ``output_padding`` comes before
    ``padding``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxconv.equinox as jqx
      >>> up = jqx.ConvTranspose3d(4, 2, 3, stride=2, padding="SAME",
      ...                          key=jax.random.key(0))
      >>> up(jnp.ones((4, 5, 5, 5))).shape
      (2, 10, 10, 10)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq,
                 stride: IntOrSeq = (1, 1, 1), output_padding: IntOrSeq = (0, 0, 0),
                 padding: PaddingArg = (0, 0, 0), dilation: IntOrSeq = (1, 1, 1),
                 groups: int = 1, use_bias: bool = True, padding_mode: str = "ZEROS",
                 dtype: Any = None, *, algorithm: str = "auto", precision: Any = None,
                 key: jax.Array):
        super().__init__(3, in_channels, out_channels, kernel_size, stride, padding,
                         output_padding, dilation, groups, use_bias, padding_mode,
                         dtype, algorithm=algorithm, precision=precision, key=key)
