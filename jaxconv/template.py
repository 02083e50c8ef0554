"""Template matching by normalised cross-correlation, as in skimage.

``match_template`` equals ``skimage.feature.match_template``.

"Check every chunk of the image for similarity with the pattern": for each
placement of the template ``t`` (``V`` cells, mean ``t_bar``) over a window
``w`` of the image,

    response = sum((w - w_bar) * (t - t_bar))
               / sqrt(sum((w - w_bar)**2) * sum((t - t_bar)**2)),

the correlation coefficient of window and template, in ``[-1, 1]``.  Built from
this library's pieces (J. P. Lewis, "Fast Normalized Cross-Correlation"):

- the numerator is ``jaxconv.correlate(image, t - t_bar, "valid")``;
- ``sum((w - w_bar)**2) = (V * S2 - S1**2) / V`` with the window sums ``S1`` of the
  image and ``S2`` of its square, from ``jaxconv.sum_pool`` (separable: an
  ``m x n`` window costs ``m + n`` slices, and there is no cumulative-sum
  cancellation on large images).

Decisions, following ``skimage.feature.match_template`` unless noted:

- dtype: float16/bfloat16/float32 images give float32, float64 and integer or
  bool images give float64 (float32 when ``jax_enable_x64`` is off); complex
  images raise ``TypeError`` (as skimage).
- Windows whose denominator is at most the dtype's ``eps`` (flat windows, a
  flat template) give 0, as skimage.  Results are clipped to ``[-1, 1]``
  (rounding could overshoot by an ulp).
- ``pad_input=True`` pads the image with ``mode`` so the output has the
  image's shape and each value belongs to the template *centre* (offset
  ``m // 2``); skimage's ``mode`` is any ``numpy.pad`` mode, here the modes of
  ``jaxconv.pad``: ``"constant"``/``"zeros"`` (with ``constant_values``),
  ``"reflect"``, ``"edge"``/``"replicate"``, ``"wrap"``/``"circular"`` and
  ``"symmetric"``.
- Any number of dimensions >= 1 (skimage: 2 and 3).  Like skimage, every axis
  is spatial by default: an ``(M, N, C)`` colour image and an ``(m, n, C)``
  template are a 3-D volume, and the result is ``(M - m + 1, N - n + 1, 1)``.
  ``channel_axis=-1`` (an extension) names the trailing axis as channels: the
  template must have the image's channel count, the window covers all
  channels, the channel axis is never padded or slid, and it is dropped from
  the result (``skimage_result[..., 0]`` without padding,
  ``skimage_result[..., C // 2]`` with ``pad_input=True``).
- ``method`` (an extension) is passed to ``jaxconv.correlate`` for the
  numerator: ``"auto"`` (FFT only for large templates), ``"direct"`` or
  ``"fft"`` (skimage always uses FFT).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .padding import normalize_padding_mode, pad
from .pooling import sum_pool
from .signal import correlate

__all__ = ["match_template"]


def _float_dtype(dtype, name: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"`{name}` (dtype {dtype}) must be real; complex is not "
                        "supported.")
    if dtype in (np.dtype(np.float16), np.dtype(jnp.bfloat16), np.dtype(np.float32)):
        return np.dtype(np.float32)
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def match_template(
    image: jax.Array,
    template: jax.Array,
    *,
    pad_input: bool = False,
    mode: str = "constant",
    constant_values: Any = 0,
    channel_axis: int | None = None,
    method: str = "auto",
) -> jax.Array:
    """Normalised cross-correlation of ``template`` at every placement in ``image``.

    Equals ``skimage.feature.match_template`` (see the module docstring for
    the formula and the decisions).  Works under ``jit`` (keyword arguments
    other than ``constant_values`` are static), ``vmap`` and ``grad``.

    Args:
      image: ``(*S)`` or, with ``channel_axis=-1``, ``(*S, C)``.
      template: ``(*T)`` or ``(*T, C)``, same rank as ``image``, with
        ``T <= S`` on every axis.
      pad_input: if True, pad ``image`` so the result has its (spatial) shape
        and values refer to the template centre; else the result is
        ``S - T + 1`` and values refer to the template's first corner.
      mode: how ``image`` is padded when ``pad_input``: ``"constant"``,
        ``"reflect"``, ``"edge"``, ``"wrap"``, ``"symmetric"`` (NumPy names;
        jaxconv's ``"zeros"``, ``"replicate"``, ``"circular"`` too).
      constant_values: the fill of ``mode="constant"``.
      channel_axis: ``None`` (every axis spatial, as skimage) or ``-1`` (the
        last axis holds channels).
      method: ``"auto"``, ``"direct"`` or ``"fft"``, for the correlation.

    Returns:
      Correlation coefficients in ``[-1, 1]``, shape ``S - T + 1`` (or ``S``
      with ``pad_input``), float32 for float16/bfloat16/float32 images, else
      float64 (when x64 is enabled).

    Raises:
      ValueError: for ranks that differ, a template larger than the image, a
        channel count that differs, an unknown ``mode``, ``method`` or
        ``channel_axis``.
      TypeError: for complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> image = jnp.zeros((6, 6)).at[1, 1].set(1.0).at[4, 4].set(-1.0)
      >>> template = jnp.zeros((3, 3)).at[1, 1].set(1.0)
      >>> r = match_template(image, template)
      >>> r.shape, round(float(r[0, 0]), 3), round(float(r[3, 3]), 3)
      ((4, 4), 1.0, -1.0)
      >>> match_template(image, template, pad_input=True).shape
      (6, 6)
    """
    image = jnp.asarray(image)
    template = jnp.asarray(template)
    if channel_axis not in (None, -1, image.ndim - 1) or isinstance(channel_axis, bool):
        raise ValueError(
            f"`channel_axis` (={channel_axis!r}) must be None or -1 (the last axis)."
        )
    has_channels = channel_axis is not None
    (mode,) = normalize_padding_mode(mode, 1, "mode")
    if image.ndim != template.ndim:
        raise ValueError(
            f"`template` (shape {template.shape}) must have as many dimensions as "
            f"`image` (shape {image.shape})."
        )
    if image.ndim < 1 + has_channels:
        raise ValueError(
            f"`image` (shape {image.shape}) needs at least one spatial axis."
        )
    if any(t > s for t, s in zip(template.shape, image.shape)):
        raise ValueError(
            f"`template` (shape {template.shape}) must not be larger than `image` "
            f"(shape {image.shape}) in any dimension."
        )
    if has_channels and template.shape[-1] != image.shape[-1]:
        raise ValueError(
            f"`template` has {template.shape[-1]} channels (shape "
            f"{template.shape}) but `image` has {image.shape[-1]} (shape "
            f"{image.shape}); they must match."
        )
    if template.size == 0:
        raise ValueError(f"`template` (shape {template.shape}) must not be empty.")
    out_dtype = _float_dtype(image.dtype, "image")
    dtype = jnp.result_type(out_dtype, _float_dtype(template.dtype, "template"))
    image = image.astype(dtype)
    template = template.astype(dtype)

    spatial = template.shape[:-1] if has_channels else template.shape
    if pad_input:
        pairs = [(t // 2, (t - 1) // 2) for t in spatial]
        image = pad(image, pairs, mode=mode, axes=tuple(range(len(spatial))),
                    value=constant_values)

    volume = template.size
    centred = template - jnp.mean(template)
    ssd = jnp.sum(centred * centred)
    numerator = correlate(image, centred, "valid", method=method)

    # Window sums over the spatial axes (and then the channels).
    chan = image if has_channels else image[..., None]
    s1 = jnp.sum(sum_pool(chan, spatial, stride=1), axis=-1)
    s2 = jnp.sum(sum_pool(chan * chan, spatial, stride=1), axis=-1)
    if has_channels:
        numerator = numerator[..., 0]
    # V * S2 - S1**2 (not S2 - S1**2 / V): a flat window of exactly
    # representable values gives exactly 0 even where XLA turns the division
    # by the constant V into a multiplication by its rounded reciprocal.
    var_ssd = jnp.maximum(s2 * volume - s1 * s1, 0) * (ssd / volume)
    # Double `where` keeps gradients finite where the window is flat.
    mask = jax.lax.stop_gradient(jnp.sqrt(var_ssd)) > np.finfo(out_dtype).eps
    denominator = jnp.sqrt(jnp.where(mask, var_ssd, 1))
    response = jnp.where(mask, numerator / denominator, 0)
    return jnp.clip(response, -1, 1).astype(out_dtype)
