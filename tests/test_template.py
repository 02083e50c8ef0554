"""jaxconv.match_template against skimage.feature.match_template."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax.test_util import check_grads

from jaxconv import match_template

skf = pytest.importorskip("skimage.feature")

# (image shape, template shape): 2-D and 3-D, odd and even templates.
SHAPES = [((12, 13), (3, 3)), ((11, 10), (4, 5)), ((7, 8, 6), (3, 2, 3)),
          ((6, 5, 7), (2, 4, 4)), ((9, 9), (9, 9))]
MODES = ["constant", "reflect", "edge", "wrap", "symmetric"]


def _mt(**static):
    """match_template with its keyword arguments bound, jitted (one compile)."""
    return jax.jit(functools.partial(match_template, **static))


def _id(case):
    return "x".join(map(str, case[0])) + "-" + "x".join(map(str, case[1]))


@pytest.mark.parametrize("pad_input", [False, True])
@pytest.mark.parametrize("shapes", SHAPES, ids=_id)
def test_matches_skimage(shapes, pad_input, rng):
    image = rng.standard_normal(shapes[0])
    template = rng.standard_normal(shapes[1])
    expected = skf.match_template(image, template, pad_input=pad_input,
                                  constant_values=0.3)
    for method in ("direct", "fft"):
        actual = _mt(pad_input=pad_input, constant_values=0.3, method=method)(
            image, template)
        assert actual.dtype == expected.dtype
        assert_close(actual, expected)
        assert float(jnp.max(jnp.abs(actual))) <= 1.0


@pytest.mark.parametrize("mode", MODES)
def test_padding_modes(mode, rng):
    image = rng.standard_normal((9, 10))
    template = rng.standard_normal((4, 3))
    expected = skf.match_template(image, template, pad_input=True, mode=mode)
    assert_close(_mt(pad_input=True, mode=mode)(image, template), expected)


def test_skimage_docstring_example():
    template = np.zeros((3, 3))
    template[1, 1] = 1
    image = np.zeros((6, 6))
    image[1, 1] = 1
    image[4, 4] = -1
    for pad_input in (False, True):
        expected = skf.match_template(image, template, pad_input=pad_input)
        actual = _mt(pad_input=pad_input)(image, template)
        assert_close(actual, expected)
    assert np.round(np.asarray(match_template(image, template)), 3)[0].tolist() == [
        1.0, -0.125, 0.0, 0.0]


def test_flat_windows_give_zero(rng):
    # Flat (all-zero or constant) windows have a zero denominator: 0, not NaN.
    image = np.zeros((10, 10))
    image[5:, 5:] = 2.0
    image[1, 2] = 1.0
    template = rng.standard_normal((3, 3))
    for pad_input in (False, True):
        expected = skf.match_template(image, template, pad_input=pad_input)
        actual = _mt(pad_input=pad_input)(image, template)
        assert_close(actual, expected)
        assert not bool(jnp.any(jnp.isnan(actual)))
    flat_template = np.ones((3, 3))
    assert float(jnp.max(jnp.abs(match_template(image, flat_template)))) == 0.0


@pytest.mark.parametrize(
    "dtype, out",
    [(np.uint8, np.float64), (np.float32, np.float32), (np.float16, np.float32)],
)
def test_dtypes(dtype, out, rng):
    image = rng.integers(0, 16, size=(10, 12)).astype(dtype)  # float16-exact
    template = image[2:6, 3:8].copy()
    expected = skf.match_template(image, template)
    actual = match_template(image, template)
    assert actual.dtype == out == expected.dtype
    # skimage's float32 window sums lose precision; compare against float64.
    reference = skf.match_template(image.astype(float), template.astype(float))
    assert_close(actual, reference, dtype=np.float32)
    assert float(actual[2, 3]) == pytest.approx(1.0, abs=1e-5)


def test_channels(rng):
    # skimage treats (M, N, C) as a volume: output (M - m + 1, N - n + 1, 1).
    image = rng.standard_normal((10, 11, 3))
    template = rng.standard_normal((4, 3, 3))
    expected = skf.match_template(image, template)
    assert_close(_mt()(image, template), expected)
    assert_close(_mt(channel_axis=-1)(image, template), expected[..., 0])
    padded = skf.match_template(image, template, pad_input=True)
    actual = _mt(channel_axis=-1, pad_input=True)(image, template)
    assert actual.shape == (10, 11)
    assert_close(actual, padded[..., 1])


def test_jit_vmap_grad(rng):
    images = rng.standard_normal((3, 9, 8))
    template = rng.standard_normal((3, 4))

    @jax.jit
    def f(im):
        return match_template(im, template, pad_input=True, mode="reflect")

    expected = np.stack([skf.match_template(im, template, pad_input=True,
                                            mode="reflect") for im in images])
    assert_close(jax.vmap(f)(images), expected)

    def loss(im, t):
        return jnp.sum(match_template(im, t) ** 2)

    check_grads(jax.jit(loss), (images[0], template), order=1, modes=["rev"])


def test_grad_is_finite_on_flat_windows():
    image = jnp.zeros((6, 6)).at[0, 0].set(1.0)
    template = jnp.arange(4.0).reshape(2, 2)
    g = jax.jit(jax.grad(lambda im: jnp.sum(match_template(im, template))))(image)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_errors():
    with pytest.raises(ValueError, match=r"`template` \(shape \(2,\)\) must have"):
        match_template(jnp.ones((5, 5)), jnp.ones(2))
    with pytest.raises(ValueError, match=r"must not be larger than `image`"):
        match_template(jnp.ones((5, 5)), jnp.ones((6, 2)))
    with pytest.raises(ValueError, match=r"`template` has 2 channels"):
        match_template(jnp.ones((5, 5, 3)), jnp.ones((2, 2, 2)), channel_axis=-1)
    with pytest.raises(ValueError, match=r"`channel_axis` \(=0\) must be None or -1"):
        match_template(jnp.ones((5, 5, 3)), jnp.ones((2, 2, 3)), channel_axis=0)
    with pytest.raises(ValueError, match=r"`mode`"):
        match_template(jnp.ones((5, 5)), jnp.ones((2, 2)), mode="linear_ramp")
    with pytest.raises(TypeError, match=r"`image` \(dtype complex128\) must be real"):
        match_template(jnp.ones((5, 5), jnp.complex128), jnp.ones((2, 2)))
