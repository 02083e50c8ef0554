"""An Equinox U-Net's training step for ``jaxconv bench --models`` (needs equinox).

The record ``model/eqx_unet``: a U-Net in the style of diffusion and
segmentation models, written the Equinox way, for *one* example
(channels first) and ``jax.vmap``-ed over the batch inside the loss.  Per
level a residual block (GroupNorm, SiLU, 3x3 conv, GroupNorm, SiLU, 3x3 conv,
a 1x1 conv on the shortcut where the channels change), 3x3 stride-2 convs
down, 4x4 stride-2 transposed convs up, skip concatenations, and at the
bottom one self-attention block (``eqx.nn.MultiheadAttention`` over the
pixels) and a residual block.  Channels 32-64-128-256 on 32x32 RGB images,
batch 8, mean squared error against a target image.

The model is built once from ``eqx.nn`` layers (XLA's convolution) and
converted with :func:`jaxconv.equinox.from_equinox` (the same parameter
arrays), so the two training steps differ only in their conv layers.  The
timed function is one ``eqx.filter_jit``-ed step: the loss and the gradient
of every parameter (``eqx.filter_value_and_grad``).  Under ``jax.vmap`` each
jaxconv convolution folds into one batched convolution (the batching rules
of the ``jaxconv_conv`` primitive), as XLA's does.  The outputs (loss,
prediction, gradients) are checked against a float64 run of the ``eqx.nn``
model as :func:`jaxconv._bench_models.errors` does for the Flax models.

Equinox is imported only when a model is built (``import jaxconv`` never
imports it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._bench_models import TIMING, train_step_record
from ._explain import explain

#: The record's ``case``.
NAME = "model/eqx_unet"

#: The benchmarked configuration: batch, image side, input channels, the
#: channels of each level, GroupNorm groups, attention heads (0: none).
CONFIG: dict[str, Any] = {"batch": 8, "image": 32, "in_channels": 3,
                          "channels": (32, 64, 128, 256), "groups": 8, "heads": 4}


def available() -> bool:
    """Whether equinox is installed (the record is skipped without it)."""
    try:
        import equinox  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _classes() -> dict[str, type]:
    """The Equinox modules (equinox is imported here, not at jaxconv's import)."""
    import equinox as eqx

    class ResBlock(eqx.Module):
        """GroupNorm, SiLU, 3x3 conv, twice; 1x1 conv on a widened shortcut."""

        norm1: eqx.nn.GroupNorm
        conv1: eqx.nn.Conv2d
        norm2: eqx.nn.GroupNorm
        conv2: eqx.nn.Conv2d
        skip: eqx.nn.Conv2d | None

        def __init__(self, c_in: int, c_out: int, groups: int, dtype, *, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.norm1 = eqx.nn.GroupNorm(groups, c_in, dtype=dtype)
            self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, dtype=dtype, key=k1)
            self.norm2 = eqx.nn.GroupNorm(groups, c_out, dtype=dtype)
            self.conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, dtype=dtype,
                                       key=k2)
            self.skip = (eqx.nn.Conv2d(c_in, c_out, 1, dtype=dtype, key=k3)
                         if c_in != c_out else None)

        def __call__(self, x):
            h = self.conv1(jax.nn.silu(self.norm1(x)))
            h = self.conv2(jax.nn.silu(self.norm2(h)))
            return h + (x if self.skip is None else self.skip(x))

    class Attention(eqx.Module):
        """Self-attention over the pixels, residual."""

        norm: eqx.nn.GroupNorm
        attn: eqx.nn.MultiheadAttention

        def __init__(self, c: int, groups: int, heads: int, dtype, *, key):
            self.norm = eqx.nn.GroupNorm(groups, c, dtype=dtype)
            self.attn = eqx.nn.MultiheadAttention(heads, c, dtype=dtype, key=key)

        def __call__(self, x):
            c, *spatial = x.shape
            t = self.norm(x).reshape(c, -1).T  # (pixels, channels)
            return x + self.attn(t, t, t).T.reshape(c, *spatial)

    class UNet(eqx.Module):
        """A diffusion/segmentation-style U-Net on one channels-first image."""

        stem: eqx.nn.Conv2d
        down_blocks: list
        downs: list
        mid_attn: Attention | None
        mid_block: ResBlock
        ups: list
        up_blocks: list
        out_norm: eqx.nn.GroupNorm
        out_conv: eqx.nn.Conv2d

        def __init__(self, in_channels: int, channels: Sequence[int], groups: int,
                     heads: int, dtype, *, key):
            n = len(channels)
            keys = iter(jax.random.split(key, 4 * n + 4))
            c0 = channels[0]
            self.stem = eqx.nn.Conv2d(in_channels, c0, 3, padding=1, dtype=dtype,
                                      key=next(keys))
            self.down_blocks, self.downs = [], []
            prev = c0
            for i, c in enumerate(channels):
                self.down_blocks.append(ResBlock(prev, c, groups, dtype,
                                                 key=next(keys)))
                if i < n - 1:
                    self.downs.append(eqx.nn.Conv2d(c, c, 3, stride=2, padding=1,
                                                    dtype=dtype, key=next(keys)))
                prev = c
            self.mid_attn = (Attention(prev, groups, heads, dtype, key=next(keys))
                             if heads else None)
            self.mid_block = ResBlock(prev, prev, groups, dtype, key=next(keys))
            self.ups, self.up_blocks = [], []
            for c in reversed(channels[:-1]):
                self.ups.append(eqx.nn.ConvTranspose2d(prev, c, 4, stride=2,
                                                       padding=1, dtype=dtype,
                                                       key=next(keys)))
                self.up_blocks.append(ResBlock(2 * c, c, groups, dtype,
                                               key=next(keys)))
                prev = c
            self.out_norm = eqx.nn.GroupNorm(groups, c0, dtype=dtype)
            self.out_conv = eqx.nn.Conv2d(c0, in_channels, 3, padding=1, dtype=dtype,
                                          key=next(keys))

        def __call__(self, x):
            x = self.stem(x)
            skips = []
            for i, block in enumerate(self.down_blocks):
                x = block(x)
                if i < len(self.downs):
                    skips.append(x)
                    x = self.downs[i](x)
            if self.mid_attn is not None:
                x = self.mid_attn(x)
            x = self.mid_block(x)
            for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
                x = block(jnp.concatenate([up(x), skip], axis=0))
            return self.out_conv(jax.nn.silu(self.out_norm(x)))

    return {"ResBlock": ResBlock, "Attention": Attention, "UNet": UNet}


def build(key: jax.Array | None = None, *, in_channels: int = 3,
          channels: Sequence[int] = (32, 64, 128, 256), groups: int = 8,
          heads: int = 4, dtype: Any = jnp.float32) -> Any:
    """The U-Net from ``eqx.nn`` layers (XLA's convolution).

    Args:
      key: the initialisation key (default ``jax.random.key(0)``).
      in_channels: channels of the input and of the output image.
      channels: channels of each level (each level halves the image side).
      groups: GroupNorm groups; divides every entry of ``channels``.
      heads: attention heads of the bottom's self-attention (0: none); divides
        ``channels[-1]``.
      dtype: the parameters' dtype (float32 also where x64 is enabled).
    """
    channels = tuple(channels)
    if not channels or any(int(c) < 1 for c in channels):
        raise ValueError(f"`channels` (={channels!r}) must be a non-empty sequence "
                         "of positive ints.")
    if groups < 1 or any(c % groups for c in channels):
        raise ValueError(f"`groups` (={groups!r}) must be a positive int dividing "
                         f"every entry of `channels` (={channels!r}).")
    if heads < 0 or (heads and channels[-1] % heads):
        raise ValueError(f"`heads` (={heads!r}) must be 0 or a positive int "
                         f"dividing channels[-1] (={channels[-1]}).")
    key = jax.random.key(0) if key is None else key
    return _classes()["UNet"](in_channels, channels, groups, heads, dtype, key=key)


def loss_and_grads(model, x, target):
    """``(loss, prediction, grads)``: the mean squared error of
    ``jax.vmap(model)(x)`` against ``target`` and the gradient of every
    parameter (``eqx.filter_value_and_grad``)."""
    import equinox as eqx

    def loss_fn(model):
        pred = jax.vmap(model)(x)
        return jnp.mean(jnp.square(pred - target)), pred

    (loss, pred), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model)
    return loss, pred, grads


def train_step() -> Any:
    """The jitted training step: ``eqx.filter_jit(loss_and_grads)``."""
    import equinox as eqx

    return eqx.filter_jit(loss_and_grads)


def _to(dtype, tree):
    import equinox as eqx

    return jax.tree.map(lambda a: jnp.asarray(a, dtype) if eqx.is_inexact_array(a)
                        else a, tree)


def _flat(out):
    # the gradients as a list of leaves: the jaxconv model's conv layers are
    # other classes than the eqx.nn model's, their parameters in the same order
    loss, pred, grads = out
    return loss, pred, jax.tree.leaves(grads)


def measure(name: str = NAME, *, batch: int = 8, image: int = 32,
            in_channels: int = 3, channels: Sequence[int] = (32, 64, 128, 256),
            groups: int = 8, heads: int = 4, algorithm: str = "auto",
            timing: tuple[float, int, int] = TIMING["full"]) -> dict:
    """Time and check the U-Net's training step, ``eqx.nn`` against jaxconv.

    The keyword arguments after ``name`` are the model's and the batch's
    sizes (see :func:`build`; the defaults are the benchmarked ones) and the
    ``algorithm`` of every converted convolution; ``timing`` is (budget in
    seconds, minimum and maximum repetitions).  Returns the record, with the
    fields of :func:`jaxconv._bench_models.measure`.
    """
    import equinox as eqx

    from . import bench
    from .equinox import from_equinox

    model_l = build(jax.random.key(0), in_channels=in_channels, channels=channels,
                    groups=groups, heads=heads)
    model_j = from_equinox(model_l, algorithm=algorithm)
    rng = np.random.default_rng(0)
    x_shape = (batch, in_channels, image, image)
    x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
    target = jnp.asarray(rng.standard_normal(x_shape, np.float32))
    step_j, step_l = train_step(), train_step()
    cj, cl = bench._compile_all([step_j.lower(model_j, x, target),
                                 step_l.lower(model_l, x, target)])
    out_j, out_l = cj(model_j, x, target), cl(model_l, x, target)
    with jax.enable_x64(True):
        out_64 = train_step()(_to(jnp.float64, model_l),
                              jnp.asarray(x, jnp.float64),
                              jnp.asarray(target, jnp.float64))
        out_64 = jax.tree.map(np.asarray, out_64)
    params, static = eqx.partition(model_j, eqx.is_array)
    plans = explain(lambda p, x, t: loss_and_grads(eqx.combine(p, static), x, t),
                    params, x, target)
    return train_step_record(
        name, plans, (cj, (model_j, x, target)), (cl, (model_l, x, target)),
        (_flat(out_j), _flat(out_l), _flat(out_64)), timing=timing,
        temp_bytes=(bench._temp_bytes(cj.compiled), bench._temp_bytes(cl.compiled)),
        inputs=(params, x, target), x_shape=x_shape, params=params)


def run_model(*, quick: bool) -> dict:
    """The ``train_step`` record ``model/eqx_unet`` (sizes of :data:`CONFIG`)."""
    return measure(NAME, **CONFIG, timing=TIMING["quick" if quick else "full"])
