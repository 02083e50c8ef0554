"""The ``jaxconv`` command: ``shapes``, ``demo`` and ``bench``.

Bad input (an unknown layer, a negative size, an unreadable image, a bad
``--input``) prints one line naming the problem to stderr and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

_EXAMPLE = (
    "conv 3x3 32 same, relu, maxpool 2, conv 3x3 64, relu, gap, dense 10"
)

_MAIN_EPILOG = """\
examples:
  jaxconv shapes "{example}" --input 28x28x1
  jaxconv demo --out ./jaxconv-demo
  jaxconv bench --quick --cases dw3,point

Run "jaxconv COMMAND --help" for the options of each command.
"""

_SHAPES_EPILOG = """\
the layer language (layers separated by commas, arguments by spaces):
  conv KxK C [opts]        convolution, C output channels     conv 3x3 64 same s2
  dconv KxK [M] [opts]     depthwise conv (alias depthwise),  dconv 3x3 same
                           channel multiplier M (default 1)
  tconv KxK C [opts]       transposed convolution             tconv 4x4 32 s2 p1
  maxpool N [sN] [pad]     max pooling, window N or NxM       maxpool 2
  avgpool N [sN] [pad]     average pooling                    avgpool 3 s2 same
  gap | gmp                global average / max pooling       gap
  flatten                  flatten one example to a vector    flatten
  dense N                  fully connected, N outputs         dense 10
  relu gelu tanh sigmoid silu elu softmax                     relu
  dropout P                dropout with rate P                dropout 0.5

  options: padding same | valid | full | causal | same_lower | pN (N cells each
  side); sN stride; dN dilation; gN groups; reflect | replicate | circular |
  symmetric (padding mode); nobias; opN output padding (tconv). Sizes may be
  per axis: 3x5, s1x2. Defaults as jaxconv.conv: valid padding, stride 1.

  --input is one example's shape without the batch axis, channels last
  (HxWxC; L x C for 1-D, DxHxWxC for 3-D); with --channels-first it is read
  in PyTorch's order (CxHxW) and every layer uses channels first.

  FLOPs count a multiply-add as 2 (as jaxconv.shapes.conv_flops) and a
  pooling window element as 1; --macs counts the multiply-accumulates of the
  conv and dense layers instead (their FLOPs / 2; pooling and activations 0).

examples:
  jaxconv shapes "{example}" --input 28x28x1
  jaxconv shapes "conv 7x7 64 s2 p3, maxpool 3 s2 p1, conv 1x1 256" --input 224x224x3
  jaxconv shapes "conv 3 64 causal d2, conv 3 64 causal d4, gap, dense 1" --input 1000x1
  jaxconv shapes "dconv 3x3 same, conv 1x1 64, tconv 4x4 32 s2 p1" --input 16x16x32
  jaxconv shapes "conv 3x3 64 p1, maxpool 2, gap, dense 10" --input 3x32x32 \\
      --channels-first --macs
"""

_DEMO_EPILOG = """\
writes (to --out, default ./jaxconv-demo):
  input.png          the photo (colour and grayscale)
  kernels.png        edge (Sobel x/y, Laplacian), blur (box, Gaussian) and
                     sharpen kernels applied to the grayscale photo
  colour.png         a depthwise Gaussian blur and a multi-channel edge kernel
                     applied to the colour photo
  stack_layerN.png   activation maps of a small random conv stack

examples:
  jaxconv demo
  jaxconv demo --image my_photo.jpg --out /tmp/maps
"""


class _UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as a single line (no usage block) and status 2."""

    def error(self, message):  # noqa: D401 - argparse API
        raise _UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(
        prog="jaxconv",
        description="Convolutions for JAX, written in JAX: shape tables, a demo, "
        "and the benchmark suite.",
        epilog=_MAIN_EPILOG.format(example=_EXAMPLE),
        formatter_class=fmt,
    )
    p.add_argument("--version", action="version", version=_version_line(),
                   help="print the jaxconv and jax versions and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    s = sub.add_parser(
        "shapes",
        help="print output shape, params, FLOPs and receptive field per layer",
        description="Print a summary table (output shape, parameters, FLOPs and "
        "receptive field per layer) for a layer list, computed from "
        "jaxconv.shapes without running anything.",
        epilog=_SHAPES_EPILOG.format(example=_EXAMPLE),
        formatter_class=fmt,
    )
    s.add_argument("layers", help='layer list, e.g. "conv 3x3 32 same, relu, gap"')
    s.add_argument("--input", "-i", required=True, metavar="SHAPE",
                   help="one example's shape without the batch axis, e.g. "
                   "28x28x1 (channels last) or 1x28x28 with --channels-first")
    s.add_argument("--channels-first", action="store_true",
                   help="read --input as CxHxW (PyTorch's order) and build every "
                   "layer channels first")
    s.add_argument("--macs", action="store_true",
                   help="count multiply-accumulates (MACs) instead of FLOPs "
                   "(a multiply-add is 2 FLOPs or 1 MAC)")
    s.add_argument("--plan", action="store_true",
                   help="also print how each convolution is computed for one "
                   "example (formulation, loops, temporaries and why; see "
                   "jaxconv.explain), with the active profile")
    d = sub.add_parser(
        "demo",
        help="convolve a bundled photo and write activation-map PNGs",
        description="Convolve a photo (a bundled public-domain picture by "
        "default) with edge, blur and sharpen kernels and a small random conv "
        "stack, and write the activation maps as PNG files (needs matplotlib: "
        'pip install "jaxconv[examples]").',
        epilog=_DEMO_EPILOG,
        formatter_class=fmt,
    )
    d.add_argument("--image", metavar="PATH", help="a PNG/JPEG to use instead")
    d.add_argument("--out", metavar="DIR", default="jaxconv-demo",
                   help="output directory (default: ./jaxconv-demo)")
    d.add_argument("--size", type=int, default=256, metavar="N",
                   help="resize the longer side to N pixels (default: 256)")
    sub.add_parser(
        "bench",
        help="run the benchmark suite (see: jaxconv bench --help)",
        description="Benchmark jaxconv against jax.lax; all arguments are "
        "passed to the suite (jaxconv bench --help).",
        add_help=False,
    )
    return p


def _version_line() -> str:
    import jax

    from . import __version__

    return f"jaxconv {__version__} (jax {jax.__version__})"


# --------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------

# Sizes that are channel counts far more often than spatial sizes: an RGB(A)
# or grayscale image written in PyTorch's CxHxW order starts with one.
_FEW_CHANNELS = 4
_SPATIAL_LOOKING = 8


def layout_warning(shape: tuple[int, ...], channels_first: bool) -> str | None:
    """A warning when ``shape`` looks written in the other channel order.

    ``3x224x224`` read channels last means a 3-pixel-high image with 224
    channels: the habit of PyTorch's ``CxHxW``.  Warn when the channel axis
    is much larger than a spatial axis that looks like a channel count.

    Args:
      shape: one example's shape, as given to ``--input``.
      channels_first: whether ``--channels-first`` was passed.

    Returns:
      The warning text, or ``None`` when the order looks right.

    Example:
      >>> layout_warning((3, 224, 224), False) is not None
      True
      >>> layout_warning((224, 224, 3), False) is None
      True
    """
    if len(shape) < 2:
        return None
    chan, edge = (shape[0], shape[-1]) if channels_first else (shape[-1], shape[0])
    if edge > _FEW_CHANNELS or chan < _SPATIAL_LOOKING:
        return None
    text = "x".join(map(str, shape))
    if channels_first:
        return (f"--input {text} is read channels first: {chan} channels and a "
                f"last spatial size of {edge}; drop --channels-first if {edge} is "
                "the channel count")
    return (f"--input {text} is read channels last: {chan} channels and a first "
            f"spatial size of {edge}; pass --channels-first if {edge} is the "
            "channel count (PyTorch's CxHxW order)")


def _macs(model, summary):
    """``summary`` with multiply-accumulates in place of FLOPs."""
    import dataclasses

    from . import nn

    mac_layers = (nn.Conv, nn.ConvTranspose, nn.DepthwiseConv, nn.Dense)
    rows = tuple(
        row._replace(flops=row.flops // 2 if isinstance(layer, mac_layers) else 0)
        for layer, row in zip(model.layers, summary.rows, strict=True)
    )
    return dataclasses.replace(summary, rows=rows)


def _plan_table(model, shape) -> str:
    """``jaxconv.explain`` of the model on one example of ``shape``."""
    import jax
    import jax.numpy as jnp

    from ._explain import explain

    params, _ = model.init(jax.random.key(0), shape)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    return str(explain(model.apply, params, x))


def _shapes(args) -> int:
    from ._layerspec import parse_layers, parse_shape

    fmt = "channels_first" if args.channels_first else "channels_last"
    shape = parse_shape(args.input)
    model = parse_layers(args.layers, data_format=fmt)
    summary = model.summary(shape)
    if args.macs:
        summary = _macs(model, summary)
        head, _, rest = str(summary).partition("\n")
        # " MACs" has the width of "FLOPs": the right-aligned column stays put.
        table = head.replace("FLOPs", " MACs", 1) + "\n" + rest
        note = ("MACs: multiply-accumulates of the conv and dense layers; "
                "pooling and activations count 0")
    else:
        table = str(summary)
        note = ("FLOPs: a multiply-add counts 2, a pooling window element 1 "
                "(--macs counts multiply-accumulates)")
    warning = layout_warning(shape, args.channels_first)
    print(table)
    print(note)
    if args.plan:
        print()
        print(_plan_table(model, shape))
    if warning is not None:
        print(f"jaxconv shapes: warning: {warning}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------


def _kernels():
    """Classic 2-D kernels by name, as float32 NumPy arrays."""
    import numpy as np

    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    g = np.exp(-0.5 * (np.arange(5) - 2.0) ** 2)  # sigma = 1
    gauss = np.outer(g, g) / np.outer(g, g).sum()
    return {
        "sobel_x": sobel_x,
        "sobel_y": sobel_x.T.copy(),
        "laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
        "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
        "box_blur_5x5": np.full((5, 5), 1 / 25, np.float32),
        "gaussian_5x5": gauss.astype(np.float32),
    }


def _load_image(path: str | None, size: int):
    """RGB float32 image in [0, 1], longer side resized to ``size``."""
    import numpy as np

    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib
        raise _UsageError("jaxconv demo: needs Pillow (pip install pillow)") from None
    if size < 8:
        raise _UsageError(f"jaxconv demo: --size (={size}) must be at least 8")
    from importlib import resources

    bundled = resources.files("jaxconv") / "data" / "astronaut.png"
    name = "astronaut.png (bundled, public domain, NASA)" if path is None else path
    try:
        with bundled.open("rb") if path is None else open(path, "rb") as f:
            with Image.open(f) as opened:
                img = opened.convert("RGB")  # reads the pixels
    except OSError as err:
        why = err.strerror or str(err).split(":")[0]
        raise _UsageError(f"jaxconv demo: cannot read image {name!r}: {why}") from None
    scale = size / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)),
                          max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    return np.asarray(img, np.float32) / 255.0, name


def _save_grid(path, images, titles, suptitle, cmap="gray", cols=None):
    import math

    # A bare Figure, not pyplot: the demo must not switch matplotlib's global
    # backend (that would turn off inline plots in the caller's notebook).
    from matplotlib.figure import Figure

    cols = cols or min(len(images), 4)
    rows = math.ceil(len(images) / cols)
    fig = Figure(figsize=(3 * cols, 3 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img, cmap=None if img.ndim == 3 else cmap)
        ax.set_title(title, fontsize=9)
    fig.suptitle(suptitle)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.88, wspace=0.05,
                        hspace=0.2)
    fig.savefig(path, dpi=80)
    return path


def run_demo(*, image: str | None = None, out: str = "jaxconv-demo",
             size: int = 256) -> int:
    """Convolve a photo with classic kernels and a random stack; write PNGs.

    Args:
      image: path of a PNG/JPEG, or ``None`` for the bundled photo.
      out: output directory (created if missing).
      size: the longer side of the image is resized to at most this.

    Returns:
      The exit status (0; 1 if matplotlib is missing).

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as d:  # doctest: +SKIP
      ...     run_demo(out=d, size=64)
    """
    try:
        import matplotlib.figure  # noqa: F401 - checked here, used by _save_grid
    except ImportError:
        print('jaxconv demo: needs matplotlib; install it with '
              'pip install "jaxconv[examples]"', file=sys.stderr)
        return 1
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxconv

    from . import nn

    rgb, name = _load_image(image, size)
    os.makedirs(out, exist_ok=True)
    written = []
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    print(f"image: {name}, {rgb.shape[1]}x{rgb.shape[0]} pixels")

    written.append(_save_grid(os.path.join(out, "input.png"), [rgb, gray],
                              ["colour", "grayscale"], "input"))

    # Classic kernels: one conv per kernel size, all kernels as output channels.
    kernels = _kernels()
    x = jnp.asarray(gray)[..., None]  # (H, W, 1): no batch axis needed
    maps = {}
    for ksize in (3, 5):
        names = [k for k, v in kernels.items() if v.shape[0] == ksize]
        w = jnp.stack([kernels[k] for k in names], axis=-1)[:, :, None, :]
        y = jaxconv.conv(x, w, padding="SAME", padding_mode="reflect")
        maps.update({k: np.asarray(y[..., i]) for i, k in enumerate(names)})
    maps["edge_magnitude"] = np.hypot(maps["sobel_x"], maps["sobel_y"])
    order = ["sobel_x", "sobel_y", "edge_magnitude", "laplacian", "box_blur_5x5",
             "gaussian_5x5", "sharpen"]
    images = [np.clip(maps[k], 0, 1) if k in ("box_blur_5x5", "gaussian_5x5",
                                              "sharpen") else maps[k]
              for k in order]
    written.append(_save_grid(os.path.join(out, "kernels.png"), images,
                              order, "edge, blur and sharpen kernels (grayscale)"))

    # Colour: a depthwise blur (groups = 3) and a multi-channel edge kernel
    # that sums Sobel responses over R, G and B.
    xc = jnp.asarray(rgb)
    blur = jnp.tile(jnp.asarray(kernels["gaussian_5x5"])[:, :, None, None],
                    (1, 1, 1, 3))
    blurred = jaxconv.conv(xc, blur, padding="SAME", padding_mode="reflect",
                           groups=3)
    sx = jnp.tile(jnp.asarray(kernels["sobel_x"])[:, :, None, None], (1, 1, 3, 1))
    sy = jnp.tile(jnp.asarray(kernels["sobel_y"])[:, :, None, None], (1, 1, 3, 1))
    edges = jaxconv.conv(xc, jnp.concatenate([sx, sy], -1), padding="SAME",
                         padding_mode="reflect")
    magnitude = jnp.hypot(edges[..., 0], edges[..., 1])
    written.append(_save_grid(
        os.path.join(out, "colour.png"),
        [rgb, np.clip(np.asarray(blurred), 0, 1), np.asarray(magnitude)],
        ["colour", "depthwise Gaussian blur", "RGB Sobel magnitude"],
        "multi-channel kernels on the colour image"))

    # A small random conv stack: the activation maps of each conv layer.
    model = nn.Sequential([
        nn.Conv(8, (3, 3), padding="SAME"), nn.Relu(), nn.MaxPool((2, 2)),
        nn.Conv(8, (3, 3), padding="SAME"), nn.Relu(), nn.MaxPool((2, 2)),
        nn.Conv(8, (3, 3), padding="SAME"), nn.Relu(),
    ])
    params, _ = model.init(jax.random.key(0), x.shape)
    print(model.summary(x.shape))
    h, n_conv = x, 0
    for layer, p in zip(model.layers, params):
        h = layer.apply(p, h)
        if isinstance(layer, nn.Relu):
            n_conv += 1
            chans = [np.asarray(h[..., c]) for c in range(h.shape[-1])]
            written.append(_save_grid(
                os.path.join(out, f"stack_layer{n_conv}.png"), chans,
                [f"channel {c}" for c in range(len(chans))],
                f"random conv stack, layer {n_conv} (conv 3x3 + relu), "
                f"{h.shape[1]}x{h.shape[0]}", cmap="magma"))
    for path in written:
        print(f"wrote {path}")
    return 0


def _bench(argv: list[str]) -> int:
    try:
        from . import bench
    except ImportError as err:  # pragma: no cover - bench.py ships with jaxconv
        raise _UsageError(f"jaxconv bench: the benchmark suite is unavailable ({err})")
    try:
        return int(bench.main(list(argv)) or 0)
    except SystemExit as exit_:  # argparse inside the suite: --help, bad flags
        return exit_.code if isinstance(exit_.code, int) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxconv`` command.

    Args:
      argv: the arguments after the program name; ``None`` means
        ``sys.argv[1:]``.

    Returns:
      The exit status: 0 on success, 2 for bad input (after printing one line
      to stderr).

    Example:
      >>> main(["shapes", "conv 3x3 32", "--input", "28x28x1"])  # doctest: +ELLIPSIS
      layer ...
      Conv(32, 3x3, VALID)  (26, 26, 32)  320  389,376  3x3 (jump 1x1)
      ...
      0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        try:
            return _bench(argv[1:])
        except _UsageError as err:
            print(str(err), file=sys.stderr)
            return 2
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "shapes":
            return _shapes(args)
        return run_demo(image=args.image, out=args.out, size=args.size)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (_UsageError, ValueError, TypeError, OSError) as err:
        msg = " ".join(str(err).split())
        if not isinstance(err, _UsageError):
            msg = f"jaxconv {argv[0] if argv else ''}: {msg}"
        print(msg, file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
