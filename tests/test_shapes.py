"""jaxconv.shapes against jax.eval_shape of the lax oracles, brute force and torch."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxconv import shapes
from jaxconv._args import check_data_format, ntuple, positive_tuple
from jaxconv.shapes import ReceptiveField

# ---------------------------------------------------------------- oracles


def lax_conv_shape(in_shape, kernel, stride, padding, dilation, lhs_dilation=None):
    """Spatial output shape of lax.conv_general_dilated (NC..., OI...)."""
    nd = len(in_shape)
    lhs = jax.ShapeDtypeStruct((1, 1, *in_shape), jnp.float32)
    rhs = jax.ShapeDtypeStruct((1, 1, *kernel), jnp.float32)
    try:
        out = _conv_eval_shape(lhs, rhs, stride, padding, dilation, lhs_dilation)
    except ValueError:  # lax rejects cropping past the input: an empty output
        return (0,) * nd
    assert len(out.shape) == nd + 2
    return tuple(out.shape[2:])


def _conv_eval_shape(lhs, rhs, stride, padding, dilation, lhs_dilation):
    return jax.eval_shape(
        lambda a, b: jax.lax.conv_general_dilated(
            a,
            b,
            tuple(stride),
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=tuple(dilation),
        ),
        lhs,
        rhs,
    )


def lax_conv_transpose_size(n, k, s, p, op, d):
    """PyTorch-style transposed conv size via lax.conv_transpose(consistent)."""
    lhs = jax.ShapeDtypeStruct((1, n, 1), jnp.float32)
    rhs = jax.ShapeDtypeStruct((k, 1, 1), jnp.float32)
    padding = p if isinstance(p, str) else [(p[0], p[1] - op)]
    try:
        return _transpose_eval_shape(lhs, rhs, s, padding, d).shape[1]
    except ValueError:  # lax rejects cropping past the input: an empty output
        return 0


def _transpose_eval_shape(lhs, rhs, s, padding, d):
    return jax.eval_shape(
        lambda a, b: jax.lax.conv_transpose(
            a,
            b,
            (s,),
            padding,
            rhs_dilation=(d,),
            dimension_numbers=("NHC", "HIO", "NHC"),
            use_consistent_padding=True,
        ),
        lhs,
        rhs,
    )


def brute_pool_size(n, w, s, lo, hi, d, ceil_mode):
    """Count window starts one by one (PyTorch's rule written as a loop).

    Floor mode: every start whose window fits the padded input.  Ceil mode
    also keeps one more window that overhangs the end by less than a stride,
    unless it would start in the right padding.
    """
    length, span = n + lo + hi, d * (w - 1) + 1
    starts = []
    start = 0
    while start + span <= length + (s - 1 if ceil_mode else 0):
        starts.append(start)
        start += s
    if ceil_mode and starts and starts[-1] + span > length and starts[-1] >= n + lo:
        starts.pop()
    return len(starts)


def brute_receptive_field(layers):
    """Input coordinates seen by outputs 0 and 1, composed layer by layer."""

    def window(positions, k, s, d, p):
        return {j * s - p + t * d for j in positions for t in range(k)}

    results = []
    for depth in range(1, len(layers) + 1):
        first, second = {0}, {1}
        for k, s, d, p in reversed(layers[:depth]):
            first, second = window(first, k, s, d, p), window(second, k, s, d, p)
        size = max(first) - min(first) + 1
        start = (max(first) + min(first)) / 2
        results.append((size, min(second) - min(first), start))
    return results


# ----------------------------------------------------------- conv shapes

KERNELS = [1, 2, 3, 5]
STRIDES = [1, 2, 3]
DILATIONS = [1, 2]
PADDINGS = ["VALID", "SAME", "SAME_LOWER", 0, 1, (2, 1), (-1, 2), (0, -2)]
SIZES = [1, 2, 5, 8, 13]


@pytest.mark.parametrize(
    "k,s,d,padding", list(itertools.product(KERNELS, STRIDES, DILATIONS, PADDINGS))
)
def test_conv_output_size_matches_lax(k, s, d, padding):
    for n in SIZES:
        if isinstance(padding, str):
            lax_padding = padding
        else:
            lax_padding = [(padding, padding) if isinstance(padding, int) else padding]
        expected = lax_conv_shape((n,), (k,), (s,), lax_padding, (d,))[0]
        if expected > 0:
            got = shapes.conv_output_size(n, k, stride=s, padding=padding, dilation=d)
            assert got == expected, (n, k, s, d, padding)
        else:
            with pytest.raises(ValueError, match="empty output"):
                shapes.conv_output_size(n, k, stride=s, padding=padding, dilation=d)


@pytest.mark.parametrize("padding", ["VALID", "SAME", "SAME_LOWER"])
@pytest.mark.parametrize("k,s,d", itertools.product(KERNELS, STRIDES, DILATIONS))
def test_resolve_padding_strings_match_lax(padding, k, s, d):
    for n in SIZES:
        ours = shapes.resolve_padding(padding, (n,), (k,), stride=s, dilation=d)
        theirs = jax.lax.padtype_to_pads((n,), (d * (k - 1) + 1,), (s,), padding)
        assert ours == tuple(map(tuple, theirs))


def test_resolve_padding_same_hand_values():
    # n=6, k=4: total 3, extra cell at the end (SAME) or the start (SAME_LOWER).
    assert shapes.resolve_padding("SAME", (6,), (4,)) == ((1, 2),)
    assert shapes.resolve_padding("SAME_LOWER", (6,), (4,)) == ((2, 1),)
    assert shapes.resolve_padding("same", (5,), (3,), stride=2) == ((1, 1),)
    assert shapes.resolve_padding("SAME", (8,), (1,), stride=2) == ((0, 0),)


@pytest.mark.parametrize("k,s,d", itertools.product(KERNELS, STRIDES, DILATIONS))
def test_full_and_causal(k, s, d):
    reach = d * (k - 1)
    for n in SIZES:
        assert shapes.resolve_padding("FULL", (n,), (k,), stride=s, dilation=d) == (
            (reach, reach),
        )
        assert shapes.resolve_padding("Causal", (n,), (k,), dilation=d) == ((reach, 0),)
        full = shapes.conv_output_size(n, k, stride=s, padding="full", dilation=d)
        expected = lax_conv_shape((n,), (k,), (s,), [(reach, reach)], (d,))[0]
        assert full == expected
        causal = shapes.conv_output_size(n, k, padding="CAUSAL", dilation=d)
        assert causal == n  # stride 1: one output per input, none from the future
        if s == 1:
            assert full == n + reach


SHAPE_CASES = [
    # in_shape, kernel, stride, padding, dilation
    ((7, 10), (3, 2), (2, 1), "SAME", (1, 3)),
    ((7, 10), (3, 2), 2, "SAME_LOWER", 1),
    ((7, 10), (3, 3), 1, 1, 2),
    ((7, 10), (3, 3), (1, 2), [1, 0], 1),
    ((7, 10), (3, 3), 1, [(1, 0), (-1, 3)], (2, 1)),
    ((7, 10), (2, 4), 3, [2, (0, -1)], 1),
    ((5, 6, 7), (3, 1, 2), (1, 2, 3), "VALID", (2, 1, 1)),
    ((5, 6, 7), 3, 2, "SAME", 1),
    ((9,), (4,), 2, [(3, 3)], 1),
    ((), (), 1, "VALID", 1),
]


def explicit(padding, in_shape, kernel, stride, dilation):
    """The lax form of a padding: strings as they are, else (lo, hi) pairs."""
    if isinstance(padding, str) and padding.upper() in ("VALID", "SAME", "SAME_LOWER"):
        return padding.upper()
    return shapes.resolve_padding(
        padding, in_shape, kernel, stride=stride, dilation=dilation
    )


@pytest.mark.parametrize("in_shape,kernel,stride,padding,dilation", SHAPE_CASES)
def test_conv_output_shape_nd_matches_lax(in_shape, kernel, stride, padding, dilation):
    nd = len(in_shape)
    kernel_t = positive_tuple(kernel, nd, "kernel")
    stride_t, dil_t = ntuple(stride, nd, "s"), ntuple(dilation, nd, "d")
    expected = lax_conv_shape(
        in_shape,
        kernel_t,
        stride_t,
        explicit(padding, in_shape, kernel_t, stride_t, dil_t),
        dil_t,
    )
    got = shapes.conv_output_shape(
        in_shape, kernel, stride=stride, padding=padding, dilation=dilation
    )
    assert got == expected


@pytest.mark.parametrize("lhs_dilation", [1, 2, 3])
@pytest.mark.parametrize("padding", [(0, 0), (1, 1), (2, 0), (-1, 1), (3, 2)])
@pytest.mark.parametrize(
    "k,s,d", [(1, 1, 1), (3, 1, 1), (3, 2, 1), (2, 1, 2), (4, 3, 1)]
)
def test_conv_output_shape_lhs_dilation_matches_lax(lhs_dilation, padding, k, s, d):
    for n in [1, 3, 6]:
        expected = lax_conv_shape((n,), (k,), (s,), [padding], (d,), (lhs_dilation,))[0]
        kwargs = dict(
            stride=s, padding=[padding], dilation=d, lhs_dilation=lhs_dilation
        )
        if expected > 0:
            assert shapes.conv_output_shape((n,), (k,), **kwargs) == (expected,)
        else:
            with pytest.raises(ValueError, match="empty output"):
                shapes.conv_output_shape((n,), (k,), **kwargs)


def test_conv_output_shape_string_with_lhs_dilation_uses_dilated_size():
    # 4 cells dilated by 2 -> 7 cells; SAME keeps 7.
    assert shapes.conv_output_shape((4,), (3,), padding="SAME", lhs_dilation=2) == (7,)


def test_conv_output_size_hand_values():
    assert shapes.conv_output_size(28, 3) == 26
    assert shapes.conv_output_size(28, 3, padding=1) == 28
    assert shapes.conv_output_size(224, 7, stride=2, padding=3) == 112
    assert shapes.conv_output_size(10, 3, dilation=4) == 2
    assert shapes.conv_output_size(5, 3, padding=(-1, -1)) == 1
    assert shapes.conv_output_size(0, 1, padding=1) == 2


# ---------------------------------------------------------- transposed conv

TRANSPOSE_CASES = list(
    itertools.product([1, 2, 3, 4], [1, 2, 3], [1, 2], [0, 1, 2, (1, 0)], [0, 1, 2])
)


@pytest.mark.parametrize("k,s,d,p,op", TRANSPOSE_CASES)
def test_conv_transpose_output_size_matches_lax(k, s, d, p, op):
    pair = (p, p) if isinstance(p, int) else p
    for n in [1, 2, 5, 8]:
        kwargs = dict(stride=s, padding=p, output_padding=op, dilation=d)
        if op >= max(s, d):
            with pytest.raises(ValueError, match="`output_padding`"):
                shapes.conv_transpose_output_size(n, k, **kwargs)
            continue
        expected = lax_conv_transpose_size(n, k, s, pair, op, d)
        if expected > 0:
            assert shapes.conv_transpose_output_size(n, k, **kwargs) == expected
        else:
            with pytest.raises(ValueError, match="empty output"):
                shapes.conv_transpose_output_size(n, k, **kwargs)


@pytest.mark.parametrize("k,s,d", itertools.product([1, 2, 3, 4], [1, 2, 3], [1, 2]))
def test_conv_transpose_same_and_valid_match_lax(k, s, d):
    for n in [1, 2, 5]:
        same = shapes.conv_transpose_output_size(
            n, k, stride=s, padding="SAME", dilation=d
        )
        assert same == n * s == lax_conv_transpose_size(n, k, s, "SAME", 0, d)
        valid = shapes.conv_transpose_output_size(
            n, k, stride=s, padding="valid", dilation=d
        )
        assert valid == shapes.conv_transpose_output_size(
            n, k, stride=s, padding=0, dilation=d
        )


@pytest.mark.parametrize("k,s,d,p,op", TRANSPOSE_CASES)
def test_conv_transpose_output_size_matches_torch(k, s, d, p, op):
    torch = pytest.importorskip("torch")
    if not isinstance(p, int) or op >= max(s, d):
        return
    for n in [1, 2, 5]:
        x, w = torch.zeros(1, 1, n), torch.zeros(1, 1, k)
        try:
            expected = torch.nn.functional.conv_transpose1d(
                x, w, stride=s, padding=p, output_padding=op, dilation=d
            ).shape[-1]
        except RuntimeError:
            expected = 0
        kwargs = dict(stride=s, padding=p, output_padding=op, dilation=d)
        if expected > 0:
            assert shapes.conv_transpose_output_size(n, k, **kwargs) == expected
        else:
            with pytest.raises(ValueError, match="empty output"):
                shapes.conv_transpose_output_size(n, k, **kwargs)


def test_conv_transpose_output_shape_nd():
    got = shapes.conv_transpose_output_shape(
        (16, 7), (4, 3), stride=2, padding=[1, (1, 1)], output_padding=(0, 1)
    )
    assert got == (32, 14)
    assert shapes.conv_transpose_output_shape((3, 4), 2, stride=3, padding="SAME") == (
        9,
        12,
    )


# ------------------------------------------------------------------ pooling

POOL_CASES = list(
    itertools.product([1, 2, 3], [None, 1, 2, 3], [1, 2], [0, 1, (1, 0), (0, 2)])
)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("w,s,d,p", POOL_CASES)
def test_pool_output_size_matches_brute_force(w, s, d, p, ceil_mode):
    lo, hi = (p, p) if isinstance(p, int) else p
    step = w if s is None else s
    for n in range(0, 12):
        expected = brute_pool_size(n, w, step, lo, hi, d, ceil_mode)
        kwargs = dict(stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
        if expected > 0:
            assert shapes.pool_output_size(n, w, **kwargs) == expected, (n, kwargs)
        else:
            with pytest.raises(ValueError, match="empty output"):
                shapes.pool_output_size(n, w, **kwargs)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("w,s,d,p", POOL_CASES)
def test_pool_output_size_matches_torch(w, s, d, p, ceil_mode):
    torch = pytest.importorskip("torch")
    # torch: symmetric int padding, at most half the effective window.
    if not isinstance(p, int) or p > (d * (w - 1) + 1) // 2:
        return
    for n in range(1, 12):
        x = torch.zeros(1, 1, n)
        try:
            expected = torch.nn.functional.max_pool1d(
                x, w, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode
            ).shape[-1]
        except RuntimeError:
            expected = 0
        kwargs = dict(stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
        if expected > 0:
            assert shapes.pool_output_size(n, w, **kwargs) == expected, (n, kwargs)
        else:
            with pytest.raises(ValueError, match="empty output"):
                shapes.pool_output_size(n, w, **kwargs)


def test_pool_output_shape():
    assert shapes.pool_output_shape((7, 8), 2) == (3, 4)
    assert shapes.pool_output_shape((7, 8), 2, ceil_mode=True) == (4, 4)
    assert shapes.pool_output_shape((7, 8), (3, 2), stride=1, padding="SAME") == (7, 8)
    assert shapes.pool_output_shape((5, 5), 3, stride=2, padding=1) == (3, 3)


# ------------------------------------------------------------------ solvers


@pytest.mark.parametrize("k,s,d", itertools.product([1, 2, 3, 5], [1, 2, 3], [1, 2]))
def test_solve_padding_round_trip_and_minimal(k, s, d):
    for n, target in itertools.product(range(1, 9), range(1, 9)):
        reachable = [
            t
            for t in range(0, 40)
            if n + t >= d * (k - 1) + 1 and (n + t - d * (k - 1) - 1) // s + 1 == target
        ]
        if reachable:
            lo, hi = shapes.solve_padding(n, k, target, stride=s, dilation=d)
            assert lo + hi == min(reachable)
            assert (lo, hi) == (
                min(reachable) // 2,
                min(reachable) - min(reachable) // 2,
            )
            got = shapes.conv_output_size(n, k, stride=s, padding=(lo, hi), dilation=d)
            assert got == target
        else:
            with pytest.raises(ValueError, match="`target`.*unreachable"):
                shapes.solve_padding(n, k, target, stride=s, dilation=d)


@pytest.mark.parametrize(
    "k,s,d,p", itertools.product([1, 2, 3, 4], [1, 2, 3], [1, 2], [0, 1])
)
def test_solve_output_padding_round_trip(k, s, d, p):
    for n, target in itertools.product(range(1, 6), range(1, 20)):
        valid = [
            op
            for op in range(max(s, d))
            if lax_conv_transpose_size(n, k, s, (p, p), op, d) == target
        ]
        if (n - 1) * s - 2 * p + d * (k - 1) + 1 < 1:
            continue  # even output_padding=0 gives an empty output
        if valid:
            op = shapes.solve_output_padding(
                n, k, target, stride=s, padding=p, dilation=d
            )
            assert op == valid[0]
            assert (
                shapes.conv_transpose_output_size(
                    n, k, stride=s, padding=p, output_padding=op, dilation=d
                )
                == target
            )
        else:
            with pytest.raises(ValueError, match="`target`.*unreachable"):
                shapes.solve_output_padding(
                    n, k, target, stride=s, padding=p, dilation=d
                )


def test_solve_output_padding_same():
    assert shapes.solve_output_padding(5, 3, 10, stride=2, padding="SAME") == 0
    with pytest.raises(ValueError, match="`target` \\(=11\\) is unreachable"):
        shapes.solve_output_padding(5, 3, 11, stride=2, padding="SAME")


# ---------------------------------------------------------- receptive field


def test_receptive_field_hand_values():
    two = shapes.receptive_field([(3, 1, 1), (3, 1, 1)])
    assert two == [ReceptiveField(3, 1, 1), ReceptiveField(5, 1, 2)]
    strided = shapes.receptive_field([(3, 2, 1), (3, 1, 1)])
    assert strided[-1].size == 7 and strided[-1].jump == 2
    assert strided[-1].start == 3  # VALID: centre of input cells 0..6
    padded = shapes.receptive_field([(3, 2, 1, 1), (3, 1, 1, 1)])
    assert padded[-1] == ReceptiveField(7, 2, 0)
    assert shapes.receptive_field([(2, 2, 1)])[0] == ReceptiveField(2, 2, 0.5)
    atrous = shapes.receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)])
    assert [r.size for r in atrous] == [3, 7, 15]
    # ResNet stem: 7x7/2 pad 3, then 3x3/2 max pool pad 1.
    stem = shapes.receptive_field([(7, 2, 1, 3), (3, 2, 1, 1)])
    assert stem[-1] == ReceptiveField(11, 4, 0)


def test_receptive_field_per_axis():
    fields = shapes.receptive_field([((3, 1), 1, 1), (3, (2, 1), 1, (1, 0))])
    assert fields[0] == ReceptiveField((3, 1), (1, 1), (1, 0))
    assert fields[1] == ReceptiveField((5, 3), (2, 1), (1, 1))


layer = st.tuples(
    st.integers(1, 5), st.integers(1, 3), st.integers(1, 3), st.integers(-1, 3)
)


@settings(max_examples=60, deadline=None)
@given(st.lists(layer, min_size=1, max_size=4))
def test_receptive_field_matches_brute_force(layers):
    got = shapes.receptive_field(layers)
    for record, (size, jump, start) in zip(got, brute_receptive_field(layers)):
        assert (record.size, record.jump, record.start) == (size, jump, start)


# ---------------------------------------------------------- params and FLOPs


@pytest.mark.parametrize("kernel", [(3,), (3, 3), (2, 3, 4)])
@pytest.mark.parametrize(
    "c_in,c_out,groups", [(4, 6, 1), (4, 6, 2), (6, 6, 6), (3, 8, 1)]
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_params(kernel, c_in, c_out, groups, bias):
    w = np.zeros((*kernel, c_in // groups, c_out))
    expected = w.size + (c_out if bias else 0)
    assert shapes.conv_params(kernel, c_in, c_out, groups=groups, bias=bias) == expected


def test_conv_params_and_flops_hand_values():
    assert shapes.conv_params((3, 3), 64, 128) == 3 * 3 * 64 * 128 + 128
    assert shapes.conv_params(5, 1, 1, bias=False) == 5
    # ResNet 3x3, 64 -> 64 at 56x56: 2 * 56*56 * 64 * 9*64.
    flops = shapes.conv_flops((56, 56), (3, 3), 64, 64, padding="SAME")
    assert flops == 2 * 56 * 56 * 64 * 9 * 64
    dw = shapes.conv_flops((112, 112), 3, 96, 96, padding=1, stride=2, groups=96)
    assert dw == 2 * 56 * 56 * 96 * 9
    assert shapes.conv_flops((10,), 3, 2, 4, batch=3) == 2 * 3 * 8 * 4 * 3 * 2


FLOP_CASES = [
    # batch, in_shape, kernel, c_in, c_out, stride, dilation, groups
    (1, (8,), (3,), 2, 4, 1, 1, 1),
    (2, (6, 5), (3, 2), 4, 6, (2, 1), 1, 2),
    (1, (9, 9), (3, 3), 3, 3, 1, 2, 3),
    (3, (4, 5, 6), (2, 2, 3), 2, 2, 2, 1, 1),
]


@pytest.mark.parametrize(
    "batch,in_shape,kernel,c_in,c_out,stride,dil,groups", FLOP_CASES
)
def test_conv_flops_matches_xla_cost_analysis(
    batch, in_shape, kernel, c_in, c_out, stride, dil, groups
):
    # XLA counts 2 FLOPs per multiply-add of the conv.  It skips padded cells,
    # which conv_flops counts, so compare VALID convolutions only.
    nd = len(in_shape)
    x = jax.ShapeDtypeStruct((batch, c_in, *in_shape), jnp.float32)
    w = jax.ShapeDtypeStruct((c_out, c_in // groups, *kernel), jnp.float32)

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x,
            w,
            ntuple(stride, nd, "s"),
            "VALID",
            rhs_dilation=ntuple(dil, nd, "d"),
            feature_group_count=groups,
        )

    cost = jax.jit(conv).lower(x, w).cost_analysis()
    if not cost or "flops" not in cost:
        pytest.skip("no XLA cost analysis on this backend")
    ours = shapes.conv_flops(
        in_shape,
        kernel,
        c_in,
        c_out,
        stride=stride,
        dilation=dil,
        groups=groups,
        batch=batch,
    )
    assert ours == int(cost["flops"])


# ------------------------------------------------------------------ errors

ERRORS = [
    (
        lambda: shapes.conv_output_size(5, 3, stride=0),
        r"`stride` \(=0\) must be a positive integer",
    ),
    (lambda: shapes.conv_output_size(5, 0), r"`k` \(=0\) must be a positive integer"),
    (
        lambda: shapes.conv_output_size(5, 3, dilation=-1),
        r"`dilation` \(=-1\) must be a positive",
    ),
    (
        lambda: shapes.conv_output_size(-1, 3),
        r"`n` \(=-1\) must be a non-negative integer",
    ),
    (lambda: shapes.conv_output_size(2, 3), r"`k` \(=3\).*empty output"),
    (
        lambda: shapes.conv_output_size(5, 3, padding=(-2, -1)),
        r"padded input \(=2.*empty output",
    ),
    (
        lambda: shapes.conv_output_size(5, 3, padding="same_upper"),
        r"`padding` \(='same_upper'\) must be one of",
    ),
    (
        lambda: shapes.conv_output_size(5, 3, padding=-1),
        r"`padding` \(=-1\) must be a non-negative",
    ),
    (
        lambda: shapes.conv_output_size(5, 3, padding=(1, 2, 3)),
        r"`padding` \(=\(1, 2, 3\)\).*length 3",
    ),
    (
        lambda: shapes.resolve_padding("SAME", (5, 5), (3, 3, 3)),
        r"`kernel_shape` \(=\(3, 3, 3\)\).*2 integers",
    ),
    (
        lambda: shapes.resolve_padding(1, (5, 5), 3, stride=(1, 0)),
        r"`stride` \(=\(1, 0\)\) must contain only positive",
    ),
    (
        lambda: shapes.resolve_padding([1, 2, 3], (5, 5), 3),
        r"`padding` \(=\[1, 2, 3\]\) must have one entry per axis \(=2\)",
    ),
    (
        lambda: shapes.resolve_padding([(1, 2, 3), 1], (5, 5), 3),
        r"`padding`.*\(lo, hi\) pairs",
    ),
    (
        lambda: shapes.resolve_padding("bogus", (5,), 3),
        r"`padding` \(='bogus'\) must be one of",
    ),
    (
        lambda: shapes.resolve_padding(1, (5, -1), 3),
        r"`in_shape` \(=\(5, -1\)\) must contain only non-negative",
    ),
    (
        lambda: shapes.conv_output_shape((5, 2), 3),
        r"`kernel_shape` \(=3\) on spatial axis 1:.*empty output",
    ),
    (
        lambda: shapes.conv_output_shape((5,), 3, lhs_dilation=0),
        r"`lhs_dilation` \(=0\) must be a positive",
    ),
    (
        lambda: shapes.conv_transpose_output_size(5, 3, stride=2, output_padding=2),
        r"`output_padding` \(=2\) must satisfy 0 <= output_padding < "
        r"max\(stride, dilation\) \(=2\)",
    ),
    (
        lambda: shapes.conv_transpose_output_size(5, 3, output_padding=-1),
        r"`output_padding` \(=-1\)",
    ),
    (
        lambda: shapes.conv_transpose_output_size(2, 3, padding=3),
        r"`padding` \(=3\) is too large.*empty output",
    ),
    (
        lambda: shapes.conv_transpose_output_size(2, 3, padding="FULL"),
        r"`padding` \(='FULL'\) must be one of \"VALID\", \"SAME\"",
    ),
    (
        lambda: shapes.conv_transpose_output_size(
            2, 3, stride=2, padding="SAME", output_padding=1
        ),
        r"`output_padding` \(=1\) must be 0 with `padding`",
    ),
    (lambda: shapes.conv_transpose_output_size(0, 3), r"`n` \(=0\) must be a positive"),
    (lambda: shapes.pool_output_size(5, 0), r"`window` \(=0\) must be a positive"),
    (lambda: shapes.pool_output_size(2, 3), r"`window` \(=3\).*empty output"),
    (
        lambda: shapes.pool_output_size(0, 2, ceil_mode=True),
        r"`window` \(=2\).*ceil_mode.*empty output",
    ),
    (
        lambda: shapes.pool_output_size(5, 2, stride=0),
        r"`stride` \(=0\) must be a positive",
    ),
    (
        lambda: shapes.pool_output_shape((5, 1), 2),
        r"`window_shape` \(=2\) on spatial axis 1",
    ),
    (
        lambda: shapes.solve_padding(10, 3, 2),
        r"`target` \(=2\) is unreachable: without padding the output is already 8",
    ),
    (lambda: shapes.solve_padding(10, 3, 0), r"`target` \(=0\) must be a positive"),
    (
        lambda: shapes.solve_output_padding(5, 3, 20, stride=2),
        r"`target` \(=20\) is unreachable.*gives sizes 11..12",
    ),
    (
        lambda: shapes.receptive_field([(3, 1)]),
        r"`layers\[0\]` \(=\(3, 1\)\) must be \(kernel, stride, dilation\)",
    ),
    (
        lambda: shapes.receptive_field([(3, 1, 1), (3, 0, 1)]),
        r"`layers\[1\]` \(=\(3, 0, 1\)\): `stride` \(=0\)",
    ),
    (
        lambda: shapes.receptive_field([((3, 3), 1, 1), ((3, 3, 3), 1, 1)]),
        r"`layers\[1\]`.*different lengths",
    ),
    (
        lambda: shapes.conv_params((3, 3), 6, 8, groups=4),
        r"`groups` \(=4\) must divide `in_channels` \(=6\)",
    ),
    (
        lambda: shapes.conv_params((3, 3), 8, 6, groups=4),
        r"`groups` \(=4\) must divide `out_channels` \(=6\)",
    ),
    (
        lambda: shapes.conv_params((3, 0), 8, 6),
        r"`kernel_shape` \(=\(3, 0\)\) must contain only positive",
    ),
    (lambda: shapes.conv_params(3, 0, 6), r"`in_channels` \(=0\) must be a positive"),
    (
        lambda: shapes.conv_flops((5,), 3, 2, 2, batch=0),
        r"`batch` \(=0\) must be a positive",
    ),
    (lambda: shapes.conv_flops((2,), 3, 2, 2), r"empty output"),
    (
        lambda: check_data_format("NHWC"),
        r"`data_format` \(='NHWC'\) must be \"channels_last\" or \"channels_first\"",
    ),
]


@pytest.mark.parametrize("call,message", ERRORS)
def test_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


TYPE_ERRORS = [
    (
        lambda: shapes.conv_output_size(5, 3, padding=1.5),
        r"`padding` \(=1.5\) must be an integer",
    ),
    (
        lambda: shapes.conv_output_size(5, 3, stride=2.0),
        r"`stride` \(=2.0\) must be an integer",
    ),
    (
        lambda: shapes.conv_output_size(5, 3, stride=True),
        r"`stride` \(=True\) must be an integer, not a bool",
    ),
    (
        lambda: shapes.resolve_padding(None, (5,), 3),
        r"`padding` \(=None\) must be an integer",
    ),
    (
        lambda: shapes.resolve_padding(1.0, (5,), 3),
        r"`padding` \(=1.0\) must be an integer",
    ),
    (
        lambda: shapes.resolve_padding([(1.0, 2)], (5,), 3),
        r"`padding` \(=1.0\) must be an integer",
    ),
    (lambda: shapes.resolve_padding(1, 5, 3), r"`in_shape` \(=5\) must be a sequence"),
    (lambda: shapes.receptive_field(3), r"`layers` \(=3\) must be a sequence"),
]


@pytest.mark.parametrize("call,message", TYPE_ERRORS)
def test_type_errors(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_numpy_integers_accepted():
    assert shapes.conv_output_size(np.int64(8), np.int32(3), stride=np.int64(2)) == 3
    assert shapes.conv_output_shape(np.array([8, 8]), np.array([3, 3])) == (6, 6)
    out = shapes.resolve_padding(np.array([1, 2]), (5, 5), 3)
    assert out == ((1, 1), (2, 2)) and all(type(v) is int for p in out for v in p)
