"""Bad layer configurations fail at ``init`` (or construction) with a clear error.

Issue 6, item 1 for ``jaxconv.nn``: every layer checks its static fields
before tracing and raises ``ValueError``/``TypeError`` naming the field, its
value and what was expected — at ``init``/``summary`` time, not at the first
``apply``; ``Sequential`` adds which layer failed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxconv import nn

KEY = jax.random.key(0)
IMG = (8, 8, 3)

# (id, thunk, exception type, regex the message must match)
BAD_LAYERS = [
    ("pool-ceil-mode-string", lambda: nn.MaxPool(2, ceil_mode="x").init(KEY, IMG),
     TypeError, r"`ceil_mode` \(='x'\) must be True or False"),
    ("avgpool-count-include-pad-string",
     lambda: nn.AvgPool(2, count_include_pad="yes").init(KEY, IMG), TypeError,
     r"`count_include_pad` \(='yes'\) must be True or False"),
    ("conv-use-bias-string", lambda: nn.Conv(4, 3, use_bias="no").init(KEY, IMG),
     TypeError, r"`use_bias` \(='no'\) must be True or False"),
    ("conv-kernel-init-not-callable",
     lambda: nn.Conv(4, 3, kernel_init=5).init(KEY, IMG), TypeError,
     r"`kernel_init` \(=5\) must be a callable"),
    ("dropout-rate-string", lambda: nn.Dropout("0.5").init(KEY, IMG), TypeError,
     r"`rate` \(='0.5'\) must be a number"),
    ("conv-after-flatten", lambda: nn.Sequential([nn.Flatten(), nn.Conv(3, 3)]).init(
        KEY, IMG), ValueError, r"`kernel_size` \(=3\) needs spatial axes, but "
     r"`input_shape` \(=\(192,\)\) has none"),
    ("conv-transpose-after-flatten", lambda: nn.ConvTranspose(3, 2).init(KEY, (5,)),
     ValueError, r"`kernel_size` \(=2\) needs spatial axes"),
    ("depthwise-after-flatten", lambda: nn.DepthwiseConv(3).init(KEY, (5,)),
     ValueError, r"`kernel_size` \(=3\) needs spatial axes"),
    ("conv-features-0", lambda: nn.Conv(0, 3).init(KEY, IMG), ValueError,
     r"`features` \(=0\) must be a positive integer"),
    ("conv-features-float", lambda: nn.Conv(2.5, 3).init(KEY, IMG), TypeError,
     r"`features` \(=2.5\) must be an integer"),
    ("conv-kernel-0", lambda: nn.Conv(4, 0).init(KEY, IMG), ValueError,
     r"`kernel_size` \(=0\) must be a positive integer"),
    ("conv-kernel-negative-entry", lambda: nn.Conv(4, (3, -1)).init(KEY, IMG),
     ValueError, r"`kernel_size` \(=\(3, -1\)\) must contain only positive"),
    ("conv-kernel-rank", lambda: nn.Conv(4, (3, 3, 3)).init(KEY, IMG), ValueError,
     r"`input_shape` \(=\(8, 8, 3\)\) must have 3 spatial axes"),
    ("conv-stride-0", lambda: nn.Conv(4, 3, stride=0).init(KEY, IMG), ValueError,
     r"`stride` \(=0\) must be a positive integer"),
    ("conv-dilation-negative", lambda: nn.Conv(4, 3, dilation=-1).init(KEY, IMG),
     ValueError, r"`dilation` \(=-1\) must be a positive integer"),
    ("conv-groups-input", lambda: nn.Conv(4, 3, groups=2).init(KEY, IMG),
     ValueError, r"`groups` \(=2\) must divide `in_channels` \(=3\)"),
    ("conv-groups-features", lambda: nn.Conv(3, 3, groups=2).init(KEY, (8, 8, 4)),
     ValueError, r"`groups` \(=2\) must divide `out_channels` \(=3\)"),
    ("conv-groups-0", lambda: nn.Conv(4, 3, groups=0).init(KEY, IMG), ValueError,
     r"`groups` \(=0\) must be a positive integer"),
    ("conv-padding-string", lambda: nn.Conv(4, 3, padding="SAMEE").init(KEY, IMG),
     ValueError, r"`padding` \(='SAMEE'\) must be one of"),
    ("conv-padding-length", lambda: nn.Conv(4, 3, padding=[(1, 1)]).init(KEY, IMG),
     ValueError, r"`padding` \(=\[\(1, 1\)\]\) must have one entry per axis \(=2\)"),
    ("conv-padding-mode", lambda: nn.Conv(4, 3, padding=1, padding_mode="mirror")
     .init(KEY, IMG), ValueError, r"`padding_mode` \(='mirror'\) must be one of"),
    ("conv-data-format", lambda: nn.Conv(4, 3, data_format="NHWC").init(KEY, IMG),
     ValueError, r"`data_format` \(='NHWC'\) must be \"channels_last\""),
    ("conv-algorithm", lambda: nn.Conv(4, 3, algorithm="fast").init(KEY, IMG),
     ValueError, r"`algorithm` \(='fast'\) must be one of 'auto'"),
    ("conv-kernel-larger-than-input", lambda: nn.Conv(4, 5).init(KEY, (3, 3, 3)),
     ValueError, r"spans 5 cells, more than the padded input \(=3"),
    ("conv-input-negative", lambda: nn.Conv(4, 3).init(KEY, (8, -8, 3)),
     ValueError, r"`input_shape` \(=\(8, -8, 3\)\) must contain only positive"),
    ("conv-input-string", lambda: nn.Conv(4, 3).init(KEY, "8x8x3"), TypeError,
     r"`input_shape` \(='8x8x3'\) must be a sequence of integers"),
    ("depthwise-multiplier-0", lambda: nn.DepthwiseConv(3, channel_multiplier=0)
     .init(KEY, IMG), ValueError, r"`channel_multiplier` \(=0\) must be a positive"),
    ("depthwise-kernel-0", lambda: nn.DepthwiseConv(0).init(KEY, IMG), ValueError,
     r"`kernel_size` \(=0\) must be a positive integer"),
    ("depthwise-algorithm", lambda: nn.DepthwiseConv(3, algorithm="cudnn")
     .init(KEY, IMG), ValueError, r"`algorithm` \(='cudnn'\) must be one of"),
    ("transpose-features-0", lambda: nn.ConvTranspose(0, 3).init(KEY, IMG),
     ValueError, r"`features` \(=0\) must be a positive integer"),
    ("transpose-stride-0", lambda: nn.ConvTranspose(4, 3, stride=0).init(KEY, IMG),
     ValueError, r"`stride` \(=0\) must be a positive integer"),
    ("transpose-output-padding", lambda: nn.ConvTranspose(
        4, 3, stride=2, output_padding=2).init(KEY, IMG), ValueError,
     r"`output_padding` \(=2\) must satisfy 0 <= output_padding < "
     r"max\(stride, dilation\) \(=2\)"),
    ("transpose-padding", lambda: nn.ConvTranspose(4, 3, padding="FULL")
     .init(KEY, IMG), ValueError, r"`padding` \(='FULL'\) must be one of \"VALID\""),
    ("transpose-output-shape-length", lambda: nn.ConvTranspose(
        4, 3, stride=2, output_shape=(16,)).init(KEY, IMG), ValueError,
     r"`output_shape` \(=\(16,\)\) must have 2 entries"),
    ("transpose-output-shape-unreachable", lambda: nn.ConvTranspose(
        4, 3, stride=2, output_shape=(40, 40)).init(KEY, IMG), ValueError,
     r"`output_shape` \(=\(40, 40\)\) on spatial axis 0: `target` \(=40\) is "
     r"unreachable"),
    ("transpose-algorithm", lambda: nn.ConvTranspose(4, 3, algorithm="x")
     .init(KEY, IMG), ValueError, r"`algorithm` \(='x'\) must be one of"),
    ("maxpool-window-0", lambda: nn.MaxPool(0).init(KEY, IMG), ValueError,
     r"`window_shape` \(=\(0, 0\)\) must contain only positive integers"),
    ("maxpool-stride-0", lambda: nn.MaxPool(2, stride=0).init(KEY, IMG), ValueError,
     r"`stride` \(=\(0, 0\)\) must contain only positive integers"),
    ("maxpool-window-too-big", lambda: nn.MaxPool(9).init(KEY, IMG), ValueError,
     r"`window` \(=9\) with `dilation` \(=1\) spans 9 cells"),
    ("avgpool-padding", lambda: nn.AvgPool(2, padding="X").init(KEY, IMG),
     ValueError, r"`padding` \(='X'\) must be one of"),
    ("avgpool-window-rank", lambda: nn.AvgPool((2, 2, 2)).init(KEY, IMG),
     ValueError, r"`input_shape` \(=\(8, 8, 3\)\) must have 3 spatial axes"),
    ("global-pool-rank", lambda: nn.GlobalAvgPool().init(KEY, (3,)), ValueError,
     r"`input_shape` \(=\(3,\)\) needs a spatial and a channel axis"),
    ("dense-features-0", lambda: nn.Dense(0).init(KEY, (8,)), ValueError,
     r"`features` \(=0\) must be a positive integer"),
    ("dense-not-a-vector", lambda: nn.Dense(4).init(KEY, (8, 8)), ValueError,
     r"`input_shape` \(=\(8, 8\)\) of Dense must be a vector"),
    ("dropout-rate-1", lambda: nn.Dropout(1.0), ValueError,
     r"`rate` \(=1.0\) must be in \[0, 1\)"),
    ("dropout-rate-negative", lambda: nn.Dropout(-0.1), ValueError,
     r"`rate` \(=-0.1\) must be in \[0, 1\)"),
    ("leaky-relu-slope", lambda: nn.LeakyRelu(negative_slope="a"), TypeError,
     r"`negative_slope` \(='a'\) must be a real number"),
    ("sequential-item", lambda: nn.Sequential([nn.Conv(4, 3), "relu"]), TypeError,
     r"`layers\[1\]` \(='relu'\) is not a jaxconv.nn layer"),
    ("sequential-not-a-list", lambda: nn.Sequential(nn.Conv(4, 3)), TypeError,
     r"`layers` \(=Conv\(.*\)\) must be a sequence of jaxconv.nn layers"),
    ("sequential-names-the-layer", lambda: nn.Sequential(
        [nn.Conv(4, 3), nn.Relu(), nn.MaxPool(16)]).init(KEY, IMG), ValueError,
     r"layer 2 \(.*\) on input \(6, 6, 4\): `window_shape`"),
]


@pytest.mark.parametrize("thunk, exc, match", [c[1:] for c in BAD_LAYERS],
                         ids=[c[0] for c in BAD_LAYERS])
def test_bad_layer_raises_clear_error(thunk, exc, match):
    with pytest.raises(exc, match=match):
        thunk()


def test_summary_reports_the_same_error_as_init():
    model = nn.Sequential([nn.Conv(4, 3, stride=0)])
    with pytest.raises(ValueError, match=r"layer 0 .*`stride` \(=0\)"):
        model.summary(IMG)


@pytest.mark.parametrize("jit", [False, True])
def test_apply_with_wrong_channels_raises_before_tracing(jit):
    layer = nn.Conv(4, 3)
    params, _ = layer.init(KEY, IMG)
    apply = jax.jit(layer.apply) if jit else layer.apply
    with pytest.raises(ValueError, match=r"input channels \(=5\)"):
        apply(params, jnp.ones((8, 8, 5)))


def test_valid_layers_still_build():
    # The checks must not reject what the docs promise works.
    for layer in [nn.Conv(4, 3, padding=1, padding_mode="wrap"),
                  nn.Conv(4, 3, algorithm="direct"),
                  nn.DepthwiseConv(3, padding="SAME",
                                   padding_mode=["reflect", "zeros"]),
                  nn.ConvTranspose(4, 3, stride=2, padding=1, output_shape=(16, 16)),
                  nn.LeakyRelu(0), nn.Sequential((nn.Conv(4, 3), nn.Relu()))]:
        _, shape = layer.init(KEY, IMG)
        assert all(isinstance(n, int) and n > 0 for n in shape)
