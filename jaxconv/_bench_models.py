"""Model training steps for ``jaxconv bench --models`` (needs flax).

Four architectures of the layer zoo (:mod:`jaxconv._zoo`) written in
``flax.linen`` with their real channel counts, at a small resolution:
ResNet-18, MobileNetV2 and ConvNeXt-T (64x64 RGB, batch 8, 1000 classes) and
the U-Net (32x32 grayscale, batch 2, 2 classes per pixel).  Each model is
built twice from the same parameters: once with Flax's defaults (``nn.Conv``
on ``jax.lax.conv_general_dilated``, ``nn.max_pool``, ``nn.ConvTranspose``)
and once with jaxconv plugged in (``nn.Conv(...,
conv_general_dilated=jaxconv.lax.conv_general_dilated)``,
:func:`jaxconv.max_pool`, and for the U-Net's up-convolutions a module with
``nn.ConvTranspose``'s parameters calling :func:`jaxconv.lax.conv_transpose`).

The timed function is one training step: the loss (softmax cross-entropy)
and the gradients of every parameter, with batch norm in training mode.  Its
outputs (loss, logits, gradients) are compared with a float64 run of the
Flax-default model (:func:`errors`): ``rel_err`` and ``leaf_rel_err``
(jaxconv) and ``lax_rel_err`` and ``lax_leaf_rel_err`` (Flax's default in
float32); the record is ``ok`` when jaxconv's errors are within 2x of the
float32 baseline's, or below 1e-5.

flax is imported only when a model is built (the rest of jaxconv never
imports it).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import lax as jl
from . import pooling
from ._explain import explain

#: model id -> (input shape of a batch, classes, per-pixel labels)
SHAPES: dict[str, tuple[tuple[int, ...], int, bool]] = {
    "model/resnet18": ((8, 64, 64, 3), 1000, False),
    "model/mobilenet_v2": ((8, 64, 64, 3), 1000, False),
    "model/convnext_t": ((8, 64, 64, 3), 1000, False),
    "model/unet": ((2, 32, 32, 1), 2, True),
}

# Timing of one train step: (budget in seconds, minimum and maximum repetitions).
TIMING = {"full": (5.0, 7, 51), "quick": (1.0, 3, 11)}


def require_flax() -> None:
    """Raise ImportError when flax is not installed."""
    import flax.linen  # noqa: F401


def model_ids(quick: bool = False) -> list[str]:
    """The ids of the models (``model/<arch>``), with the Equinox U-Net's
    (:mod:`jaxconv._bench_eqx`) where equinox is installed."""
    from . import _bench_eqx

    return list(SHAPES) + ([_bench_eqx.NAME] if _bench_eqx.available() else [])


class Ops:
    """The convolution and pooling functions a model is built with."""

    def __init__(self, jaxconv: bool):
        self.jaxconv = jaxconv
        # nn.Conv's own default when None
        self.conv = jl.conv_general_dilated if jaxconv else None

    def conv_kwargs(self) -> dict:
        return {} if self.conv is None else {"conv_general_dilated": self.conv}

    def max_pool(self, x, window: int, stride: int, pad: int = 0):
        nd = x.ndim - 2
        if self.jaxconv:
            return pooling.max_pool(x, window, stride=stride,
                                    padding=[(pad, pad)] * nd)
        import flax.linen as nn

        return nn.max_pool(x, (window,) * nd, (stride,) * nd, [(pad, pad)] * nd)


def _models() -> dict[str, Any]:
    """The Flax modules (flax is imported here, not at jaxconv's import)."""
    import flax.linen as nn

    def bn(train: bool, name: str):
        return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                            epsilon=1e-5, name=name)

    class BasicBlock(nn.Module):
        planes: int
        stride: int
        ops: Any

        @nn.compact
        def __call__(self, x, train: bool):
            kw = self.ops.conv_kwargs()
            s = (self.stride, self.stride)
            y = nn.Conv(self.planes, (3, 3), s, [(1, 1)] * 2, use_bias=False,
                        name="conv1", **kw)(x)
            y = nn.relu(bn(train, "bn1")(y))
            y = nn.Conv(self.planes, (3, 3), 1, [(1, 1)] * 2, use_bias=False,
                        name="conv2", **kw)(y)
            y = bn(train, "bn2")(y)
            if self.stride != 1 or x.shape[-1] != self.planes:
                x = nn.Conv(self.planes, (1, 1), s, "VALID", use_bias=False,
                            name="downsample_conv", **kw)(x)
                x = bn(train, "downsample_bn")(x)
            return nn.relu(x + y)

    class ResNet18(nn.Module):
        """He et al. 2016 (arXiv:1512.03385), as torchvision's resnet18."""

        ops: Any
        classes: int = 1000

        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.Conv(64, (7, 7), 2, [(3, 3)] * 2, use_bias=False, name="conv1",
                        **self.ops.conv_kwargs())(x)
            x = nn.relu(bn(train, "bn1")(x))
            x = self.ops.max_pool(x, 3, 2, 1)
            for i, planes in enumerate((64, 128, 256, 512)):
                for b in range(2):
                    x = BasicBlock(planes, 2 if i and not b else 1, self.ops,
                                   name=f"layer{i + 1}_{b}")(x, train)
            return nn.Dense(self.classes, name="fc")(jnp.mean(x, axis=(1, 2)))

    class InvertedResidual(nn.Module):
        out: int
        stride: int
        expand: int
        ops: Any

        @nn.compact
        def __call__(self, x, train: bool):
            kw = self.ops.conv_kwargs()
            hidden = x.shape[-1] * self.expand
            y = x
            if self.expand != 1:
                y = nn.Conv(hidden, (1, 1), name="expand", use_bias=False, **kw)(y)
                y = nn.relu6(bn(train, "expand_bn")(y))
            y = nn.Conv(hidden, (3, 3), self.stride, [(1, 1)] * 2,
                        feature_group_count=hidden, use_bias=False, name="dw",
                        **kw)(y)
            y = nn.relu6(bn(train, "dw_bn")(y))
            y = nn.Conv(self.out, (1, 1), use_bias=False, name="project", **kw)(y)
            y = bn(train, "project_bn")(y)
            if self.stride == 1 and x.shape[-1] == self.out:
                y = x + y
            return y

    class MobileNetV2(nn.Module):
        """Sandler et al. 2018 (arXiv:1801.04381), as torchvision's."""

        ops: Any
        classes: int = 1000

        @nn.compact
        def __call__(self, x, train: bool = True):
            kw = self.ops.conv_kwargs()
            x = nn.Conv(32, (3, 3), 2, [(1, 1)] * 2, use_bias=False, name="stem",
                        **kw)(x)
            x = nn.relu6(bn(train, "stem_bn")(x))
            setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
            k = 0
            for t, c, n, s in setting:
                for b in range(n):
                    x = InvertedResidual(c, s if b == 0 else 1, t, self.ops,
                                         name=f"block{k}")(x, train)
                    k += 1
            x = nn.Conv(1280, (1, 1), use_bias=False, name="last", **kw)(x)
            x = nn.relu6(bn(train, "last_bn")(x))
            return nn.Dense(self.classes, name="classifier")(jnp.mean(x, axis=(1, 2)))

    class ConvNeXtBlock(nn.Module):
        dim: int
        ops: Any

        @nn.compact
        def __call__(self, x):
            y = nn.Conv(self.dim, (7, 7), 1, [(3, 3)] * 2,
                        feature_group_count=self.dim, name="dwconv",
                        **self.ops.conv_kwargs())(x)
            y = nn.LayerNorm(epsilon=1e-6, name="norm")(y)
            y = nn.Dense(4 * self.dim, name="pwconv1")(y)
            y = nn.Dense(self.dim, name="pwconv2")(nn.gelu(y, approximate=False))
            gamma = self.param("gamma", nn.initializers.constant(1e-6), (self.dim,))
            return x + gamma * y

    class ConvNeXtT(nn.Module):
        """Liu et al. 2022 (arXiv:2201.03545), ConvNeXt-T."""

        ops: Any
        classes: int = 1000

        @nn.compact
        def __call__(self, x, train: bool = True):
            kw = self.ops.conv_kwargs()
            dims, depths = (96, 192, 384, 768), (3, 3, 9, 3)
            x = nn.Conv(96, (4, 4), 4, "VALID", name="stem", **kw)(x)
            x = nn.LayerNorm(epsilon=1e-6, name="stem_norm")(x)
            for i, (dim, depth) in enumerate(zip(dims, depths)):
                if i:
                    x = nn.LayerNorm(epsilon=1e-6, name=f"down{i}_norm")(x)
                    x = nn.Conv(dim, (2, 2), 2, "VALID", name=f"down{i}", **kw)(x)
                for b in range(depth):
                    x = ConvNeXtBlock(dim, self.ops, name=f"stage{i}_{b}")(x)
            x = nn.LayerNorm(epsilon=1e-6, name="head_norm")(jnp.mean(x, axis=(1, 2)))
            return nn.Dense(self.classes, name="head")(x)

    class ConvTranspose(nn.Module):
        """nn.ConvTranspose's parameters and computation on jaxconv."""

        features: int
        kernel_size: tuple[int, ...]
        strides: tuple[int, ...]

        @nn.compact
        def __call__(self, x):
            kernel = self.param("kernel", nn.initializers.lecun_normal(),
                                self.kernel_size + (x.shape[-1], self.features))
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            return jl.conv_transpose(x, kernel, self.strides, "VALID") + bias

    class UNet(nn.Module):
        """Ronneberger et al. 2015 (arXiv:1505.04597) with "same" 3x3 convs."""

        ops: Any
        classes: int = 2

        @nn.compact
        def __call__(self, x, train: bool = True):
            kw = self.ops.conv_kwargs()

            def double(x, c, name):
                for j in (1, 2):
                    x = nn.relu(nn.Conv(c, (3, 3), 1, [(1, 1)] * 2,
                                        name=f"{name}_conv{j}", **kw)(x))
                return x

            x = double(x, 64, "inc")
            skips = [x]
            for i, c in enumerate((128, 256, 512, 1024), start=1):
                x = double(self.ops.max_pool(x, 2, 2), c, f"down{i}")
                skips.append(x)
            for i, c in enumerate((512, 256, 128, 64), start=1):
                if self.ops.jaxconv:
                    up = ConvTranspose(c, (2, 2), (2, 2), name=f"up{i}_up")(x)
                else:
                    up = nn.ConvTranspose(c, (2, 2), (2, 2), "VALID",
                                          name=f"up{i}_up")(x)
                x = double(jnp.concatenate([skips[-1 - i], up], -1), c, f"up{i}")
            return nn.Conv(self.classes, (1, 1), name="outc", **kw)(x)

    return {"model/resnet18": ResNet18, "model/mobilenet_v2": MobileNetV2,
            "model/convnext_t": ConvNeXtT, "model/unet": UNet}


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(a, np.float64)))
                             for a in jax.tree.leaves(tree))))


def errors(out, ref, *, cancelled: float = 1e-6) -> tuple[float, float, int]:
    """How far a train step's ``(loss, logits, grads)`` is from ``ref``.

    Returns:
      ``(rel_err, leaf_rel_err, n_cancelled)``: ``rel_err`` is the largest of
      ``|a - ref| / |ref|`` (Frobenius norms) for the loss, the logits and all
      gradients together; ``leaf_rel_err`` the largest per parameter, over the
      parameters whose reference gradient is not cancelled out: a gradient
      below ``cancelled`` times the norm of all gradients is zero in exact
      arithmetic (a bias followed by batch norm), its float32 value rounding
      noise; ``n_cancelled`` counts those.
    """
    def rel(a, r):
        scale = _norm(r)
        diff = _norm(jax.tree.map(lambda x, y: np.asarray(x, np.float64) - y, a, r))
        return diff / scale if scale else diff

    loss, logits, grads = out
    rloss, rlogits, rgrads = ref
    total = max(rel(loss, rloss), rel(logits, rlogits), rel(grads, rgrads))
    floor = cancelled * _norm(rgrads)
    worst, n_cancelled = 0.0, 0
    for a, r in zip(jax.tree.leaves(grads), jax.tree.leaves(rgrads)):
        if _norm(r) <= floor:
            n_cancelled += 1
        else:
            worst = max(worst, rel(a, r))
    return total, worst, n_cancelled


def train_step(model) -> Callable:
    """``step(variables, x, labels) -> (loss, logits, grads)`` of ``model``.

    Softmax cross-entropy over the last axis of the logits (per pixel for a
    segmentation model), batch norm in training mode, the gradients of every
    parameter.
    """
    def loss_fn(params, state, x, labels):
        variables = {"params": params, **state}
        if state:  # batch statistics: updated in training mode
            logits, _ = model.apply(variables, x, train=True, mutable=list(state))
        else:
            logits = model.apply(variables, x, train=True)
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)
        return jnp.mean(nll), logits

    def step(variables, x, labels):
        params = variables["params"]
        state = {k: v for k, v in variables.items() if k != "params"}
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, state, x, labels)
        return loss, logits, grads

    return step


def measure(name: str, build: Callable[[Ops], Any], x_shape: tuple[int, ...],
            classes: int, per_pixel: bool, *,
            timing: tuple[float, int, int]) -> dict:
    """Time and check the train step of ``build(Ops(...))``: one record.

    Args:
      name: the record's ``case``.
      build: returns the Flax module for an :class:`Ops`.
      x_shape: the input batch's shape (channels last).
      classes: classes of the labels.
      per_pixel: one label per output pixel (segmentation) instead of one per
        example.
      timing: (budget in seconds, minimum and maximum repetitions).
    """
    from . import bench

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
    ours, default = build(Ops(jaxconv=True)), build(Ops(jaxconv=False))
    variables = default.init(jax.random.key(0), x, train=False)
    out_shape = jax.eval_shape(lambda v, x: default.apply(v, x, train=False),
                               variables, x).shape
    label_shape = out_shape[:-1] if per_pixel else out_shape[:1]
    labels = jnp.asarray(rng.integers(0, classes, label_shape), jnp.int32)
    args = (variables, x, labels)
    step_j, step_l = train_step(ours), train_step(default)
    cj, cl = bench._compile_all([jax.jit(step_j).lower(*args),
                                 jax.jit(step_l).lower(*args)])
    out_j, out_l = cj(*args), cl(*args)
    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        out_64 = jax.jit(step_l)(v64, jnp.asarray(x, jnp.float64), labels)
        out_64 = jax.tree.map(np.asarray, out_64)
    return train_step_record(
        name, explain(step_j, *args), (cj, args), (cl, args), (out_j, out_l, out_64),
        timing=timing, temp_bytes=(bench._temp_bytes(cj), bench._temp_bytes(cl)),
        inputs=args, x_shape=x_shape, params=variables["params"])


def train_step_record(name: str, plans, jaxconv_step: tuple, lax_step: tuple,
                      outs: tuple, *, timing: tuple[float, int, int],
                      temp_bytes: tuple, inputs, x_shape, params) -> dict:
    """Time two compiled train steps interleaved; the ``train_step`` record.

    ``jaxconv_step`` and ``lax_step`` are ``(compiled, args)``; ``outs`` the
    outputs ``(jaxconv, lax, float64 lax)`` compared by :func:`errors`;
    ``plans`` the ``explain`` rows of the jaxconv step; ``temp_bytes`` the
    two programs' temporaries.
    """
    from . import bench

    out_j, out_l, out_64 = outs
    rel_err, leaf_err, n_cancelled = errors(out_j, out_64)
    lax_rel_err, lax_leaf_err, _ = errors(out_l, out_64)
    budget, min_reps, max_reps = timing
    tj, tl = bench.interleaved_samples([jaxconv_step, lax_step], budget=budget,
                                       min_reps=min_reps, max_reps=max_reps)
    mj, ml = statistics.median(tj), statistics.median(tl)
    return {
        "case": name, "direction": "train_step",
        "algorithm": "+".join(sorted({r.formulation for r in plans})) or "auto",
        "convs": len(plans),
        "jaxconv_s": mj, "lax_s": ml, "speedup": ml / mj,
        "speedup_range": bench.ratio_range(tl, tj),
        "temp_bytes": temp_bytes[0], "lax_temp_bytes": temp_bytes[1],
        "input_bytes": bench._nbytes(inputs), "output_bytes": bench._nbytes(out_l),
        "input_shape": list(x_shape),
        "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(params))),
        "rel_err": rel_err, "lax_rel_err": lax_rel_err,
        "leaf_rel_err": leaf_err, "lax_leaf_rel_err": lax_leaf_err,
        "cancelled_grads": n_cancelled,
        "ok": bool(rel_err <= max(2 * lax_rel_err, 1e-5)
                   and leaf_err <= max(2 * lax_leaf_err, 1e-5)),
    }


def run_model(name: str, *, quick: bool) -> dict:
    """The ``train_step`` record of the model ``name`` (one of :data:`SHAPES`,
    or ``model/eqx_unet``: :func:`jaxconv._bench_eqx.run_model`)."""
    from . import _bench_eqx

    if name == _bench_eqx.NAME:
        return _bench_eqx.run_model(quick=quick)
    if name not in SHAPES:
        raise ValueError(f"`name` (={name!r}) must be one of {', '.join(SHAPES)}, "
                         f"{_bench_eqx.NAME}.")
    x_shape, classes, per_pixel = SHAPES[name]
    build = _models()[name]
    return measure(name, lambda ops: build(ops, classes=classes), x_shape, classes,
                   per_pixel, timing=TIMING["quick" if quick else "full"])
