"""Stacked 3x3 convolutions vs one big kernel, and the 1x1 trick.

Everything here comes from ``jaxconv.shapes`` (nothing is run): two stacked
3x3 convs see a 5x5 window and three see 7x7 (``receptive_field``), yet with
C channels they cost ``2 * 9 C^2`` and ``3 * 9 C^2`` weights against
``25 C^2`` and ``49 C^2`` (``conv_params``), with the FLOPs in the same ratio
(``conv_flops``) and a non-linearity between every pair.  A 1x1 conv changes
the channel count at ``C_in * C_out`` weights: the ResNet bottleneck
(1x1 down, 3x3, 1x1 up) costs a fraction of a 3x3 on all channels.  A bar
chart is saved to ``example-output/kernel_sizes.png``.

    python examples/kernel_sizes.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import QUICK, output_dir, subplots  # noqa: E402

from jaxconv import nn, shapes  # noqa: E402

H = W = 56
C = 64


def stack(kernel: int, depth: int, channels: int = C):
    """``depth`` SAME convs of size ``kernel``: (RF, params, FLOPs)."""
    rf = shapes.receptive_field([(kernel, 1, 1)] * depth)[-1].size
    params = depth * shapes.conv_params((kernel, kernel), channels, channels)
    flops = depth * shapes.conv_flops((H, W), (kernel, kernel), channels, channels,
                                      padding="SAME")
    return rf, params, flops


def main() -> None:
    rows = [
        ("1 x 3x3", *stack(3, 1)),
        ("2 x 3x3", *stack(3, 2)),
        ("1 x 5x5", *stack(5, 1)),
        ("3 x 3x3", *stack(3, 3)),
        ("1 x 7x7", *stack(7, 1)),
    ]
    print(f"{C} -> {C} channels on a {H}x{W} map, SAME padding, with bias\n")
    print(f"{'layers':<10}{'receptive field':>16}{'weights':>12}{'MFLOPs':>10}")
    for name, rf, params, flops in rows:
        print(f"{name:<10}{rf:>14}px{params:>12,}{flops / 1e6:>10.1f}")
    print("\nsame receptive field, fewer weights and FLOPs: 2 x 3x3 uses "
          f"{rows[1][2] / rows[2][2]:.0%} of a 5x5's weights, 3 x 3x3 "
          f"{rows[3][2] / rows[4][2]:.0%} of a 7x7's")

    # The 1x1 trick: change channel counts cheaply (ResNet bottleneck).
    wide = 256
    plain = nn.Sequential([nn.Conv(wide, (3, 3), padding="SAME")])
    bottleneck = nn.Sequential([
        nn.Conv(C, (1, 1)), nn.Relu(),
        nn.Conv(C, (3, 3), padding="SAME"), nn.Relu(),
        nn.Conv(wide, (1, 1)),
    ])
    s_plain = plain.summary((H, W, wide))
    s_bottle = bottleneck.summary((H, W, wide))
    print(f"\n3x3 conv on {wide} channels:")
    print(s_plain)
    print(f"\nbottleneck 1x1 ({wide}->{C}), 3x3 ({C}->{C}), 1x1 ({C}->{wide}):")
    print(s_bottle)
    print(f"\nthe bottleneck needs {s_bottle.total_params / s_plain.total_params:.0%} "
          f"of the weights and {s_bottle.total_flops / s_plain.total_flops:.0%} of "
          f"the FLOPs, with two more non-linearities")

    fig, axes = subplots(1, 3, figsize=(13, 4))
    names = [r[0] for r in rows]
    for ax, col, title in zip(axes, (1, 2, 3),
                              ("receptive field (px)", "weights", "MFLOPs")):
        values = [r[col] / (1e6 if col == 3 else 1) for r in rows]
        ax.bar(names, values, color=["C0", "C0", "C1", "C0", "C1"])
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"stacked 3x3 vs one big kernel ({C}->{C} channels, {H}x{W})")
    fig.tight_layout()
    path = os.path.join(output_dir(), "kernel_sizes.png")
    fig.savefig(path, dpi=72 if QUICK else 100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
