"""jaxconv.equinox against equinox.nn: same weights, outputs and gradients."""

import functools
import inspect
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax

eqx = pytest.importorskip("equinox")
import jaxconv.equinox as jqx  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = jax.random.key(0)
SPATIAL = {1: (11,), 2: (9, 8), 3: (6, 5, 7)}
DTYPES = [jnp.float64, jnp.float32]


def _x(nd, channels, dtype, batch=2):
    shape = (batch, channels, *SPATIAL[nd])
    return jax.random.normal(jax.random.key(1), shape, dtype)


def _loss(model, x):
    y = jax.vmap(model)(x)
    # -inf (a max-pool window of padding only) must not turn gradients into NaN.
    y = jnp.where(jnp.isfinite(y), y, 0)
    return jnp.sum(jnp.sin(y))


@eqx.filter_jit
def _apply(model, x):
    return jax.vmap(model)(x)


@eqx.filter_jit
@eqx.filter_grad
def _loss_grad(mx):
    return _loss(*mx)


def _check_pair(ours, ref, x):
    """Same parameters; vmapped outputs and every gradient agree."""
    for name in ("weight", "bias"):
        a, b = getattr(ours, name, None), getattr(ref, name, None)
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)  # bit-identical initialisation
    # Jitted: one compiled program per model instead of op-by-op dispatch.
    y, y_ref = (_apply(m, x) for m in (ours, ref))
    assert y.dtype == y_ref.dtype
    assert_close(y, y_ref, dtype=x.dtype)
    g, g_ref = (_loss_grad((m, x)) for m in (ours, ref))
    assert_close(g[1], g_ref[1], dtype=x.dtype)  # input gradient
    for name in ("weight", "bias"):
        if getattr(ref, name, None) is not None:
            assert_close(getattr(g[0], name), getattr(g_ref[0], name), dtype=x.dtype)


CONV_CASES = [  # (num_spatial_dims, kwargs of both Conv classes); 4 -> 8 channels
    (1, dict(kernel_size=3)),
    (1, dict(kernel_size=4, stride=2, padding=[(1, 2)])),
    (1, dict(kernel_size=3, dilation=2, padding="SAME", padding_mode="REFLECT")),
    (1, dict(kernel_size=2, padding="SAME_LOWER", padding_mode="circular")),
    (2, dict(kernel_size=3, padding=1)),
    (2, dict(kernel_size=(3, 5), stride=(2, 1), padding="SAME", groups=2)),
    (2, dict(kernel_size=3, padding="SAME_LOWER", dilation=(1, 2),
             padding_mode="CIRCULAR", use_bias=False)),
    (2, dict(kernel_size=2, stride=2, padding="VALID", padding_mode="REPLICATE")),
    (2, dict(kernel_size=5, padding=[(2, 1), (0, 3)], padding_mode="REFLECT",
             groups=4)),
    (3, dict(kernel_size=3, stride=2, padding=1, padding_mode="REPLICATE")),
    (3, dict(kernel_size=(1, 3, 2), padding="SAME", groups=2)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("nd, kwargs", CONV_CASES, ids=str)
def test_conv_matches_eqx(nd, kwargs, dtype):
    ref = eqx.nn.Conv(nd, 4, 8, key=KEY, dtype=dtype, **kwargs)
    ours = jqx.Conv(nd, 4, 8, key=KEY, dtype=dtype, **kwargs)
    _check_pair(ours, ref, _x(nd, 4, dtype))


@pytest.mark.parametrize("nd, kwargs", CONV_CASES[1::3], ids=str)
def test_conv_nd_classes_match_eqx(nd, kwargs):
    name = f"Conv{nd}d"
    ref = getattr(eqx.nn, name)(4, 8, key=KEY, **kwargs)
    ours = getattr(jqx, name)(4, 8, key=KEY, **kwargs)
    assert isinstance(ours, jqx.Conv) and ours.num_spatial_dims == nd
    _check_pair(ours, ref, _x(nd, 4, jnp.float64))


def test_default_dtype_follows_x64():
    # conftest turns x64 on: Equinox then defaults to float64, and so do we.
    ours, ref = jqx.Conv2d(2, 3, 3, key=KEY), eqx.nn.Conv2d(2, 3, 3, key=KEY)
    assert ours.weight.dtype == ref.weight.dtype == jnp.float64


TRANSPOSE_CASES = [  # (num_spatial_dims, kwargs of both ConvTranspose classes)
    (1, dict(kernel_size=3)),
    (1, dict(kernel_size=4, stride=2, padding=1, output_padding=1)),
    (1, dict(kernel_size=3, stride=3, padding="SAME", output_padding=2)),
    (1, dict(kernel_size=5, stride=2, padding="SAME_LOWER", dilation=2, groups=2)),
    (1, dict(kernel_size=2, padding=[(0, 2)], groups=2)),  # padding beyond the reach
    (2, dict(kernel_size=3, stride=2, padding="SAME")),
    (2, dict(kernel_size=(2, 3), stride=(2, 1), padding=[(1, 0), (2, 1)],
             output_padding=(1, 0), groups=4, use_bias=False)),
    (2, dict(kernel_size=4, stride=2, padding="SAME", padding_mode="CIRCULAR")),
    (2, dict(kernel_size=3, stride=3, padding="SAME_LOWER", padding_mode="CIRCULAR",
             dilation=2)),
    (2, dict(kernel_size=1, stride=2, padding="SAME")),
    (3, dict(kernel_size=3, stride=2, padding=1, output_padding=1)),
    (3, dict(kernel_size=2, stride=(1, 2, 3), padding="VALID", groups=2)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("nd, kwargs", TRANSPOSE_CASES, ids=str)
def test_conv_transpose_matches_eqx(nd, kwargs, dtype):
    ref = eqx.nn.ConvTranspose(nd, 4, 8, key=KEY, dtype=dtype, **kwargs)
    ours = jqx.ConvTranspose(nd, 4, 8, key=KEY, dtype=dtype, **kwargs)
    _check_pair(ours, ref, _x(nd, 4, dtype))


@pytest.mark.parametrize("nd, kwargs", TRANSPOSE_CASES[1::3], ids=str)
def test_conv_transpose_nd_classes_match_eqx(nd, kwargs):
    name = f"ConvTranspose{nd}d"
    ref = getattr(eqx.nn, name)(4, 8, key=KEY, **kwargs)
    ours = getattr(jqx, name)(4, 8, key=KEY, **kwargs)
    _check_pair(ours, ref, _x(nd, 4, jnp.float64))


def test_conv_transpose_is_the_adjoint_of_conv():
    # eqx.nn's recipe for an exact transpose: flip the kernel, swap in/out.
    conv = jqx.Conv2d(4, 6, 3, stride=2, padding=1, use_bias=False, key=KEY)
    up = jqx.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1,
                             use_bias=False, key=KEY)
    up = eqx.tree_at(lambda m: m.weight, up,
                     jnp.flip(conv.weight, axis=(2, 3)).swapaxes(0, 1))
    x = jax.random.normal(jax.random.key(1), (4, 10, 10))
    y, vjp = jax.vjp(conv, x)
    ct = jax.random.normal(jax.random.key(2), y.shape)
    assert_close(up(ct), vjp(ct)[0])


POOL_CASES = [  # (class name, positional args shared with eqx.nn)
    ("MaxPool1d", (3,)),
    ("MaxPool1d", (2, 2, 0, True)),
    ("MaxPool2d", ((2, 3), (2, 1), [(0, 1), (1, 1)])),
    ("MaxPool2d", (3, 2, 1, True)),
    ("MaxPool3d", (2, 2)),
    ("MaxPool3d", ((2, 1, 3), 2, [(1, 0), (0, 0), (1, 1)], True)),
    ("AvgPool1d", (4, 2, 1, True)),
    ("AvgPool1d", (2,)),
    ("AvgPool2d", (3, 2, 1)),
    ("AvgPool2d", ((3, 3), (2, 2), 0, True)),
    ("AvgPool3d", (3, 2, 1, True)),
    ("AvgPool3d", ((2, 1, 3), 1, [(1, 0), (0, 0), (1, 1)])),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name, args", POOL_CASES, ids=str)
def test_pool_matches_eqx(name, args, dtype):
    ref, ours = getattr(eqx.nn, name)(*args), getattr(jqx, name)(*args)
    _check_pair(ours, ref, _x(int(name[-2]), 3, dtype))


def test_max_pool_window_of_padding_only():
    # eqx.nn refuses padding wider than the window; here such a window is -inf.
    y = jqx.MaxPool1d(2, 2, padding=3)(jnp.arange(4.0)[None])
    np.testing.assert_array_equal(y, [[-np.inf, 0.0, 2.0, 3.0, -np.inf]])


@pytest.mark.parametrize("mode", ["symmetric", ("reflect", "circular")], ids=str)
def test_padding_modes_beyond_eqx(mode):
    # Modes eqx.nn lacks (symmetric, one per axis) = eqx.nn on a NumPy-padded input.
    ours = jqx.Conv2d(4, 8, 3, padding=[(2, 1), (1, 2)], padding_mode=mode, key=KEY)
    ref = eqx.nn.Conv2d(4, 8, 3, key=KEY)
    x = _x(2, 4, jnp.float64)
    modes = (mode, mode) if isinstance(mode, str) else mode
    numpy_name = {"symmetric": "symmetric", "reflect": "reflect", "circular": "wrap"}
    xp = x
    for axis, m, pads in zip((2, 3), modes, [(2, 1), (1, 2)]):
        widths = [(0, 0)] * 4
        widths[axis] = pads
        xp = jnp.pad(xp, widths, mode=numpy_name[m])
    assert_close(jax.vmap(ours)(x), jax.vmap(ref)(xp))
    assert ours.padding_mode == (mode.upper() if isinstance(mode, str)
                                 else ("REFLECT", "CIRCULAR"))


@pytest.mark.parametrize("padding, pairs", [("FULL", [(4, 4), (2, 2)]),
                                            ("causal", [(4, 0), (2, 0)])])
def test_padding_strings_beyond_eqx(padding, pairs):
    ours = jqx.Conv2d(4, 8, (3, 2), dilation=(2, 2), padding=padding, key=KEY)
    ref = eqx.nn.Conv2d(4, 8, (3, 2), dilation=(2, 2), padding=pairs, key=KEY)
    _check_pair(ours, ref, _x(2, 4, jnp.float64))
    assert ours.padding == padding.upper()


@pytest.mark.parametrize("algorithm", ["direct", "patches", "taps", "fft", "xla"])
def test_algorithm_option(algorithm):
    kwargs = dict(kernel_size=3, stride=2, padding="SAME", groups=2)
    ours = jqx.Conv2d(4, 8, **kwargs, algorithm=algorithm, key=KEY)
    _check_pair(ours, eqx.nn.Conv2d(4, 8, **kwargs, key=KEY), _x(2, 4, jnp.float64))
    up = jqx.ConvTranspose1d(4, 8, 3, 2, algorithm=algorithm, key=KEY)
    _check_pair(up, eqx.nn.ConvTranspose1d(4, 8, 3, 2, key=KEY),
                _x(1, 4, jnp.float64))


def test_pool_options_beyond_eqx():
    x = _x(2, 3, jnp.float64)
    # Max pooling with a dilated window and "SAME" padding, against lax: the
    # window spans 5 cells, so 9 -> 5 outputs needs 4 cells, 8 -> 4 needs 3.
    y = jax.vmap(jqx.MaxPool2d(3, 2, "SAME", dilation=2))(x)
    ref = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2),
                            ((0, 0), (0, 0), (2, 2), (1, 2)),
                            window_dilation=(1, 1, 2, 2))
    assert_close(y, ref)
    # count_include_pad=False divides by the input cells in each window.
    ones = jnp.ones_like(x)
    ref_pool = eqx.nn.AvgPool2d(3, 2, 1)
    expected = jax.vmap(ref_pool)(x) / jax.vmap(ref_pool)(ones)
    ours = jqx.AvgPool2d(3, 2, 1, count_include_pad=False)
    assert_close(jax.vmap(ours)(x), expected)


def test_from_equinox_converts_a_model():
    keys = jax.random.split(KEY, 4)
    model = {
        "features": eqx.nn.Sequential([
            eqx.nn.Conv2d(3, 8, 3, padding=1, padding_mode="REFLECT", key=keys[0]),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.MaxPool2d(2, 2),
            eqx.nn.Conv(2, 8, 8, 3, groups=2, padding="SAME", key=keys[1]),
            eqx.nn.AvgPool2d(2, 1, 1, use_ceil=True),
            eqx.nn.ConvTranspose2d(8, 4, 3, 2, 1, 1, key=keys[2]),
        ]),
        "other": [eqx.nn.Pool(jnp.inf, lax.min, 2, 2), jnp.ones(3)],
    }
    ours = jqx.from_equinox(model, algorithm="taps")
    kinds = [type(layer) for layer in ours["features"].layers]
    assert kinds == [jqx.Conv2d, eqx.nn.Lambda, jqx.MaxPool2d, jqx.Conv,
                     jqx.AvgPool2d, jqx.ConvTranspose2d]
    assert ours["features"].layers[0].algorithm == "taps"
    assert ours["other"][0] is model["other"][0]  # another reduction: untouched

    def run(m, x):
        return jax.vmap(m["features"])(x)

    x = jax.random.normal(jax.random.key(1), (2, 3, 12, 12))
    assert_close(eqx.filter_jit(run)(ours, x), run(model, x))
    g = eqx.filter_grad(lambda m: jnp.sum(jnp.sin(run(m, x))))
    g_ours, g_ref = g(ours), g(model)
    for i in (0, 3, 5):
        for name in ("weight", "bias"):
            assert_close(getattr(g_ours["features"].layers[i], name),
                         getattr(g_ref["features"].layers[i], name))


@functools.cache  # built once: eqx.nn's eager initialisation compiles per shape
def _convertible_model():
    keys = jax.random.split(KEY, 6)
    return eqx.nn.Sequential([
        eqx.nn.Conv2d(3, 8, 3, padding=1, padding_mode="REFLECT", key=keys[0]),
        eqx.nn.Lambda(jax.nn.relu),
        eqx.nn.MaxPool2d(2, 2),
        eqx.nn.Conv(2, 8, 8, (3, 1), groups=2, padding="SAME", use_bias=False,
                    key=keys[1]),
        eqx.nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1, key=keys[2]),
        eqx.nn.ConvTranspose(2, 6, 4, 3, padding="SAME", padding_mode="CIRCULAR",
                             use_bias=False, key=keys[3]),
        eqx.nn.AvgPool2d(2, 1, 1, use_ceil=True),
        eqx.nn.Conv2d(4, 2, 1, dilation=2, key=keys[4]),
    ])


def _array_leaves(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def test_from_equinox_keeps_the_very_arrays():
    model = _convertible_model()
    ours = jqx.from_equinox(model)
    for mine, theirs in zip(ours.layers, model.layers):
        if isinstance(theirs, (eqx.nn.Conv, eqx.nn.ConvTranspose)):
            assert mine.weight is theirs.weight
            assert mine.bias is theirs.bias  # None without a bias
    mine, theirs = _array_leaves(ours), _array_leaves(model)
    assert len(mine) == len(theirs) == 8
    assert all(a is b for a, b in zip(mine, theirs))
    x = jax.random.normal(jax.random.key(1), (2, 3, 10, 10))
    run = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
    assert_close(run(ours, x), run(model, x))


def test_from_equinox_keeps_the_arrays_of_the_benchmark_unet():
    from jaxconv import _bench_eqx

    # the benchmarked sizes, built abstractly: conversion takes any leaves
    model = eqx.filter_eval_shape(_bench_eqx.build, **{
        k: _bench_eqx.CONFIG[k] for k in ("in_channels", "channels", "groups",
                                          "heads")})
    ours = jqx.from_equinox(model, algorithm="taps")
    def conv(m):
        return isinstance(m, (jqx.Conv, jqx.ConvTranspose))

    n_conv = sum(map(conv, jax.tree.leaves(ours, is_leaf=conv)))
    assert n_conv == 30

    def abstract(a):
        return isinstance(a, jax.ShapeDtypeStruct)

    mine, theirs = (jax.tree.leaves(m, is_leaf=abstract) for m in (ours, model))
    arrays = [(a, b) for a, b in zip(mine, theirs) if abstract(b)]
    assert len(mine) == len(theirs) and len(arrays) > 2 * n_conv
    assert all(a is b for a, b in arrays)


def test_from_equinox_computes_nothing():
    # Any computation during conversion (a random draw for placeholder
    # weights, a convolution) would be an equation of this jaxpr.
    model = _convertible_model()
    jaxpr = jax.make_jaxpr(lambda: eqx.filter(jqx.from_equinox(model), eqx.is_array))()
    assert jaxpr.eqns == []


DIRECT = [  # (class name, arguments of both classes); 4 -> 8 channels
    ("Conv1d", (4, 8, 3, 2, "SAME"), dict(padding_mode="REFLECT")),
    ("Conv2d", (4, 8, (3, 2)), dict(padding=[(1, 0), (2, 1)], groups=4,
                                    use_bias=False)),
    ("Conv3d", (4, 8, 3), dict(padding=1, dilation=(1, 2, 1),
                               padding_mode="CIRCULAR", dtype=jnp.float32)),
    ("Conv", (2, 4, 8, 3), dict(padding="SAME_LOWER")),
    ("ConvTranspose1d", (4, 8, 3, 2, 1), {}),
    ("ConvTranspose2d", (4, 8, 4), dict(stride=2, padding=1, groups=2)),
    ("ConvTranspose", (3, 4, 8, 3), dict(padding="SAME", padding_mode="CIRCULAR",
                                         use_bias=False)),
    ("MaxPool2d", (3, 2, 1), dict(use_ceil=True)),
    ("AvgPool1d", (2,), dict(padding=((1, 0),))),
]


@pytest.mark.parametrize("algorithm", ["auto", "taps"])
@pytest.mark.parametrize("name, args, kwargs", DIRECT, ids=str)
def test_from_equinox_structure_matches_direct_construction(name, args, kwargs,
                                                            algorithm):
    if "Pool" in name:
        theirs = getattr(eqx.nn, name)(*args, **kwargs)
        expected = getattr(jqx, name)(*args, **kwargs)
    else:  # the same key: the same weights
        theirs = getattr(eqx.nn, name)(*args, **kwargs, key=KEY)
        expected = getattr(jqx, name)(*args, **kwargs, algorithm=algorithm, key=KEY)
    ours = jqx.from_equinox(theirs, algorithm=algorithm)
    assert type(ours) is type(expected)
    # static fields (the configuration) are part of an eqx.Module's treedef
    assert jax.tree.structure(ours) == jax.tree.structure(expected)
    assert vars(ours).keys() == vars(expected).keys()
    for field, value in vars(expected).items():
        if not eqx.is_array(value):
            assert getattr(ours, field) == value, field
            assert type(getattr(ours, field)) is type(value), field
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(expected), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
        np.testing.assert_array_equal(a, b)


PAIRS = [(name, name) for name in (
    "Conv", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose", "ConvTranspose1d",
    "ConvTranspose2d", "ConvTranspose3d", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d")]


@pytest.mark.parametrize("ours_name, eqx_name", PAIRS, ids=str)
def test_signature_mirrors_eqx(ours_name, eqx_name):
    """eqx.nn's parameters, in order, same defaults; extras are keyword-only."""
    theirs = list(inspect.signature(getattr(eqx.nn, eqx_name)).parameters.values())
    ours = list(inspect.signature(getattr(jqx, ours_name)).parameters.values())
    positional = [p for p in ours if p.kind != p.KEYWORD_ONLY]
    assert [p.name for p in positional] == [
        p.name for p in theirs if p.kind != p.KEYWORD_ONLY]
    by_name = {p.name: p for p in ours}
    for p in theirs:
        assert by_name[p.name].kind == p.kind, p.name
        assert by_name[p.name].default == p.default, p.name
    extras = [p for p in ours if p.name not in {q.name for q in theirs}]
    assert all(p.kind == p.KEYWORD_ONLY and p.default is not p.empty
               for p in extras)


ERRORS = [  # (constructor or call, exception type, message fragment)
    (lambda: jqx.Conv2d(4, 6, 3, groups=4, key=KEY), ValueError,
     "`groups` (=4) must divide `out_channels` (=6)"),
    (lambda: jqx.Conv2d(4, 6, 3, padding="same_upper", key=KEY), ValueError,
     "`padding` (='same_upper')"),
    (lambda: jqx.Conv2d(4, 6, 3, padding_mode="mirror", key=KEY), ValueError,
     "`padding_mode` (='mirror')"),
    (lambda: jqx.Conv2d(4, 6, 3, algorithm="fastest", key=KEY), ValueError,
     "`algorithm` (='fastest')"),
    (lambda: jqx.Conv2d(4, 6, (3, 0), key=KEY), ValueError, "`kernel_size`"),
    (lambda: jqx.Conv1d(4, 6, 3, stride=1.5, key=KEY), TypeError, "`stride`"),
    (lambda: jqx.ConvTranspose2d(4, 6, 3, stride=2, output_padding=2, key=KEY),
     ValueError, "`output_padding` (=2)"),
    (lambda: jqx.ConvTranspose2d(4, 6, 3, padding_mode="REFLECT", key=KEY),
     ValueError, "`padding_mode` (='REFLECT') must be \"ZEROS\" or \"CIRCULAR\""),
    (lambda: jqx.ConvTranspose2d(4, 6, 3, padding=1, padding_mode="circular",
                                 key=KEY), ValueError, "needs padding \"SAME\""),
    (lambda: jqx.Conv2d(4, 6, 3, key=KEY)(jnp.ones((2, 4, 8, 8))), ValueError,
     "`x` (shape (2, 4, 8, 8)) must have rank 3 for Conv2d"),
    (lambda: jqx.MaxPool2d(0), ValueError, "`kernel_size` (=0)"),
    (lambda: jqx.AvgPool1d(2, padding="SOME"), ValueError, "`padding` (='SOME')"),
    (lambda: jqx.AvgPool3d(2)(jnp.ones((8, 8, 8))), ValueError,
     "must have rank 4 for AvgPool3d"),
    (lambda: jqx.from_equinox([], algorithm="bad"), ValueError, "`algorithm`"),
]


@pytest.mark.parametrize("make, exc, message", ERRORS,
                         ids=[f"{i}-{e[1].__name__}" for i, e in enumerate(ERRORS)])
def test_errors_name_the_argument(make, exc, message):
    with pytest.raises(exc) as info:
        make()
    assert message in str(info.value)


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **env},
                          timeout=300)


def test_equinox_stays_optional():
    code = (
        "import sys, jaxconv\n"
        "assert 'equinox' not in sys.modules, 'import jaxconv imported equinox'\n"
        "sys.modules['equinox'] = None  # as if it were not installed\n"
        "try:\n"
        "    import jaxconv.equinox\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "pip install equinox" in result.stdout


def test_suite_collects_without_equinox():
    # The docstring examples of jaxconv/equinox need Equinox: conftest.py skips
    # them, and this file skips itself, instead of failing to collect.
    code = (
        "import sys; sys.modules['equinox'] = None\n"
        "import pytest\n"
        "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider',\n"
        "                      'jaxconv', 'tests/test_equinox.py']))\n"
    )
    result = _python(code)
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: none
    assert "error" not in result.stdout.lower(), result.stdout
