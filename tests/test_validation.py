"""Argument validation: every public op names the bad argument, also under jit.

STYLE: static checks raise ``ValueError``/``TypeError`` (never ``assert``)
with a message naming the argument in backticks with its value.  Each case
below is one error message of one public function; every case with array
arguments is also run under ``jax.jit`` (shapes and static arguments are
resolved while tracing, so the same error must surface from the jitted call).
"""

from __future__ import annotations

import ast
import pathlib

import jax
import jax.numpy as jnp
import pytest

import jaxconv as jc
from jaxconv import lax as jl
from jaxconv import shapes

X = jnp.ones((1, 8, 8, 4))         # channels_last 2-D input
W = jnp.ones((3, 3, 4, 6))         # (*K, C_in, C_out)
WT = jnp.ones((3, 3, 4, 6))        # conv_transpose kernel (*K, C_in, C_out)
SMALL = jnp.ones((1, 3, 3, 4))
V, E = ValueError, TypeError

# id: (function, array args, keyword args, exception, regex on the message)
CASES = {
    # --- conv -------------------------------------------------------------
    "conv/x_rank": (jc.conv, (jnp.ones((8, 4)), W), {}, V,
                    r"`x` \(shape \(8, 4\)\) must have at least 3 axes"),
    "conv/w_rank": (jc.conv, (X, jnp.ones((3,))), {}, V,
                    r"`w` \(shape \(3,\)\) must have at least 3 axes"),
    "conv/channel_mismatch": (jc.conv, (X, jnp.ones((3, 3, 3, 6))), {}, V,
                              r"input channels \(=4\).*`groups` \(=1\).*\(=3"),
    "conv/groups_cin": (jc.conv, (X, W), dict(groups=3), V,
                        r"`groups` \(=3\) must divide the input channels \(=4\)"),
    "conv/groups_cout": (jc.conv, (X, jnp.ones((3, 3, 2, 5))), dict(groups=2), V,
                         r"`groups` \(=2\) must divide the output channels \(=5"),
    "conv/groups_zero": (jc.conv, (X, W), dict(groups=0), V,
                         r"`groups` \(=0\) must be a positive integer"),
    "conv/stride_zero": (jc.conv, (X, W), dict(stride=0), V,
                         r"`stride` \(=0\) must be a positive integer"),
    "conv/stride_negative": (jc.conv, (X, W), dict(stride=(1, -1)), V, r"`stride`"),
    "conv/stride_length": (jc.conv, (X, W), dict(stride=(1, 1, 1)), V,
                           r"`stride` \(=\(1, 1, 1\)\) must be .*sequence of 2"),
    "conv/stride_float": (jc.conv, (X, W), dict(stride=1.5), E,
                          r"`stride` \(=1.5\) must be an integer"),
    "conv/dilation_zero": (jc.conv, (X, W), dict(dilation=0), V,
                           r"`dilation` \(=0\) must be a positive integer"),
    "conv/dilation_negative": (jc.conv, (X, W), dict(dilation=(1, -2)), V,
                               r"`dilation`"),
    "conv/padding_unknown": (jc.conv, (X, W), dict(padding="foo"), V,
                             r"`padding` \(='foo'\) must be one of"),
    "conv/padding_length": (jc.conv, (X, W), dict(padding=[(1, 1)] * 3), V,
                            r"`padding` .* one entry per axis \(=2\), got 3"),
    "conv/padding_negative_int": (jc.conv, (X, W), dict(padding=-1), V,
                                  r"`padding` \(=-1\) must be a non-negative"),
    "conv/padding_bad_pair": (jc.conv, (X, W), dict(padding=[(1, 2, 3), (1, 1)]), V,
                              r"`padding` .* entries must be integers or \(lo, hi\)"),
    "conv/mode_unknown": (jc.conv, (X, W), dict(padding=1, padding_mode="foo"), V,
                          r"`padding_mode` \(='foo'\) must be one of"),
    "conv/mode_length": (jc.conv, (X, W), dict(padding=1, padding_mode=["zeros"] * 3),
                         V, r"`padding_mode` .* sequence of 2"),
    "conv/reflect_too_wide": (jc.conv, (SMALL, W), dict(padding=3,
                                                        padding_mode="reflect"), V,
                              r"`padding` \(=\(3, 3\)\).*smaller than the axis size "
                              r"\(=3\).*'reflect'"),
    "conv/circular_too_wide": (jc.conv, (SMALL, W), dict(padding=5,
                                                         padding_mode="circular"), V,
                               r"`padding` \(=\(5, 5\)\).*'circular'"),
    "conv/algorithm": (jc.conv, (X, W), dict(algorithm="fast"), V,
                       r"`algorithm` \(='fast'\) must be one of"),
    "conv/data_format": (jc.conv, (X, W), dict(data_format="NHWC"), V,
                         r"`data_format` \(='NHWC'\) must be"),
    "conv/empty_output": (jc.conv, (jnp.ones((1, 2, 2, 4)), W), {}, V,
                          r"output would be empty"),
    "conv/empty_after_crop": (jc.conv, (jnp.ones((1, 4, 4, 4)), W),
                              dict(padding=[(-1, -1), (0, 0)]), V,
                              r"output would be empty"),
    "conv/preferred_element_type": (jc.conv, (X, W),
                                    dict(preferred_element_type=jnp.int32), E,
                                    r"`preferred_element_type`"),
    "conv1d/rank": (jc.conv1d, (X, W), {}, V, r"`w` .* must have 3 axes for conv1d"),
    "conv2d/rank": (jc.conv2d, (jnp.ones((1, 8, 4)), jnp.ones((3, 4, 6))), {}, V,
                    r"`w` .* must have 4 axes for conv2d"),
    "conv3d/rank": (jc.conv3d, (X, W), {}, V, r"`w` .* must have 5 axes for conv3d"),
    # --- conv_transpose ----------------------------------------------------
    "conv_transpose/output_padding_too_large": (
        jc.conv_transpose, (X, WT), dict(stride=2, output_padding=2), V,
        r"`output_padding` \(=2\) must satisfy 0 <= output_padding < "
        r"max\(stride, dilation\)"),
    "conv_transpose/output_shape_unreachable": (
        jc.conv_transpose, (X, WT), dict(stride=2, output_shape=(30, 30)), V,
        r"`output_shape` \(=\(30, 30\)\).*unreachable"),
    "conv_transpose/output_shape_length": (
        jc.conv_transpose, (X, WT), dict(stride=2, output_shape=(16,)), V,
        r"`output_shape` \(=\(16,\)\)"),
    "conv_transpose/output_shape_and_padding": (
        jc.conv_transpose, (X, WT), dict(stride=2, output_shape=(16, 16),
                                         output_padding=1), V,
        r"`output_padding` \(=1\) must be 0 when `output_shape`"),
    "conv_transpose/channel_mismatch": (
        jc.conv_transpose, (X, jnp.ones((3, 3, 3, 6))), dict(stride=2), V,
        r"`w` \(shape \(3, 3, 3, 6\)\) has 3 input channels.*4"),
    "conv_transpose/groups": (jc.conv_transpose, (X, WT), dict(groups=3), V,
                              r"`groups` \(=3\) must divide the input channels"),
    "conv_transpose/padding_string": (jc.conv_transpose, (X, WT), dict(padding="FULL"),
                                      V, r"`padding` \(='FULL'\) must be one of"),
    "conv_transpose/padding_negative": (jc.conv_transpose, (X, WT), dict(padding=-1),
                                        V, r"`padding` \(=-1\)"),
    "conv_transpose/stride_zero": (jc.conv_transpose, (X, WT), dict(stride=0), V,
                                   r"`stride` \(=0\) must be a positive integer"),
    "conv_transpose/empty_output": (
        jc.conv_transpose, (jnp.ones((1, 1, 1, 4)), jnp.ones((1, 1, 4, 6))),
        dict(padding=1), V, r"empty output"),
    # --- depthwise / separable ---------------------------------------------
    "depthwise_conv/kernel": (jc.depthwise_conv, (X, jnp.ones((3, 3, 1, 6))), {}, V,
                              r"`w` \(shape \(3, 3, 1, 6\)\) must be a depthwise"),
    "depthwise_conv/rank": (jc.depthwise_conv, (X, jnp.ones((3, 3, 6))), {}, V,
                            r"`w` \(shape \(3, 3, 6\)\)"),
    "separable_conv/pointwise_channels": (
        jc.separable_conv, (X, jnp.ones((3, 3, 1, 4)), jnp.ones((1, 1, 5, 6))), {}, V,
        r"`w_pointwise` \(shape \(1, 1, 5, 6\)\) expects 5 input channels"),
    "separable_conv/pointwise_not_1x1": (
        jc.separable_conv, (X, jnp.ones((3, 3, 1, 4)), jnp.ones((3, 3, 4, 6))), {}, V,
        r"`w_pointwise` .* must be a 1x1 kernel"),
    # --- pooling ------------------------------------------------------------
    "max_pool/window_zero": (jc.max_pool, (X, 0), {}, V,
                             r"`window_shape` \(=0\) must be a positive integer"),
    "max_pool/window_negative": (jc.max_pool, (X, (2, -1)), {}, V, r"`window_shape`"),
    "max_pool/rank": (jc.max_pool, (jnp.ones((8,)), (2, 2)), {}, V,
                      r"shape \(8,\)\) must have at least 3 axes"),
    "max_pool/stride_zero": (jc.max_pool, (X, 2), dict(stride=0), V,
                             r"`stride` \(=0\) must be a positive integer"),
    "max_pool/padding_unknown": (jc.max_pool, (X, 2), dict(padding="foo"), V,
                                 r"`padding` \(='foo'\) must be one of"),
    "max_pool/padding_length": (jc.max_pool, (X, 2), dict(padding=[(0, 0)] * 3), V,
                                r"`padding`"),
    "max_pool/data_format": (jc.max_pool, (X, 2), dict(data_format="foo"), V,
                             r"`data_format` \(='foo'\) must be"),
    "max_pool/empty_output": (jc.max_pool, (X, 9), {}, V, r"output would be empty"),
    "avg_pool/dilation_zero": (jc.avg_pool, (X, 2), dict(dilation=0), V,
                               r"`dilation` \(=0\) must be a positive integer"),
    "avg_pool/empty_output": (jc.avg_pool, (X, (2, 9)), {}, V, r"empty"),
    "min_pool/window_zero": (jc.min_pool, (X, 0), {}, V, r"`window_shape` \(=0\)"),
    "sum_pool/stride_zero": (jc.sum_pool, (X, 2), dict(stride=0), V, r"`stride`"),
    "lp_pool/p_zero": (jc.lp_pool, (X, 0, 2), {}, V, r"`p` \(=0(\.0)?\) must be"),
    "adaptive_avg_pool/size_zero": (jc.adaptive_avg_pool, (X, 0), {}, V,
                                    r"`output_size`"),
    "adaptive_max_pool/length": (jc.adaptive_max_pool, (X, (2, 2, 2, 2)), {}, V,
                                 r"must have at least 5 axes"),
    # --- unfold / fold / pad -------------------------------------------------
    "unfold/kernel_zero": (jc.unfold, (X, 0), {}, V,
                           r"`kernel_size` \(=0\) must be a positive integer"),
    "unfold/empty_output": (jc.unfold, (X, 9), {}, V, r"output would be empty"),
    "fold/bad_cols": (jc.fold, (jnp.ones((1, 36, 5)), (8, 8), 3),
                      dict(data_format="channels_first"), V,
                      r"`cols` \(shape \(1, 36, 5\)\) must have shape"),
    "pad/mode_unknown": (jc.pad, (X, 1), dict(mode="foo"), V,
                         r"`mode` \(='foo'\) must be one of"),
    "pad/reflect_too_wide": (jc.pad, (SMALL, 3), dict(mode="reflect"), V,
                             r"must be smaller than the axis size"),
    # --- correlate / convolve / match_template -------------------------------
    "correlate/rank": (jc.correlate, (jnp.ones((4, 4)), jnp.ones((3,))), {}, V,
                       r"`in1` \(shape \(4, 4\)\) and `in2` \(shape \(3,\)\)"),
    "correlate/mode": (jc.correlate, (jnp.ones(4), jnp.ones(3)), dict(mode="foo"), V,
                       r"`mode` \(='foo'\) must be one of"),
    "correlate/boundary": (jc.correlate, (jnp.ones(4), jnp.ones(3)),
                           dict(boundary="foo"), V,
                           r"`boundary` \(='foo'\) must be one of"),
    "correlate/method": (jc.correlate, (jnp.ones(4), jnp.ones(3)), dict(method="foo"),
                         V, r"`method` \(='foo'\) must be one of"),
    "correlate/valid_neither_larger": (
        jc.correlate, (jnp.ones((4, 2)), jnp.ones((3, 3))), dict(mode="valid"), V,
        r"`mode` \(='valid'\)"),
    "convolve/mode": (jc.convolve, (jnp.ones(4), jnp.ones(3)), dict(mode="foo"), V,
                      r"`mode` \(='foo'\) must be one of"),
    "match_template/larger_template": (jc.match_template,
                                       (jnp.ones((4, 4)), jnp.ones((5, 5))), {}, V,
                                       r"`template` \(shape \(5, 5\)\) must not be "
                                       r"larger"),
    "match_template/rank": (jc.match_template, (jnp.ones((4, 4)), jnp.ones((2,))), {},
                            V, r"`template` \(shape \(2,\)\) must have as many"),
    "match_template/mode": (jc.match_template, (jnp.ones((8, 8)), jnp.ones((2, 2))),
                            dict(pad_input=True, mode="foo"), V, r"`mode` \(='foo'\)"),
    # --- jaxconv.lax (types mirror jax.lax; see tests/test_lax.py) -----------
    "lax.conv_general_dilated/algorithm": (
        jl.conv_general_dilated, (jnp.ones((1, 1, 4)), jnp.ones((1, 1, 2)), (1,),
                                  "VALID"), dict(algorithm="fast"), V,
        r"`algorithm` \(='fast'\) must be one of"),
    "lax.conv/zero_stride": (
        jl.conv, (jnp.ones((1, 1, 4)), jnp.ones((1, 1, 2)), (0,), "VALID"), {}, V,
        r"`window_strides` \(=\(0,\)\)"),
    "lax.conv_general_dilated/groups": (
        jl.conv_general_dilated, (jnp.ones((1, 4, 5)), jnp.ones((3, 2, 2)), (1,),
                                  "VALID"), dict(feature_group_count=3), V,
        r"`feature_group_count` \(=3\) must divide"),
}

# shapes functions take no arrays (nothing to jit).
SHAPE_CASES = {
    "conv_output_size/empty": (shapes.conv_output_size, (2, 5), {}, V,
                               r"`k` \(=5\).*empty output"),
    "conv_output_size/stride_zero": (shapes.conv_output_size, (5, 2), dict(stride=0),
                                     V, r"`stride` \(=0\) must be a positive"),
    "resolve_padding/unknown": (shapes.resolve_padding, ("foo", (5,), (3,)), {}, V,
                                r"`padding` \(='foo'\) must be one of"),
    "conv_transpose_output_size/output_padding": (
        shapes.conv_transpose_output_size, (5, 3), dict(stride=2, output_padding=2), V,
        r"`output_padding` \(=2\) must satisfy"),
    "pool_output_size/empty": (shapes.pool_output_size, (2, 5), {}, V,
                               r"`window` \(=5\).*empty output"),
}

# Arguments that are Python values (sizes, windows, modes) stay static under jit.
_ARRAY_ARGS = {jc.max_pool: 1, jc.avg_pool: 1, jc.min_pool: 1, jc.sum_pool: 1,
               jc.lp_pool: 1, jc.adaptive_avg_pool: 1, jc.adaptive_max_pool: 1,
               jc.unfold: 1, jc.fold: 1, jc.pad: 1, jl.conv_general_dilated: 2,
               jl.conv: 2}


@pytest.mark.parametrize("case", list(CASES))
def test_error_message(case):
    fn, args, kwargs, exc, match = CASES[case]
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("case", list(CASES))
def test_error_message_under_jit(case):
    fn, args, kwargs, exc, match = CASES[case]
    n = _ARRAY_ARGS.get(fn, len(args))
    arrays, static = args[:n], args[n:]
    jitted = jax.jit(lambda *a: fn(*a, *static, **kwargs))
    with pytest.raises(exc, match=match):
        jitted(*arrays)


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_shapes_error_message(case):
    fn, args, kwargs, exc, match = SHAPE_CASES[case]
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def _argument_asserts() -> list[str]:
    """``assert`` statements in the library (argument checks must raise)."""
    root = pathlib.Path(jc.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found += [f"{path.relative_to(root.parent)}:{node.lineno}"
                  for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    return found


def test_no_assert_statements_in_library():
    """``python -O`` strips asserts, so they cannot guard arguments."""
    assert _argument_asserts() == []


@pytest.mark.parametrize("kw, name", [(dict(ceil_mode="x"), "ceil_mode"),
                                      (dict(count_include_pad="yes"),
                                       "count_include_pad")])
def test_pool_flags_must_be_booleans(kw, name):
    x = jnp.ones((1, 8, 8, 3), jnp.float32)
    with pytest.raises(TypeError, match=f"`{name}` .* must be True or False"):
        jc.avg_pool(x, (3, 3), stride=2, **kw)
