"""Edge detection with jaxconv: Sobel and Laplacian on real photos.

* grayscale: scikit-image's ``camera`` picture (CC0) convolved with the Sobel x
  and y kernels and the Laplacian in one call (three output channels), edge
  magnitude ``hypot(gx, gy)``;
* colour: the bundled astronaut photo (public domain, NASA) with
  *multi-channel* kernels: a ``(3, 3, 3, 2)`` kernel whose two output channels
  sum the Sobel x / y responses over R, G and B, and a depthwise
  (``groups=3``) Laplacian that keeps the channels apart;
* the activation maps are plotted to ``example-output/edge_detection.png``.

    python examples/edge_detection.py
    JAXCONV_EXAMPLE_QUICK=1 python examples/edge_detection.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import QUICK, output_dir, subplots  # noqa: E402

import jaxconv  # noqa: E402

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
SOBEL_Y = SOBEL_X.T.copy()
LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)


def load_images(size: int):
    """A grayscale ``(H, W)`` and a colour ``(H, W, 3)`` image in [0, 1]."""
    from importlib import resources

    from PIL import Image

    try:  # scikit-image's camera (CC0), if installed
        from skimage import data

        gray = Image.fromarray(data.camera())
    except ImportError:
        gray = None
    with (resources.files("jaxconv") / "data" / "astronaut.png").open("rb") as f:
        colour = Image.open(f).convert("RGB")
    if gray is None:
        gray = colour.convert("L")
    gray = gray.resize((size, size), Image.LANCZOS)
    colour = colour.resize((size, size), Image.LANCZOS)
    return (np.asarray(gray, np.float32) / 255, np.asarray(colour, np.float32) / 255)


def main() -> None:
    size = 64 if QUICK else 256
    gray, colour = load_images(size)

    # Grayscale: three kernels as the three output channels of one conv.
    # Kernel layout (kh, kw, C_in, C_out); reflect padding keeps borders clean.
    w = jnp.stack([SOBEL_X, SOBEL_Y, LAPLACIAN], axis=-1)[:, :, None, :]
    maps = jaxconv.conv(gray[..., None], w, padding="SAME", padding_mode="reflect")
    gx, gy, lap = (np.asarray(maps[..., i]) for i in range(3))
    magnitude = np.hypot(gx, gy)
    print(f"grayscale {gray.shape}: kernel {w.shape} -> maps {maps.shape}")

    # Colour, multi-channel: every output channel sums over R, G and B.
    w_rgb = jnp.stack([np.stack([SOBEL_X] * 3, -1), np.stack([SOBEL_Y] * 3, -1)], -1)
    rgb_edges = jaxconv.conv(colour, w_rgb, padding="SAME", padding_mode="reflect")
    rgb_magnitude = np.asarray(jnp.hypot(rgb_edges[..., 0], rgb_edges[..., 1]))
    print(f"colour {colour.shape}: kernel {w_rgb.shape} -> maps {rgb_edges.shape}")

    # Colour, depthwise: groups=3 keeps channels apart, kernel (3, 3, 1, 3).
    w_dw = jnp.tile(jnp.asarray(LAPLACIAN)[:, :, None, None], (1, 1, 1, 3))
    lap_rgb = jaxconv.conv(colour, w_dw, padding="SAME", padding_mode="reflect",
                           groups=3)
    print(f"depthwise: kernel {w_dw.shape} -> maps {lap_rgb.shape}")

    # The Sobel filter is separable: a 3x1 smoothing then a 1x3 derivative.
    col = jaxconv.conv(gray[..., None], jnp.asarray([1.0, 2, 1]).reshape(3, 1, 1, 1),
                       padding="SAME", padding_mode="reflect")
    gx_sep = jaxconv.conv(col, jnp.asarray([-1.0, 0, 1]).reshape(1, 3, 1, 1),
                          padding="SAME", padding_mode="reflect")[..., 0]
    print(f"separable Sobel x equals the 3x3 kernel: max |diff| = "
          f"{float(jnp.max(jnp.abs(gx_sep - gx))):.2e}")

    panels = [
        (gray, "grayscale input", "gray"), (gx, "Sobel x", "RdBu"),
        (gy, "Sobel y", "RdBu"), (magnitude, "edge magnitude", "magma"),
        (lap, "Laplacian", "RdBu"),
        (colour, "colour input", None), (rgb_magnitude, "RGB Sobel magnitude", "magma"),
        (np.clip(np.abs(np.asarray(lap_rgb)) * 4, 0, 1), "depthwise Laplacian |RGB|",
         None),
    ]
    fig, axes = subplots(2, 4, figsize=(13, 7))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, title, cmap) in zip(axes.flat, panels):
        if cmap == "RdBu":  # signed responses: white at 0, symmetric range
            v = 0.5 * float(np.max(np.abs(img)))
            ax.imshow(img, cmap=cmap, vmin=-v, vmax=v)
        else:
            ax.imshow(img, cmap=cmap)
        ax.set_title(title)
    fig.suptitle("jaxconv.conv: edge detection with Sobel and Laplacian kernels")
    path = os.path.join(output_dir(), "edge_detection.png")
    fig.savefig(path, dpi=72)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
