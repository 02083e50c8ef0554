"""The layer zoo of ``jaxconv bench --zoo``: every conv layer of real networks.

Each architecture is walked as its reference definition builds it (the layer
names are those of the reference implementation, torchvision's where there is
one), tracking the activation's spatial size and channels with
:mod:`jaxconv.shapes`, at a small input resolution (:data:`IMAGE`,
:data:`VOLUME`, :data:`FRAMES`): the channel counts, kernels, strides,
dilations, groups and paddings are the real ones, only the spatial sizes are
smaller than the papers' so that the whole zoo runs in minutes on a laptop.

Layers that are not convolutions (linear heads, ConvNeXt's pointwise
``nn.Linear`` layers, norms, pools) are not listed; pools and concatenations
are followed for the spatial sizes.  Every conv is listed once per
architecture: a layer identical to an earlier one of the same architecture
(same shapes and hyper-parameters) is dropped by :func:`distinct_layers`.

This module is pure data plus shape arithmetic: no array is created.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from . import shapes

#: Input height and width of the 2-D image networks.
IMAGE = 64
#: Input depth, height and width of the 3-D U-Net.
VOLUME = 16
#: Mel-spectrogram frames into the HiFi-GAN generator (256 samples each).
FRAMES = 16
#: Batch sizes every layer is benchmarked at.
BATCHES = (1, 8)


class Layer(NamedTuple):
    """One convolution of an architecture (one example; channels last).

    Attributes:
      arch: the architecture's short name (``"resnet18"``).
      name: the layer's name in the reference implementation
        (``"layer2.0.conv1"``).
      spatial: the input's spatial size.
      c_in: input channels.
      c_out: output channels.
      kernel: spatial kernel size.
      stride: per-axis stride.
      dilation: per-axis kernel dilation.
      padding: per-axis ``(lo, hi)`` padding as passed to
        ``jax.lax.conv_general_dilated``, or, for a transposed layer, to
        ``jax.lax.conv_transpose`` (PyTorch's ``ConvTranspose`` padding ``p``
        is ``dilation * (k - 1) - p`` there).
      groups: feature groups.
      transposed: a transposed convolution (``stride`` is its upsampling).
      src: the conv layer whose output (after element-wise ops only: norm,
        activation, residual add) is this layer's input; ``None`` after a
        pool, a concatenation, a global pool, or at the network input.
      out_spatial: the output's spatial size.
    """

    arch: str
    name: str
    spatial: tuple[int, ...]
    c_in: int
    c_out: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    groups: int
    transposed: bool
    src: str | None
    out_spatial: tuple[int, ...]

    @property
    def problem(self) -> tuple:
        """Everything that defines the computation (not the names)."""
        return (self.spatial, self.c_in, self.c_out, self.kernel, self.stride,
                self.dilation, self.padding, self.groups, self.transposed)

    def flops(self, batch: int = 1) -> int:
        """Forward FLOPs (a multiply-add counts 2) at ``batch`` examples.

        A transposed layer counts the products of its input with the kernel
        (the zeros of the upsampled input are not counted).
        """
        k = math.prod(self.kernel)
        if self.transposed:
            return 2 * batch * math.prod(self.spatial) * self.c_in * self.c_out * k
        return shapes.conv_flops(
            self.spatial, self.kernel, self.c_in, self.c_out, stride=self.stride,
            padding=list(self.padding), dilation=self.dilation, groups=self.groups,
            batch=batch)


class ZooCase(NamedTuple):
    """One zoo layer at one batch size: case id ``zoo/<arch>/<layer>/b<n>``."""

    id: str
    n: int
    layer: Layer


class _T(NamedTuple):
    """An activation: spatial size, channels, and the conv that produced it."""

    spatial: tuple[int, ...]
    c: int
    src: str | None


def _tuple(v: int | tuple[int, ...], nd: int) -> tuple[int, ...]:
    return (v,) * nd if isinstance(v, int) else tuple(v)


class _Net:
    """Records the convs of one architecture while walking its definition."""

    def __init__(self, arch: str):
        self.arch = arch
        self.layers: list[Layer] = []

    def conv(self, name: str, x: _T, c_out: int, k, stride=1, padding=None,
             dilation=1, groups=1) -> _T:
        """A conv with PyTorch's symmetric padding (default ``d * (k - 1) // 2``)."""
        nd = len(x.spatial)
        k, s, d = _tuple(k, nd), _tuple(stride, nd), _tuple(dilation, nd)
        if padding is None:
            padding = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
        pads = tuple((p, p) for p in _tuple(padding, nd))
        out = shapes.conv_output_shape(x.spatial, k, stride=s, padding=list(pads),
                                       dilation=d)
        self.layers.append(Layer(self.arch, name, x.spatial, x.c, c_out, k, s, d,
                                 pads, groups, False, x.src, out))
        return _T(out, c_out, name)

    def tconv(self, name: str, x: _T, c_out: int, k, stride, padding=0) -> _T:
        """A transposed conv with PyTorch's ``ConvTranspose`` padding ``padding``."""
        nd = len(x.spatial)
        k, s = _tuple(k, nd), _tuple(stride, nd)
        pads = tuple((ki - 1 - p, ki - 1 - p)
                     for ki, p in zip(k, _tuple(padding, nd)))
        out = shapes.conv_output_shape(x.spatial, k, padding=list(pads),
                                       lhs_dilation=s)
        self.layers.append(Layer(self.arch, name, x.spatial, x.c, c_out, k, s,
                                 (1,) * nd, pads, 1, True, x.src, out))
        return _T(out, c_out, name)


def _pool(x: _T, k: int, stride: int, padding: int = 0) -> _T:
    out = shapes.pool_output_shape(x.spatial, k, stride=stride, padding=padding)
    return _T(out, x.c, None)


def _gap(x: _T) -> _T:
    return _T((1,) * len(x.spatial), x.c, None)


def _concat(a: _T, b: _T) -> _T:
    if a.spatial != b.spatial:
        raise ValueError(f"cannot concatenate {a} and {b}: spatial sizes differ")
    return _T(a.spatial, a.c + b.c, None)


# --- ResNet and ResNeXt --------------------------------------------------------
# He et al., "Deep Residual Learning for Image Recognition", CVPR 2016
# (arXiv:1512.03385); Xie et al., "Aggregated Residual Transformations for Deep
# Neural Networks" (ResNeXt), CVPR 2017 (arXiv:1611.05431).  As torchvision's
# resnet.py ("v1.5": the stride of a bottleneck is on its 3x3 conv).

def _resnet(arch: str, blocks: tuple[int, ...], bottleneck: bool, groups: int = 1,
            width_per_group: int = 64) -> list[Layer]:
    net = _Net(arch)
    x = net.conv("conv1", _T((IMAGE, IMAGE), 3, None), 64, 7, 2, 3)
    x = _pool(x, 3, 2, 1)
    expansion = 4 if bottleneck else 1
    inplanes = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        for b in range(n):
            stride = 2 if (i > 0 and b == 0) else 1
            pre = f"layer{i + 1}.{b}"
            if bottleneck:
                width = planes * width_per_group // 64 * groups
                y = net.conv(f"{pre}.conv1", x, width, 1)
                y = net.conv(f"{pre}.conv2", y, width, 3, stride, groups=groups)
                y = net.conv(f"{pre}.conv3", y, planes * expansion, 1)
            else:
                y = net.conv(f"{pre}.conv1", x, planes, 3, stride)
                y = net.conv(f"{pre}.conv2", y, planes, 3)
            if stride != 1 or inplanes != planes * expansion:
                net.conv(f"{pre}.downsample.0", x, planes * expansion, 1, stride)
            x, inplanes = y, planes * expansion
    return net.layers


# --- MobileNetV2 ---------------------------------------------------------------
# Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
# CVPR 2018 (arXiv:1801.04381); names as torchvision's mobilenetv2.py.

def _mobilenet_v2() -> list[Layer]:
    net = _Net("mobilenet_v2")
    x = net.conv("features.0.0", _T((IMAGE, IMAGE), 3, None), 32, 3, 2)
    setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    idx = 1
    for t, c, n, s in setting:
        for b in range(n):
            pre, j = f"features.{idx}.conv", 0
            hidden = x.c * t
            y = x
            if t != 1:
                y = net.conv(f"{pre}.0.0", y, hidden, 1)
                j = 1
            y = net.conv(f"{pre}.{j}.0", y, hidden, 3, s if b == 0 else 1,
                         groups=hidden)
            x = net.conv(f"{pre}.{j + 1}", y, c, 1)
            idx += 1
    net.conv(f"features.{idx}.0", x, 1280, 1)
    return net.layers


# --- EfficientNet-B0 -----------------------------------------------------------
# Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
# Networks", ICML 2019 (arXiv:1905.11946); MBConv blocks with squeeze-excite
# (1x1 convs on the globally pooled activation), names as torchvision's
# efficientnet.py.

def _efficientnet_b0() -> list[Layer]:
    net = _Net("efficientnet_b0")
    x = net.conv("features.0.0", _T((IMAGE, IMAGE), 3, None), 32, 3, 2)
    # expand ratio, kernel, stride, out channels, repeats
    setting = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2),
               (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
               (6, 3, 1, 320, 1)]
    for stage, (t, k, s, c, n) in enumerate(setting, start=1):
        for b in range(n):
            pre, j = f"features.{stage}.{b}.block", 0
            expanded, squeeze = x.c * t, max(1, x.c // 4)
            y = x
            if t != 1:
                y = net.conv(f"{pre}.0.0", y, expanded, 1)
                j = 1
            y = net.conv(f"{pre}.{j}.0", y, expanded, k, s if b == 0 else 1,
                         groups=expanded)
            se = net.conv(f"{pre}.{j + 1}.fc1", _gap(y), squeeze, 1)
            net.conv(f"{pre}.{j + 1}.fc2", se, expanded, 1)
            x = net.conv(f"{pre}.{j + 2}.0", y, c, 1)  # y * the SE gate
    net.conv("features.8.0", x, 1280, 1)
    return net.layers


# --- ConvNeXt-T ----------------------------------------------------------------
# Liu et al., "A ConvNet for the 2020s", CVPR 2022 (arXiv:2201.03545): a 4x4
# stride-4 stem, 7x7 depthwise convs, 2x2 stride-2 downsampling convs; the
# pointwise layers of a block are nn.Linear (not convs) and are not listed.
# Names as torchvision's convnext.py.

def _convnext_t() -> list[Layer]:
    net = _Net("convnext_t")
    x = net.conv("features.0.0", _T((IMAGE, IMAGE), 3, None), 96, 4, 4, 0)
    dims, depths = (96, 192, 384, 768), (3, 3, 9, 3)
    for i, (dim, depth) in enumerate(zip(dims, depths)):
        if i:
            x = net.conv(f"features.{2 * i}.1", x, dim, 2, 2, 0)
        for b in range(depth):
            y = net.conv(f"features.{2 * i + 1}.{b}.block.0", x, dim, 7, 1, 3,
                         groups=dim)
            x = _T(y.spatial, dim, None)  # Linear layers follow: src unknown
    return net.layers


# --- U-Net ---------------------------------------------------------------------
# Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
# Segmentation", MICCAI 2015 (arXiv:1505.04597): 1 input channel, 64..1024
# channels, 2x2 max pools, 2x2 stride-2 up-convolutions halving the channels,
# 2 classes; with "same" 3x3 convs (padding 1) as in common implementations,
# so that the skip connections need no cropping.

def _unet() -> list[Layer]:
    net = _Net("unet")

    def double(pre: str, x: _T, c: int) -> _T:
        return net.conv(f"{pre}.conv2", net.conv(f"{pre}.conv1", x, c, 3), c, 3)

    x = double("inc", _T((IMAGE, IMAGE), 1, None), 64)
    skips = [x]
    for i, c in enumerate((128, 256, 512, 1024), start=1):
        x = double(f"down{i}", _pool(x, 2, 2), c)
        skips.append(x)
    for i, c in enumerate((512, 256, 128, 64), start=1):
        up = net.tconv(f"up{i}.up", x, c, 2, 2)
        x = double(f"up{i}", _concat(skips[-1 - i], up), c)
    net.conv("outc", x, 2, 1)
    return net.layers


# --- 3-D U-Net -----------------------------------------------------------------
# Cicek et al., "3D U-Net: Learning Dense Volumetric Segmentation from Sparse
# Annotation", MICCAI 2016 (arXiv:1606.06650): 3 input channels, two 3x3x3
# convs per level (32/64, 64/128, 128/256, 256/512 channels), 2x2x2 max pools,
# 2x2x2 stride-2 up-convolutions keeping the channels, 3 labels; "same" convs.

def _unet3d() -> list[Layer]:
    net = _Net("unet3d")
    x = _T((VOLUME,) * 3, 3, None)
    skips = []
    for i, (c1, c2) in enumerate(((32, 64), (64, 128), (128, 256), (256, 512))):
        if i:
            x = _pool(x, 2, 2)
        x = net.conv(f"down{i}.conv2", net.conv(f"down{i}.conv1", x, c1, 3), c2, 3)
        skips.append(x)
    for i, c in enumerate((256, 128, 64), start=1):
        up = net.tconv(f"up{i}.up", x, x.c, 2, 2)
        x = _concat(skips[-1 - i], up)
        x = net.conv(f"up{i}.conv2", net.conv(f"up{i}.conv1", x, c, 3), c, 3)
    net.conv("out", x, 3, 1)
    return net.layers


# --- HiFi-GAN V1 generator -----------------------------------------------------
# Kong et al., "HiFi-GAN: Generative Adversarial Networks for Efficient and High
# Fidelity Speech Synthesis", NeurIPS 2020 (arXiv:2010.05646), config V1: 80 mel
# channels, conv_pre 7 -> 512, transposed upsampling by 8, 8, 2, 2 (kernels 16,
# 16, 4, 4), multi-receptive-field fusion with ResBlock1 (kernels 3, 7, 11;
# dilations 1, 3, 5, each followed by a dilation-1 conv), conv_post 7 -> 1.
# Names as the authors' models.py.

def _hifigan_v1() -> list[Layer]:
    net = _Net("hifigan_v1")
    x = net.conv("conv_pre", _T((FRAMES,), 80, None), 512, 7, 1, 3)
    rates, kernels = (8, 8, 2, 2), (16, 16, 4, 4)
    for i, (u, k) in enumerate(zip(rates, kernels)):
        c = 512 // 2 ** (i + 1)
        x = net.tconv(f"ups.{i}", x, c, k, u, (k - u) // 2)
        for j, kr in enumerate((3, 7, 11)):
            y = x
            for m, d in enumerate((1, 3, 5)):
                pre = f"resblocks.{3 * i + j}"
                y = net.conv(f"{pre}.convs1.{m}", y, c, kr, dilation=d)
                y = net.conv(f"{pre}.convs2.{m}", y, c, kr)
        x = _T(x.spatial, x.c, None)  # the mean of the three resblocks
    net.conv("conv_post", x, 1, 7, 1, 3)
    return net.layers


#: The architectures: short name -> function listing every conv layer in order.
ARCHS: dict[str, Callable[[], list[Layer]]] = {
    "resnet18": lambda: _resnet("resnet18", (2, 2, 2, 2), False),
    "resnet50": lambda: _resnet("resnet50", (3, 4, 6, 3), True),
    "resnext50_32x4d": lambda: _resnet("resnext50_32x4d", (3, 4, 6, 3), True,
                                       groups=32, width_per_group=4),
    "mobilenet_v2": _mobilenet_v2,
    "efficientnet_b0": _efficientnet_b0,
    "convnext_t": _convnext_t,
    "unet": _unet,
    "unet3d": _unet3d,
    "hifigan_v1": _hifigan_v1,
}


def layers(arch: str) -> list[Layer]:
    """Every conv layer of ``arch`` in execution order, repeats included.

    Args:
      arch: one of :data:`ARCHS`.

    Returns:
      The layers, as the architecture runs them.

    Raises:
      ValueError: for an unknown ``arch``.

    Example:
      >>> [l.name for l in layers("resnet18")][:3]
      ['conv1', 'layer1.0.conv1', 'layer1.0.conv2']
    """
    if arch not in ARCHS:
        raise ValueError(f"`arch` (={arch!r}) must be one of {', '.join(ARCHS)}.")
    return ARCHS[arch]()


def distinct_layers(arch: str) -> list[Layer]:
    """The layers of ``arch`` without repeats (the first of identical ones).

    Example:
      >>> len(layers("resnet18")), len(distinct_layers("resnet18"))
      (20, 11)
    """
    seen: set[tuple] = set()
    out = []
    for layer in layers(arch):
        if layer.problem not in seen:
            seen.add(layer.problem)
            out.append(layer)
    return out


def zoo_cases(batches: tuple[int, ...] = BATCHES,
              archs: tuple[str, ...] | None = None) -> list[ZooCase]:
    """Every distinct layer of every architecture at every batch size.

    Args:
      batches: batch sizes.
      archs: architectures (default: all of :data:`ARCHS`).

    Returns:
      :class:`ZooCase` records, by architecture, layer, then batch.

    Example:
      >>> zoo_cases(archs=("resnet18",))[0].id
      'zoo/resnet18/conv1/b1'
    """
    out = []
    for arch in archs or tuple(ARCHS):
        for layer in distinct_layers(arch):
            for n in batches:
                out.append(ZooCase(f"zoo/{arch}/{layer.name}/b{n}", n, layer))
    return out
