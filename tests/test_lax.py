"""jaxconv.lax against jax.lax (the oracle) and a NumPy loop reference."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax
from jax.test_util import check_grads
from reference import conv_reference

from jaxconv import lax as jl

ALGORITHMS = ["direct", "patches", "taps", "auto"]
HI = lax.Precision.HIGHEST


def _rand(rng, shape, dtype=np.float32):
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-8, 8, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(
            dtype
        )
    return rng.standard_normal(shape).astype(dtype)


# (lhs shape NC..., rhs shape OI..., strides, padding, lhs_dil, rhs_dil, fgc, bgc)
GRID = [
    # 0-D (no spatial dims): a grouped matmul.
    ((3, 4), (6, 2), (), (), None, None, 2, 1),
    ((4, 3), (6, 3), (), (), None, None, 1, 2),
    # 1-D
    ((2, 3, 11), (4, 3, 3), (1,), "VALID", None, None, 1, 1),
    ((2, 3, 11), (4, 3, 3), (2,), "SAME", None, None, 1, 1),
    ((1, 2, 10), (2, 2, 4), (3,), "SAME_LOWER", None, (2,), 1, 1),
    ((2, 4, 9), (6, 2, 3), (1,), [(2, -1)], (2,), None, 2, 1),
    ((4, 2, 7), (6, 2, 2), (1,), [(1, 1)], None, (3,), 1, 2),
    ((1, 4, 12), (4, 1, 5), (2,), [(-2, 3)], None, None, 4, 1),
    # 2-D
    ((2, 3, 7, 6), (5, 3, 3, 3), (1, 1), "VALID", None, None, 1, 1),
    ((1, 4, 8, 9), (6, 2, 3, 2), (2, 1), "SAME", None, (1, 2), 2, 1),
    ((2, 2, 6, 5), (3, 2, 2, 3), (1, 2), [(1, 2), (0, -1)], (2, 1), (1, 1), 1, 1),
    ((1, 6, 9, 9), (12, 1, 3, 3), (2, 2), "SAME_LOWER", None, None, 6, 1),
    ((6, 2, 5, 5), (6, 2, 3, 3), (1, 1), [(1, 1), (1, 1)], None, None, 1, 3),
    ((1, 3, 5, 5), (2, 3, 7, 7), (1, 1), "SAME", None, None, 1, 1),  # kernel > input
    ((1, 2, 10, 10), (2, 1, 9, 9), (1, 1), "SAME", None, None, 2, 1),  # 81 taps: scan
    ((2, 2, 4, 4), (3, 2, 2, 2), (3, 3), [(-1, 2), (2, -1)], (3, 2), (2, 1), 1, 1),
    # 3-D
    ((1, 2, 5, 4, 6), (4, 2, 2, 3, 2), (1, 2, 1), "SAME", None, (1, 1, 2), 1, 1),
    (
        (2, 4, 4, 5, 3),
        (4, 2, 3, 2, 2),
        (2, 1, 1),
        [(1, 0), (0, 1), (1, 1)],
        (1, 2, 1),
        None,
        2,
        1,
    ),
    ((2, 2, 3, 4, 4), (4, 2, 2, 2, 2), (1, 1, 1), "VALID", None, None, 1, 2),
]


def _grid_id(case):
    lhs, rhs, s, p, ld, rd, g, b = case
    return f"{len(lhs) - 2}d-s{s}-p{p}-ld{ld}-rd{rd}-g{g}-b{b}".replace(" ", "")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", GRID, ids=_grid_id)
def test_matches_lax(case, algorithm, rng):
    lhs_shape, rhs_shape, s, p, ld, rd, g, b = case
    x = _rand(rng, lhs_shape)
    w = _rand(rng, rhs_shape)
    kw = dict(
        lhs_dilation=ld,
        rhs_dilation=rd,
        feature_group_count=g,
        batch_group_count=b,
        precision=HI,
    )
    expected = lax.conv_general_dilated(x, w, s, p, **kw)
    actual = jl.conv_general_dilated(x, w, s, p, algorithm=algorithm, **kw)
    assert actual.dtype == expected.dtype
    assert_close(actual, expected)


@pytest.mark.parametrize("case", GRID[:12], ids=_grid_id)
def test_matches_numpy_reference(case, rng):
    lhs_shape, rhs_shape, s, p, ld, rd, g, b = case
    x = _rand(rng, lhs_shape, np.float64)
    w = _rand(rng, rhs_shape, np.float64)
    pads = p
    if isinstance(p, str):  # resolve like lax (the reference takes pairs)
        ks = [(k - 1) * d + 1 for k, d in zip(rhs_shape[2:], rd or (1,) * len(s))]
        pads = lax.padtype_to_pads(lhs_shape[2:], ks, s, p)
    expected = conv_reference(x, w, s, pads, ld, rd, g, b)
    actual = jl.conv_general_dilated(
        x, w, s, p, ld, rd, feature_group_count=g, batch_group_count=b, algorithm="taps"
    )
    assert_close(actual, expected)


def test_hand_computed_value():
    x = jnp.arange(9.0).reshape(1, 1, 3, 3)
    w = jnp.array([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 1, 2, 2)
    for algorithm in ALGORITHMS:
        out = jl.conv_general_dilated(x, w, (1, 1), "VALID", algorithm=algorithm)
        np.testing.assert_array_equal(out[0, 0], [[19.0, 25.0], [37.0, 43.0]])


DIMENSION_NUMBERS = [
    None,
    ("NHWC", "HWIO", "NHWC"),
    ("NCHW", "OIHW", "NHWC"),
    ("NWHC", "IOHW", "CNHW"),
    ("HNCW", "WHOI", "WHCN"),
]


@pytest.mark.parametrize("dn", DIMENSION_NUMBERS, ids=str)
@pytest.mark.parametrize("algorithm", ["patches", "taps"])
def test_dimension_numbers(dn, algorithm, rng):
    canon = lax.conv_dimension_numbers(
        (2, 4, 7, 6), (6, 2, 3, 2), ("NCHW", "OIHW", "NCHW")
    )
    del canon
    lhs_c = _rand(rng, (2, 4, 7, 6))  # N C H W
    rhs_c = _rand(rng, (6, 2, 3, 2))  # O I H W
    if dn is None:
        lhs, rhs = lhs_c, rhs_c
    else:
        lhs = np.transpose(lhs_c, ["NCHW".index(ch) for ch in dn[0]])
        rhs = np.transpose(rhs_c, ["OIHW".index(ch) for ch in dn[1]])
    kw = dict(
        dimension_numbers=dn, feature_group_count=2, precision=HI, rhs_dilation=(2, 1)
    )
    expected = lax.conv_general_dilated(lhs, rhs, (1, 2), "SAME", **kw)
    actual = jl.conv_general_dilated(
        lhs, rhs, (1, 2), "SAME", algorithm=algorithm, **kw
    )
    assert_close(actual, expected)
    # ConvDimensionNumbers objects are accepted too.
    if dn is not None:
        dnums = jl.conv_dimension_numbers(lhs.shape, rhs.shape, dn)
        kw["dimension_numbers"] = dnums
        assert_close(jl.conv_general_dilated(lhs, rhs, (1, 2), "SAME", **kw), expected)


DTYPES = [
    (np.float64, None),
    (np.float16, None),
    (jnp.bfloat16, None),
    (jnp.bfloat16, np.float32),
    (np.float16, np.float32),
    (np.complex64, None),
    (np.complex128, None),
    (np.int8, np.int32),
    (np.int32, None),
    (np.int16, np.float32),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "dtype,pref", DTYPES, ids=lambda v: str(np.dtype(v)) if v else "none"
)
def test_dtypes(dtype, pref, algorithm, rng):
    x = _rand(rng, (2, 4, 6, 5), dtype)
    w = _rand(rng, (4, 2, 3, 3), dtype)
    kw = dict(feature_group_count=2, preferred_element_type=pref, precision=HI)
    expected = lax.conv_general_dilated(x, w, (1, 1), "SAME", **kw)
    actual = jl.conv_general_dilated(x, w, (1, 1), "SAME", algorithm=algorithm, **kw)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert_close(actual, expected, dtype=actual.dtype)


def test_int8_to_int32_is_exact(rng):
    x = rng.integers(-128, 128, size=(1, 16, 9, 9)).astype(np.int8)
    w = rng.integers(-128, 128, size=(8, 16, 3, 3)).astype(np.int8)
    expected = conv_reference(x, w, (1, 1), [(0, 0), (0, 0)], acc_dtype=np.int64)
    for algorithm in ["patches", "taps"]:
        out = jl.conv_general_dilated(
            x, w, (1, 1), "VALID", algorithm=algorithm, preferred_element_type=jnp.int32
        )
        assert out.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(out), expected)


def test_bool_matches_lax(rng):
    x = rng.integers(0, 2, size=(1, 2, 5, 5)).astype(bool)
    w = rng.integers(0, 2, size=(3, 2, 2, 2)).astype(bool)
    expected = lax.conv_general_dilated(x, w, (1, 1), "VALID")
    actual = jl.conv_general_dilated(x, w, (1, 1), "VALID")
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(
    "shapes",
    [
        ((1, 2, 3), (4, 2, 5), "VALID"),  # kernel larger than input
        ((0, 2, 6), (4, 2, 3), "SAME"),  # empty batch
        ((1, 2, 6), (0, 2, 3), "VALID"),  # no output features
        ((1, 0, 6), (4, 0, 3), "VALID"),  # no input features
        ((1, 2, 4), (4, 2, 3), [(-2, 0)]),  # cropped below the kernel size
    ],
)
def test_empty_and_degenerate_like_lax(shapes):
    lhs_shape, rhs_shape, p = shapes
    x = jnp.ones(lhs_shape, jnp.float32)
    w = jnp.ones(rhs_shape, jnp.float32)
    expected = lax.conv_general_dilated(x, w, (1,), p)
    actual = jl.conv_general_dilated(x, w, (1,), p)
    assert actual.shape == expected.shape
    assert_close(actual, expected)


# --- invalid arguments raise what jax.lax raises -----------------------------

BAD_CALLS = [
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2, 2)),  # rank mismatch
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), padding="FOO"),  # unknown padding
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), strides=(1, 1)),  # strides length
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), padding=[(1, 2, 3)]),  # bad pair
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), padding=[(1, 1), (1, 1)]),  # too many pairs
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), padding=[(-4, -4)]),  # crop > size
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), rhs_dilation=(0,)),  # zero dilation
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), lhs_dilation=(0,), padding=[(0, 0)]),
    dict(lhs=(1, 4, 5), rhs=(3, 2, 2), fgc=3),  # fgc !| C
    dict(lhs=(1, 4, 5), rhs=(3, 2, 2), fgc=2),  # O % fgc
    dict(lhs=(1, 4, 5), rhs=(4, 3, 2), fgc=2),  # I mismatch
    dict(lhs=(3, 2, 5), rhs=(4, 2, 2), bgc=2),  # bgc !| N
    dict(lhs=(2, 2, 5), rhs=(3, 2, 2), bgc=2),  # O % bgc
    dict(lhs=(2, 4, 5), rhs=(4, 2, 2), fgc=2, bgc=2),  # both groups
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), fgc=0),
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), lhs_dilation=(2,), padding="SAME"),
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), dn=("NCW", "OIW")),  # dn length
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), dn=("NCW", "OIX", "NCW")),  # spatial chars
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), dn="NCW"),  # not a tuple
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), dtype2=np.float16),  # dtype mismatch
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), pref=np.int32),  # float -> int
    dict(lhs=(1, 2, 5), rhs=(3, 2, 2), pref=np.float16),  # narrower
]


def _call(mod, c, **extra):
    x = jnp.ones(c["lhs"], jnp.float32)
    w = jnp.ones(c["rhs"], c.get("dtype2", jnp.float32))
    return mod.conv_general_dilated(
        x,
        w,
        c.get("strides", (1,)),
        c.get("padding", "VALID"),
        lhs_dilation=c.get("lhs_dilation"),
        rhs_dilation=c.get("rhs_dilation"),
        dimension_numbers=c.get("dn"),
        feature_group_count=c.get("fgc", 1),
        batch_group_count=c.get("bgc", 1),
        preferred_element_type=c.get("pref"),
        **extra,
    )


@pytest.mark.parametrize("case", BAD_CALLS, ids=str)
def test_same_exception_types_as_lax(case):
    with pytest.raises(Exception) as expected:
        _call(lax, case)
    with pytest.raises(expected.type):
        _call(jl, case)


def test_unknown_algorithm_message():
    with pytest.raises(ValueError, match=r"`algorithm` \(='fast'\) must be one of"):
        jl.conv(
            jnp.ones((1, 1, 4)), jnp.ones((1, 1, 2)), (1,), "VALID", algorithm="fast"
        )


def test_zero_stride_is_value_error():
    with pytest.raises(ValueError, match="window_strides"):
        jl.conv(jnp.ones((1, 1, 4)), jnp.ones((1, 1, 2)), (0,), "VALID")


# --- signatures --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "conv_general_dilated",
        "conv",
        "conv_with_general_padding",
        "conv_transpose",
        "conv_general_dilated_patches",
    ],
)
def test_signature_mirrors_lax(name):
    ours = inspect.signature(getattr(jl, name)).parameters
    theirs = inspect.signature(getattr(lax, name)).parameters
    for pname, param in theirs.items():
        assert pname in ours, pname
        assert ours[pname].default == param.default, pname
        assert ours[pname].kind == param.kind, pname
    extra = [p for p in ours if p not in theirs]
    assert extra in ([], ["algorithm"])
    if extra:
        assert ours["algorithm"].kind is inspect.Parameter.KEYWORD_ONLY


# --- transformations ---------------------------------------------------------

TRANSFORM_CASES = [
    ((2, 4, 7, 6), (6, 2, 3, 2), (1, 2), "SAME", None, (2, 1), 2, 1),
    ((4, 2, 6, 5), (4, 2, 2, 3), (1, 1), [(1, 0), (0, 2)], (2, 1), None, 1, 2),
    ((1, 3, 9), (3, 1, 4), (2,), "SAME", None, None, 3, 1),
]


@pytest.mark.parametrize("algorithm", ["direct", "patches", "taps"])
@pytest.mark.parametrize("case", TRANSFORM_CASES, ids=_grid_id)
def test_gradients_match_lax(case, algorithm, rng):
    lhs_shape, rhs_shape, s, p, ld, rd, g, b = case
    x = _rand(rng, lhs_shape, np.float64)
    w = _rand(rng, rhs_shape, np.float64)
    kw = dict(
        lhs_dilation=ld, rhs_dilation=rd, feature_group_count=g, batch_group_count=b
    )

    def loss(mod, **extra):
        def f(x, w):
            y = mod.conv_general_dilated(x, w, s, p, **kw, **extra)
            return jnp.sum(jnp.sin(y))

        return f

    gx, gw = jax.grad(loss(lax), (0, 1))(x, w)
    ax, aw = jax.grad(loss(jl, algorithm=algorithm), (0, 1))(x, w)
    assert_close(ax, gx)
    assert_close(aw, gw)
    f = lambda x, w: jl.conv_general_dilated(x, w, s, p, **kw, algorithm=algorithm)  # noqa: E731
    # Numerical derivatives to second order for the fast path; first order for
    # the others (their autodiff is compared with lax's above; "direct" loops
    # per output element, which makes second-order checks very slow to trace).
    order = 2 if algorithm == "taps" else 1
    check_grads(f, (x, w), order=order, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("algorithm", ["patches", "taps"])
def test_jvp_and_second_derivative_match_lax(algorithm, rng):
    x = _rand(rng, (1, 2, 6, 6), np.float64)
    w = _rand(rng, (3, 2, 3, 3), np.float64)
    tx = _rand(rng, x.shape, np.float64)
    tw = _rand(rng, w.shape, np.float64)

    def f(mod, **extra):
        return lambda x, w: mod.conv_general_dilated(x, w, (1, 1), "SAME", **extra)

    p0, t0 = jax.jvp(f(lax), (x, w), (tx, tw))
    p1, t1 = jax.jvp(f(jl, algorithm=algorithm), (x, w), (tx, tw))
    assert_close(p1, p0)
    assert_close(t1, t0)

    def hess(mod, **extra):
        g = jax.grad(lambda x: jnp.sum(f(mod, **extra)(x, w) ** 3))
        return jax.jvp(g, (x,), (tx,))[1]

    assert_close(hess(jl, algorithm=algorithm), hess(lax))


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0)])
def test_vmap(in_axes, rng):
    x = _rand(rng, (3, 2, 4, 7, 6))
    w = _rand(rng, (3, 6, 2, 3, 2))
    xs = x if in_axes[0] == 0 else x[0]
    ws = w if in_axes[1] == 0 else w[0]

    def f(mod):
        return lambda x, w: mod.conv_general_dilated(
            x, w, (1, 2), "SAME", feature_group_count=2, precision=HI
        )

    expected = jax.vmap(f(lax), in_axes)(xs, ws)
    actual = jax.vmap(f(jl), in_axes)(xs, ws)
    assert_close(actual, expected)


def test_jit(rng):
    x = _rand(rng, (2, 3, 9, 9))
    w = _rand(rng, (4, 3, 3, 3))
    f = jax.jit(
        lambda x, w: jl.conv_general_dilated(x, w, (2, 2), "SAME", precision=HI)
    )
    expected = lax.conv_general_dilated(x, w, (2, 2), "SAME", precision=HI)
    assert_close(f(x, w), expected)
    assert_close(f(x * 2, w), expected * 2)


def test_never_lowers_to_xla_conv(rng):
    x = _rand(rng, (2, 3, 9, 9))
    w = _rand(rng, (4, 3, 3, 3))
    for algorithm in ALGORITHMS:

        def f(x, w):
            y = jl.conv_general_dilated(x, w, (2, 2), "SAME", algorithm=algorithm)
            return jnp.sum(y**2)

        hlo = jax.jit(jax.grad(f, (0, 1))).lower(x, w).as_text()
        assert "convolution" not in hlo, algorithm


# --- conv, conv_with_general_padding, conv_transpose, patches ----------------


def test_conv_and_general_padding(rng):
    x = _rand(rng, (2, 3, 8, 7))
    w = _rand(rng, (4, 3, 3, 2))
    assert_close(
        jl.conv(x, w, (2, 1), "SAME", precision=HI),
        lax.conv(x, w, (2, 1), "SAME", precision=HI),
    )
    args = (x, w, (1, 2), [(1, 2), (-1, 0)], (2, 1), (1, 2))
    assert_close(
        jl.conv_with_general_padding(*args, precision=HI),
        lax.conv_with_general_padding(*args, precision=HI),
    )


TRANSPOSE_CASES = [
    # lhs (NHWC...), rhs (HWIO...), strides, padding, rhs_dilation
    ((2, 5, 3), (3, 3, 4), (2,), "SAME", None),
    ((2, 5, 3), (4, 3, 4), (3,), "VALID", None),
    ((1, 5, 4, 3), (3, 3, 3, 2), (2, 2), "SAME", None),
    ((1, 5, 4, 3), (4, 3, 3, 2), (2, 1), "VALID", (1, 2)),
    ((1, 5, 4, 3), (3, 2, 3, 2), (2, 3), [(1, 2), (0, 1)], None),
    ((1, 3, 4, 3, 2), (2, 3, 2, 2, 3), (2, 1, 2), "SAME", None),
]


@pytest.mark.parametrize("consistent", [False, True])
@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=str)
def test_conv_transpose(case, transpose_kernel, consistent, rng):
    lhs_shape, rhs_shape, s, p, rd = case
    x = _rand(rng, lhs_shape)
    w = _rand(rng, rhs_shape)
    if transpose_kernel:  # the kernel's I and O swap roles
        w = np.swapaxes(w, -1, -2)
        w = _rand(rng, w.shape[:-2] + (w.shape[-2], lhs_shape[-1]))
    kw = dict(
        rhs_dilation=rd,
        transpose_kernel=transpose_kernel,
        use_consistent_padding=consistent,
        precision=HI,
    )
    expected = lax.conv_transpose(x, w, s, p, **kw)
    actual = jl.conv_transpose(x, w, s, p, **kw)
    assert_close(actual, expected)


def test_conv_transpose_is_vjp_of_conv(rng):
    # With use_consistent_padding, conv_transpose(transpose_kernel=True) is the
    # transpose of the forward conv with the same stride and padding.
    x = _rand(rng, (1, 9, 8, 3), np.float64)
    w = _rand(rng, (3, 3, 3, 5), np.float64)
    dn = ("NHWC", "HWIO", "NHWC")
    def fwd(x):
        return jl.conv_general_dilated(
            x, w, (2, 2), [(1, 1), (1, 1)], dimension_numbers=dn
        )

    y, vjp = jax.vjp(fwd, x)
    ct = _rand(rng, y.shape, np.float64)
    (expected,) = vjp(ct)
    got = jl.conv_transpose(
        ct,
        w,
        (2, 2),
        [(1, 1), (1, 1)],
        dimension_numbers=dn,
        transpose_kernel=True,
        use_consistent_padding=True,
    )
    # The transposed conv covers the rows the forward conv reached.
    assert_close(
        got[:, : x.shape[1], : x.shape[2]], expected[:, : got.shape[1], : got.shape[2]]
    )


PATCH_CASES = [
    ((2, 3, 7, 6), (3, 2), (1, 1), "VALID", None, None, None),
    ((1, 2, 8, 9), (2, 3), (2, 3), "SAME", None, (2, 1), None),
    ((1, 2, 5, 5), (3, 3), (1, 1), [(1, 2), (-1, 1)], (2, 1), None, None),
    ((2, 7, 6, 3), (3, 2), (1, 2), "SAME", None, None, ("NHWC", "HWIO", "NHWC")),
    ((2, 3, 6), (4,), (2,), "SAME_LOWER", None, None, None),
    ((1, 2, 4, 5, 3), (2, 3, 2), (1, 1, 2), "VALID", None, (1, 1, 2), None),
]


@pytest.mark.parametrize("case", PATCH_CASES, ids=str)
def test_patches_match_lax(case, rng):
    lhs_shape, fs, s, p, ld, rd, dn = case
    x = _rand(rng, lhs_shape)
    kw = dict(lhs_dilation=ld, rhs_dilation=rd, dimension_numbers=dn, precision=HI)
    expected = lax.conv_general_dilated_patches(x, fs, s, p, **kw)
    actual = jl.conv_general_dilated_patches(x, fs, s, p, **kw)
    assert actual.dtype == expected.dtype
    assert_close(actual, expected)


def test_patches_preferred_element_type(rng):
    x = rng.integers(-5, 5, size=(1, 2, 5, 5)).astype(np.int8)
    expected = lax.conv_general_dilated_patches(
        x, (2, 2), (1, 1), "VALID", preferred_element_type=jnp.int32
    )
    actual = jl.conv_general_dilated_patches(
        x, (2, 2), (1, 1), "VALID", preferred_element_type=jnp.int32
    )
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


# --- cases from JAX's own convolution tests ------------------------------------
# The configurations of jax's tests/lax_test.py, lax_autodiff_test.py and
# lax_vmap_test.py (testConvGeneralDilated, ...Patches..., testConvTranspose*,
# testConvGeneralDilatedGrad, testGradConv0D) that the grids above lack: more
# dtypes, large and negative padding, empty spatial inputs, lhs dilation 4,
# batch groups with dilation, odd layouts, 0-D transposes.  Default algorithm.


def _to_layout(x, w, dn):
    """``x`` from NC<spatial>, ``w`` from OI<spatial> to the layouts of ``dn``."""
    if dn is None:
        return x, w
    spatial = "HWD"[: x.ndim - 2]
    x = np.transpose(x, [("NC" + spatial).index(c) for c in dn[0]])
    w = np.transpose(w, [("OI" + spatial).index(c) for c in dn[1]])
    return x, w


def _rand_small(rng, shape, dtype):
    """Small values of any dtype (bool and unsigned included)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(dtype)
    if jnp.issubdtype(dtype, jnp.unsignedinteger):
        return rng.integers(0, 4, size=shape).astype(dtype)
    return _rand(rng, shape, dtype)


NHWC_OUT = ("NCHW", "HWIO", "NHWC")
# (lhs NCHW, rhs OIHW, strides, padding, lhs_dil, rhs_dil, fgc, bgc, dn, dtype)
JAX_CASES = [
    ((3, 2, 9, 10), (3, 2, 4, 5), (2, 1), ((10, 8), (7, 13)), (1, 1), (1, 2), 1, 1,
     NHWC_OUT, np.complex64),
    ((2, 3, 9, 10), (2, 3, 4, 5), (2, 1), ((10, 8), (7, 13)), (1, 4), (1, 2), 1, 1,
     NHWC_OUT, np.float32),
    ((4, 2, 9, 10), (6, 2, 4, 5), (1, 1), ((1, 2), (2, 0)), (1, 2), (1, 4), 1, 2,
     ("NHWC", "HWIO", "NHWC"), np.float32),
    ((2, 6, 9, 10), (6, 3, 4, 5), (2, 1), ((10, 8), (7, 13)), (1, 4), (1, 4), 2, 1,
     None, np.float64),
    ((6, 3, 9, 10), (6, 3, 4, 5), (2, 1), ((10, 8), (7, 13)), (1, 2), (1, 1), 1, 3,
     None, np.complex128),
    ((2, 3, 9, 0), (2, 3, 4, 5), (1, 1), ((10, 8), (7, 13)), (1, 2), (1, 1), 1, 1,
     NHWC_OUT, np.float32),  # an empty input padded to a non-empty output
    ((4, 2, 9, 0), (4, 2, 4, 5), (2, 1), ((1, 2), (2, 0)), (1, 4), (1, 2), 1, 2,
     None, np.float32),
    ((2, 4, 9, 10), (4, 2, 4, 5), (2, 1), ((1, 2), (2, 0)), (1, 2), (1, 4), 2, 1,
     ("NHWC", "HWIO", "NHWC"), np.int32),
    ((4, 3, 9, 10), (4, 3, 4, 5), (1, 1), ((10, 8), (7, 13)), (1, 1), (1, 2), 1, 2,
     NHWC_OUT, np.int8),
    ((2, 3, 9, 10), (3, 3, 4, 5), (2, 1), ((1, 2), (2, 0)), (1, 4), (1, 1), 1, 1,
     None, np.uint8),
    ((2, 4, 9, 10), (6, 2, 4, 5), (1, 1), ((10, 8), (7, 13)), (1, 2), (1, 2), 2, 1,
     None, np.bool_),
    ((2, 3, 9, 10), (2, 3, 4, 5), (2, 1), ((1, 2), (2, 0)), (1, 2), (1, 2), 1, 1,
     NHWC_OUT, np.float16),
    ((4, 2, 9, 10), (4, 2, 4, 5), (1, 1), ((10, 8), (7, 13)), (1, 4), (1, 2), 1, 2,
     ("NHWC", "HWIO", "NHWC"), jnp.bfloat16),
    ((4, 2, 6, 7), (4, 2, 1, 2), (2, 1), ((0, -1), (0, 0)), (2, 1), (2, 2), 1, 2,
     ("NHWC", "OIHW", "NCHW"), np.float32),  # negative padding, dilated lhs
    ((4, 2, 1), (3, 2, 1), (1,), ((1, 1),), (2,), (2,), 1, 1, None, np.float32),
    # 0-D (testConvGeneralDilated0D): a grouped matmul.
    ((4, 3), (6, 3), (), (), None, None, 1, 2, None, np.int16),
    ((3, 6), (4, 3), (), (), None, None, 2, 1, None, np.complex64),
    ((2, 3), (4, 3), (), (), None, None, 1, 1, None, np.bool_),
]


def _jax_case_id(case):
    lhs, rhs, s, p, ld, rd, g, b, dn, dtype = case
    dn = "" if dn is None else "-" + "".join(dn)
    return (f"{np.dtype(dtype).name}-{lhs}-{rhs}-s{s}-p{p}-ld{ld}-rd{rd}-g{g}-b{b}"
            f"{dn}").replace(" ", "")


@pytest.mark.parametrize("case", JAX_CASES, ids=_jax_case_id)
def test_jax_conv_general_dilated_cases(case, rng):
    lhs_shape, rhs_shape, s, p, ld, rd, g, b, dn, dtype = case
    x, w = _to_layout(_rand_small(rng, lhs_shape, dtype),
                      _rand_small(rng, rhs_shape, dtype), dn)
    kw = dict(lhs_dilation=ld, rhs_dilation=rd, dimension_numbers=dn,
              feature_group_count=g, batch_group_count=b, precision=HI)
    expected = lax.conv_general_dilated(x, w, s, p, **kw)
    actual = jl.conv_general_dilated(x, w, s, p, **kw)
    assert actual.dtype == expected.dtype
    assert_close(actual, expected, dtype=actual.dtype)


@pytest.mark.parametrize("precision", [
    None, lax.Precision.DEFAULT, "high", (lax.Precision.DEFAULT, HI),
    [HI, lax.Precision.DEFAULT],
], ids=str)
def test_precision_forms(precision, rng):
    x, w = _rand(rng, (2, 3, 9, 10)), _rand(rng, (2, 3, 4, 5))
    args = (x, w, (1, 2), ((1, 2), (2, 0)), (1, 2), (2, 2))
    expected = lax.conv_with_general_padding(*args, precision=HI)
    actual = jl.conv_with_general_padding(*args, precision=precision)
    assert actual.shape == expected.shape
    if jax.default_backend() == "cpu":  # on CPU every precision is float32's
        assert_close(actual, expected)


# testConvGeneralDilatedPatchesNonOverlapping: odd layouts, 0-D to 3-D.
JAX_PATCH_CASES = [
    ((2, 5), (), (), [], ("NC", "OI", "CN")),
    ((2, 3, 4), (2,), (2,), [(0, 2)], ("CNH", "OHI", "HNC")),
    ((3, 1, 4, 5), (1, 3), (1, 3), [(3, 1), (2, 2)], ("NCHW", "OIHW", "NCHW")),
    ((3, 2, 5, 6), (4, 3), (4, 3), [(5, 2), (2, 4)], None),
    ((1, 2, 3, 4), (1, 1), (1, 1), [(0, 0), (0, 0)], ("NCWH", "OHWI", "CNHW")),
    ((1, 2, 3, 4), (3, 2), (1, 1), [(0, 0), (0, 0)], ("CWHN", "HOWI", "NCHW")),
    ((2, 3, 4, 5, 6), (2, 1, 3), (2, 1, 3), [(1, 2), (5, 3), (3, 5)],
     ("NHWDC", "HDIWO", "DCWNH")),
]


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.bool_, np.complex64],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", JAX_PATCH_CASES, ids=str)
def test_jax_patches_cases(case, dtype, rng):
    lhs_shape, fs, s, p, dn = case
    x = _rand_small(rng, lhs_shape, dtype)
    expected = lax.conv_general_dilated_patches(x, fs, s, p, dimension_numbers=dn,
                                                precision=HI)
    actual = jl.conv_general_dilated_patches(x, fs, s, p, dimension_numbers=dn)
    assert actual.dtype == expected.dtype
    assert_close(actual, expected, dtype=actual.dtype)


def test_jax_patches_overlapping_1d():
    x = np.array([[1.0]], np.float32)
    np.testing.assert_array_equal(jl.conv_general_dilated_patches(x, (), (), "SAME"),
                                  x)
    x = np.arange(1, 6, dtype=np.float32).reshape(1, -1, 1)
    dn = ("NHC", "OIH", "NHC")
    got = jl.conv_general_dilated_patches(x, (3,), (1,), "SAME", rhs_dilation=(2,),
                                          dimension_numbers=dn)
    want = [[0, 1, 3], [0, 2, 4], [1, 3, 5], [2, 4, 0], [3, 5, 0]]
    np.testing.assert_array_equal(got[0], want)


def test_invalid_patches_padding_message():
    x = jnp.ones((1, 10, 10, 5), dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match=r"`padding` \(=\(3, 3\)\).*padding "
                                         r"argument.*, got \(3, 3\)"):
        jl.conv_general_dilated_patches(x, (5, 5), window_strides=(1, 1),
                                        padding=(3, 3))


# testConvTranspose{0D,1D,2D,2DT}: stride 3, kernels up to 5, dilated kernels.
JAX_TRANSPOSE_CASES = [
    # lhs, rhs (I/O as given to conv_transpose), strides, padding, rhs_dil, dn
    ((2, 9, 10, 3), (5, 5, 3, 2), (3, 3), "SAME", (2, 2), None),
    ((2, 9, 10, 2), (4, 4, 2, 3), (3, 3), "VALID", (2, 2), None),
    ((3, 9, 10, 2), (3, 3, 2, 3), (1, 2), "SAME", None, None),
    ((2, 10, 3), (5, 3, 2), (3,), "VALID", (2,), ("NHC", "HIO", "NHC")),
    ((3, 2), (2, 3), (), "SAME", None, ("NC", "IO", "NC")),
    ((2, 3), (3, 2), (), "VALID", (), ("NC", "IO", "NC")),
]


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("case", JAX_TRANSPOSE_CASES, ids=str)
def test_jax_conv_transpose_cases(case, transpose_kernel, rng):
    lhs_shape, rhs_shape, s, p, rd, dn = case
    x = _rand(rng, lhs_shape)
    w = _rand(rng, rhs_shape)
    if transpose_kernel:  # the kernel's last two axes swap roles
        w = np.swapaxes(w, -1, -2).copy()
    kw = dict(rhs_dilation=rd, dimension_numbers=dn,
              transpose_kernel=transpose_kernel, precision=HI)
    expected = lax.conv_transpose(x, w, s, p, **kw)
    actual = jl.conv_transpose(x, w, s, p, **kw)
    assert actual.shape == expected.shape
    assert_close(actual, expected)


# testConvGeneralDilatedGrad / testConvWithGeneralPaddingGrad: empty spatial
# inputs, negative padding, dilated lhs and rhs with batch groups.
JAX_GRAD_CASES = [
    ((4, 2, 0, 4), (4, 2, 1, 2), (1, 2), ((1, 0), (0, 1)), (2, 1), (2, 2), 1, 2,
     ("NHWC", "OIHW", "NCHW")),
    ((2, 4, 6, 7), (4, 2, 1, 2), (2, 1), ((0, -1), (0, 0)), (2, 1), (2, 2), 2, 1,
     ("NHWC", "HWIO", "NHWC")),
    ((4, 2, 6, 7), (4, 2, 1, 2), (1, 1), ((0, -1), (0, 0)), (2, 1), (1, 1), 1, 2,
     None),
    ((3, 2, 3, 4), (2, 2, 1, 2), (1, 2), ((-1, 0), (0, -1)), (2, 1), (1, 1), 1, 1,
     None),
]


@pytest.mark.parametrize("case", JAX_GRAD_CASES, ids=str)
def test_jax_gradient_cases(case, rng):
    lhs_shape, rhs_shape, s, p, ld, rd, g, b, dn = case
    x, w = _to_layout(_rand(rng, lhs_shape, np.float64),
                      _rand(rng, rhs_shape, np.float64), dn)
    kw = dict(lhs_dilation=ld, rhs_dilation=rd, dimension_numbers=dn,
              feature_group_count=g, batch_group_count=b)

    def loss(mod):
        return lambda x, w: jnp.sum(jnp.sin(mod.conv_general_dilated(x, w, s, p, **kw)))

    for got, want in zip(jax.grad(loss(jl), (0, 1))(x, w),
                         jax.grad(loss(lax), (0, 1))(x, w)):
        assert got.shape == want.shape
        assert_close(got, want)


def test_gradient_of_0d_conv():
    lhs = np.ones((2, 5), np.float32)
    rhs = np.ones((5, 10), np.float32)

    def f(lhs, rhs):
        return jl.conv_general_dilated(
            lhs, rhs, window_strides=(), padding=(), lhs_dilation=(),
            rhs_dilation=(), dimension_numbers=lax.ConvDimensionNumbers(
                (0, 1), (1, 0), (0, 1)))

    res, pullback = jax.vjp(f, lhs, rhs)
    gl, gr = pullback(np.ones_like(res))
    assert_close(gl, lhs * 10.0)
    assert_close(gr, rhs * 2.0)


def test_gradient_bfloat16_into_float32():
    """bfloat16 operands accumulated into float32: gradients as jax.lax's."""
    x = jnp.ones((1, 8, 4), jnp.bfloat16)
    w = jnp.ones((3, 4, 8), jnp.bfloat16)

    def loss(mod):
        return lambda x, w: mod.conv_general_dilated(
            x, w, (1,), "VALID", rhs_dilation=(1,),
            dimension_numbers=("NLC", "LIO", "NLC"),
            preferred_element_type=jnp.float32).sum()

    for got, want in zip(jax.grad(loss(jl), (0, 1))(x, w),
                         jax.grad(loss(lax), (0, 1))(x, w)):
        assert got.dtype == want.dtype == jnp.bfloat16
        assert_close(got, want, dtype=jnp.bfloat16)
