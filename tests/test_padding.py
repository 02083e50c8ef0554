"""jaxconv.padding.pad against np.pad (and lax.pad for cropping), under transforms."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax.test_util import check_grads

from jaxconv.padding import normalize_padding_mode, pad

NUMPY_MODE = {
    "zeros": "constant",
    "constant": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
    "edge": "edge",
    "wrap": "wrap",
}
MODES = ["zeros", "constant", "reflect", "replicate", "circular", "symmetric"]

# shape, axes, pad widths (one (lo, hi) per padded axis; reflect-safe)
CASES = [
    ((5,), None, [(2, 3)]),
    ((5,), None, [(0, 4)]),
    ((4, 6), None, [(1, 2), (3, 0)]),
    ((4, 6), (1,), [(5, 5)]),
    ((2, 4, 5, 3), (1, 2), [(3, 1), (2, 4)]),
    ((3, 4, 5), (-1, 0), [(1, 1), (2, 2)]),
    ((3, 4), None, [(0, 0), (1, 0)]),
]


def numpy_pad(x, axes, widths, modes, value=0):
    """Reference: np.pad one axis at a time, in increasing axis order."""
    x = np.asarray(x)
    axes = range(x.ndim) if axes is None else [a % x.ndim for a in axes]
    for axis, (lo, hi), mode in sorted(zip(axes, widths, modes)):
        full = [(0, 0)] * x.ndim
        full[axis] = (lo, hi)
        kwargs = {"constant_values": value} if NUMPY_MODE[mode] == "constant" else {}
        x = np.pad(x, full, mode=NUMPY_MODE[mode], **kwargs)
    return x


@pytest.mark.parametrize("mode", MODES + ["edge", "wrap", "REFLECT"])
@pytest.mark.parametrize("shape,axes,widths", CASES)
def test_pad_matches_numpy(mode, shape, axes, widths, rng):
    x = rng.standard_normal(shape)
    got = pad(jnp.asarray(x), widths, mode=mode, axes=axes)
    expected = numpy_pad(x, axes, widths, [mode.lower()] * len(widths))
    assert_close(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.complex64, np.float16])
@pytest.mark.parametrize("mode", MODES)
def test_pad_dtypes(dtype, mode, rng):
    x = (rng.standard_normal((4, 5)) * 10).astype(dtype)
    got = pad(x, [(2, 1), (0, 3)], mode=mode)
    assert got.dtype == dtype
    expected = numpy_pad(x, None, [(2, 1), (0, 3)], [mode] * 2)
    np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("modes", list(itertools.permutations(MODES[1:], 3)))
def test_per_axis_modes(modes, rng):
    x = rng.standard_normal((4, 5, 3))
    widths = [(2, 1), (3, 3), (0, 2)]
    got = pad(x, widths, mode=list(modes))
    assert_close(got, numpy_pad(x, None, widths, modes))


def test_per_axis_modes_with_axes_order(rng):
    # modes follow `axes`, whatever order the axes are given in.
    x = rng.standard_normal((2, 4, 5, 3))
    got = pad(x, [(1, 2), (2, 2)], mode=("circular", "reflect"), axes=(2, 1))
    expected = numpy_pad(x, (2, 1), [(1, 2), (2, 2)], ["circular", "reflect"])
    assert_close(got, expected)


@pytest.mark.parametrize("value", [0.0, -1.5, 7])
def test_constant_value(value, rng):
    x = rng.standard_normal((3, 4))
    got = pad(x, 2, mode="constant", value=value)
    expected = np.pad(x, 2, mode="constant", constant_values=value)
    assert_close(got, expected)


def test_int_and_per_axis_int_widths(rng):
    x = rng.standard_normal((3, 4))
    assert_close(pad(x, 1, mode="reflect"), np.pad(x, 1, mode="reflect"))
    assert_close(
        pad(x, [1, 2], mode="replicate"), np.pad(x, [(1, 1), (2, 2)], mode="edge")
    )


@pytest.mark.parametrize("shape", [(1,), (2,), (3,), (5,)])
def test_symmetric_wider_than_input_matches_numpy(shape, rng):
    x = rng.standard_normal(shape)
    widths = [(2 * shape[0] + 1, shape[0] + 2)]
    got = pad(x, widths, mode="symmetric")
    assert_close(got, np.pad(x, widths[0], mode="symmetric"))


@pytest.mark.parametrize("n", [2, 3, 5])
def test_limits_match_torch_rules(n, rng):
    """reflect up to n - 1 and circular up to n work; one more raises."""
    x = rng.standard_normal((n,))
    assert_close(pad(x, [(n - 1, n - 1)], mode="reflect"), np.pad(x, n - 1, "reflect"))
    assert_close(pad(x, [(n, n)], mode="circular"), np.pad(x, n, "wrap"))
    with pytest.raises(ValueError, match=rf"`padding` \(=\({n}, 0\)\).*\(={n}\)"):
        pad(x, [(n, 0)], mode="reflect")
    with pytest.raises(ValueError, match=rf"`padding` \(=\(0, {n + 1}\)\).*\(={n}\)"):
        pad(x, [(0, n + 1)], mode="circular")


def test_limits_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((1, 1, 4))
    for mode, ours in [
        ("reflect", "reflect"),
        ("replicate", "replicate"),
        ("circular", "circular"),
    ]:
        for lo, hi in [(3, 1), (0, 3), (2, 2)]:
            expected = torch.nn.functional.pad(
                torch.from_numpy(x), (lo, hi), mode=mode
            ).numpy()
            assert_close(pad(x, [(lo, hi)], mode=ours, axes=-1), expected)
    with pytest.raises(RuntimeError):
        torch.nn.functional.pad(torch.from_numpy(x), (4, 0), mode="reflect")
    with pytest.raises(ValueError):
        pad(x, [(4, 0)], mode="reflect", axes=-1)


# ------------------------------------------------------------------ cropping


@pytest.mark.parametrize("widths", [[(-1, 2)], [(-2, -1)], [(3, -4)], [(-5, 0)]])
def test_negative_widths_crop_like_lax_pad(widths, rng):
    x = rng.standard_normal((5,))
    got = pad(x, widths, mode="zeros")
    expected = jax.lax.pad(jnp.asarray(x), 0.0, [(*widths[0], 0)])
    assert_close(got, expected)


@pytest.mark.parametrize("mode", MODES)
def test_negative_widths_crop_before_padding(mode, rng):
    x = rng.standard_normal((4, 6))
    got = pad(x, [(-1, 2), (1, -2)], mode=mode)
    cropped = x[1:, :-2]
    assert_close(got, numpy_pad(cropped, None, [(0, 2), (1, 0)], [mode] * 2))


# ------------------------------------------------------------ transformations


@pytest.mark.parametrize("mode", MODES)
def test_jit(mode, rng):
    x = rng.standard_normal((2, 5, 4))
    f = jax.jit(
        functools.partial(pad, pad_width=[(2, 1), (1, 3)], mode=mode, axes=(1, 2))
    )
    assert_close(f(x), numpy_pad(x, (1, 2), [(2, 1), (1, 3)], [mode] * 2))


@pytest.mark.parametrize("mode", MODES)
def test_vmap(mode, rng):
    x = rng.standard_normal((3, 5, 4))
    f = jax.vmap(lambda a: pad(a, [(2, 1), (1, 3)], mode=mode), in_axes=0)
    expected = np.stack([numpy_pad(a, None, [(2, 1), (1, 3)], [mode] * 2) for a in x])
    assert_close(f(x), expected)


def test_vmap_over_value(rng):
    x = rng.standard_normal((4,))
    values = jnp.array([1.0, 2.0])
    got = jax.vmap(lambda v: pad(x, 1, mode="constant", value=v))(values)
    assert_close(got, np.stack([np.pad(x, 1, constant_values=v) for v in [1, 2]]))


@pytest.mark.parametrize("mode", MODES)
def test_grad(mode, rng):
    x = jnp.asarray(rng.standard_normal((4, 5)))
    f = functools.partial(pad, pad_width=[(2, 1), (-1, 3)], mode=mode)
    check_grads(f, (x,), order=2, modes=["fwd", "rev"])


@pytest.mark.parametrize("mode", MODES)
def test_vjp_is_adjoint(mode, rng):
    # <pad(x), y> == <x, pad^T(y)>: the transpose folds padded cells back.
    x = jnp.asarray(rng.standard_normal((5, 3)))
    f = functools.partial(pad, pad_width=[(3, 2), (1, 2)], mode=mode)
    y = jnp.asarray(rng.standard_normal(f(x).shape))
    _, vjp = jax.vjp(f, x)
    (xt,) = vjp(y)
    assert_close(jnp.vdot(f(x), y), jnp.vdot(x, xt))


def test_grad_wrt_value(rng):
    x = jnp.asarray(rng.standard_normal((3, 3)))
    g = jax.grad(lambda v: pad(x, 1, mode="constant", value=v).sum())(2.0)
    assert_close(g, 16.0)


# ------------------------------------------------------------------ helpers


def test_normalize_padding_mode():
    assert normalize_padding_mode("Zeros", 3) == ("constant",) * 3
    assert normalize_padding_mode(("edge", "wrap", "symmetric"), 3) == (
        "replicate",
        "circular",
        "symmetric",
    )


# ------------------------------------------------------------------- errors

ERRORS = [
    (
        lambda x: pad(x, [(1, 1)], mode="reflect"),
        r"`pad_width` \(=\[\(1, 1\)\]\) must have one entry per axis \(=2\)",
    ),
    (
        lambda x: pad(x, [(4, 0), (0, 0)], mode="reflect"),
        r"`padding` \(=\(4, 0\)\) on axis 0 must be smaller than the axis size "
        r"\(=4\).*'reflect'",
    ),
    (
        lambda x: pad(x, [(0, 0), (0, 6)], mode="circular"),
        r"`padding` \(=\(0, 6\)\) on axis 1 must be at most the axis size "
        r"\(=5\).*'circular'",
    ),
    (
        lambda x: pad(x, 1, mode="mirror"),
        r"`mode` \(='mirror'\) must be one of \"zeros\", \"constant\", \"reflect\"",
    ),
    (
        lambda x: pad(x, 1, mode=["reflect"]),
        r"`mode` \(=\['reflect'\]\) must be a mode name or a sequence of 2",
    ),
    (
        lambda x: pad(x, 1, axes=2),
        r"`axes` \(=2\) must index the axes of a rank-2 array",
    ),
    (
        lambda x: pad(x, [1, 1], axes=(0, -2)),
        r"`axes` \(=\(0, -2\)\) must not repeat an axis",
    ),
    (
        lambda x: pad(x, [(-3, -2), 0]),
        r"`pad_width` .* crops 5 cells from axis 0, which has only 4",
    ),
    (lambda x: pad(x, -1), r"`pad_width` \(=-1\) must be a non-negative integer"),
    (
        lambda x: pad(x[:0], [(1, 1), 0], mode="replicate"),
        r"`padding` \(=\(1, 1\)\) on axis 0: mode 'replicate' cannot extend "
        r"an empty axis",
    ),
    (lambda x: pad(x, [(2, 0), (0, 0)], mode=["reflect", "bad"]), r"got 'bad'"),
]


@pytest.mark.parametrize("call,message", ERRORS)
def test_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(jnp.zeros((4, 5)))


TYPE_ERRORS = [
    (lambda x: pad(x, 1.5), r"`pad_width` \(=1.5\) must be an integer"),
    (lambda x: pad(x, [(1, 0.5), 0]), r"`pad_width` \(=0.5\) must be an integer"),
    (lambda x: pad(x, 1, mode=3), r"`mode` \(=3\) must be a string"),
    (lambda x: pad(x, 1, axes=0.0), r"`axes` \(=0.0\) must be an integer"),
]


@pytest.mark.parametrize("call,message", TYPE_ERRORS)
def test_type_errors(call, message):
    with pytest.raises(TypeError, match=message):
        call(jnp.zeros((4, 5)))


def test_empty_axis_constant_ok():
    assert pad(jnp.zeros((0, 3)), [(1, 2), (0, 0)]).shape == (3, 3)
