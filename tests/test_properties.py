"""Property-based tests: random convolution problems against the jax.lax oracle.

Hypothesis draws small N-d problems (rank 1-3, random layouts given as
``dimension_numbers`` strings, strides, padding strings and explicit pairs
including negative ones, lhs and rhs dilation, feature or batch groups,
float32/float64/complex64/int8->int32) and every algorithm must agree with
``jax.lax.conv_general_dilated`` at ``Precision.HIGHEST``.

Profiles (selected with the environment variable ``JAXCONV_HYPOTHESIS_PROFILE``):

* ``ci`` (default): a bounded, derandomized run, ~25 examples per test;
* ``long``: 500 random examples per test, for hunting bugs locally.

The profiles are applied per test (``settings(parent=...)``) rather than loaded
globally, so they do not change any other test file's Hypothesis settings.
"""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, tol
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from jax import lax

from jaxconv import lax as jl

settings.register_profile(
    "jaxconv-ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    # Shrinking recompiles every candidate; a CI failure is reported unshrunk
    # (the long profile shrinks).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)
settings.register_profile(
    "jaxconv-long",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(
    "jaxconv-" + os.environ.get("JAXCONV_HYPOTHESIS_PROFILE", "ci")
)

HI = lax.Precision.HIGHEST
INEXACT_ALGORITHMS = [
    a for a in ("fft", "winograd")
    if importlib.util.find_spec(f"jaxconv.algorithms.{a}") is not None
]
EXACT_ALGORITHMS = ["direct", "patches", "taps", "auto"]
ALGORITHMS = EXACT_ALGORITHMS + INEXACT_ALGORITHMS
# Winograd F(4x4, 3x3) amplifies rounding by its transform matrices' norms
# (Lavin & Gray; Barabasz et al., arXiv 1803.10986 measure ~1e2 x direct).
WINOGRAD_AMPLIFICATION = 256
SPATIAL = "HWD"
DTYPES = {
    "float32": (np.float32, None),
    "float64": (np.float64, None),
    "complex64": (np.complex64, None),
    "int8->int32": (np.int8, np.int32),
}


def _dilated(n, d):
    return (n - 1) * d + 1 if n else 0


def _out_size(n, k, s, pad, ld, rd):
    padded = _dilated(n, ld) + pad[0] + pad[1]
    span = rd * (k - 1) + 1
    return max(0, (padded - span) // s + 1)


@st.composite
def conv_problems(draw, max_rank=3):
    """A random, valid ``conv_general_dilated`` call (arguments as a dict)."""
    nd = draw(st.integers(1, max_rank))
    letters = SPATIAL[:nd]
    lhs_spec = "".join(draw(st.permutations("NC" + letters)))
    rhs_spec = "".join(draw(st.permutations("OI" + letters)))
    out_spec = "".join(draw(st.permutations("NC" + letters)))
    max_n = {1: 9, 2: 6, 3: 4}[nd]
    max_k = {1: 4, 2: 3, 3: 2}[nd]
    spatial = draw(st.lists(st.integers(1, max_n), min_size=nd, max_size=nd))
    kernel = draw(st.lists(st.integers(1, max_k), min_size=nd, max_size=nd))
    strides = draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    rhs_dil = draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    lhs_dil = draw(st.one_of(
        st.just([1] * nd), st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
    if all(d == 1 for d in lhs_dil):
        padding = draw(st.one_of(
            st.sampled_from(["VALID", "SAME", "SAME_LOWER"]),
            st.lists(st.tuples(st.integers(-2, 3), st.integers(-2, 3)),
                     min_size=nd, max_size=nd),
        ))
    else:  # lax rejects string padding with lhs dilation
        padding = draw(st.lists(st.tuples(st.integers(-2, 3), st.integers(-2, 3)),
                                min_size=nd, max_size=nd))
    # Explicit padding must not crop more than the (dilated) input.
    if not isinstance(padding, str):
        assume(all(_dilated(n, d) + lo + hi >= 0
                   for n, d, (lo, hi) in zip(spatial, lhs_dil, padding)))
    group_kind = draw(st.sampled_from(["none", "feature", "batch"]))
    groups = 1 if group_kind == "none" else draw(st.integers(2, 3))
    fgc = groups if group_kind == "feature" else 1
    bgc = groups if group_kind == "batch" else 1
    i = draw(st.integers(1, 2))
    c = fgc * i
    o = groups * draw(st.integers(1, 2))
    n = bgc * draw(st.integers(1, 2))
    dtype_name = draw(st.sampled_from(sorted(DTYPES)))
    # jax.lax orders the spatial axes as the rhs spec lists them; strides,
    # padding and dilations follow that order.
    order = [ch for ch in rhs_spec if ch in letters]
    dims_lhs = {"N": n, "C": c, **dict(zip(order, spatial))}
    dims_rhs = {"O": o, "I": i, **dict(zip(order, kernel))}
    if isinstance(padding, str):
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, rhs_dil)]
        pairs = lax.padtype_to_pads(spatial, eff, strides, padding)
    else:
        pairs = padding
    out = [_out_size(*a)
           for a in zip(spatial, kernel, strides, pairs, lhs_dil, rhs_dil)]
    # Mostly non-empty outputs (empty ones are covered too, but rarely).
    assume(all(out) or draw(st.integers(0, 9)) == 0)
    return dict(
        lhs_shape=tuple(dims_lhs[ch] for ch in lhs_spec),
        rhs_shape=tuple(dims_rhs[ch] for ch in rhs_spec),
        window_strides=tuple(strides),
        padding=padding if isinstance(padding, str) else [tuple(p) for p in padding],
        lhs_dilation=tuple(lhs_dil),
        rhs_dilation=tuple(rhs_dil),
        dimension_numbers=(lhs_spec, rhs_spec, out_spec),
        feature_group_count=fgc,
        batch_group_count=bgc,
        dtype=dtype_name,
        seed=draw(st.integers(0, 2**16)),
    )


def _rand(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-128, 128, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        return (rng.standard_normal(shape)
                + 1j * rng.standard_normal(shape)).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _args(problem):
    dtype, pref = DTYPES[problem["dtype"]]
    rng = np.random.default_rng(problem["seed"])
    x = _rand(rng, problem["lhs_shape"], dtype)
    w = _rand(rng, problem["rhs_shape"], dtype)
    kw = {k: problem[k] for k in ("lhs_dilation", "rhs_dilation", "dimension_numbers",
                                  "feature_group_count", "batch_group_count")}
    return x, w, problem["window_strides"], problem["padding"], kw, pref


def _window_scale(x, w, rhs_spec):
    """An upper bound of every output's ``sum |x||w|`` over its window.

    Rounding errors of an exact algorithm are bounded by a few ulps of that
    sum, so it is the natural scale for the absolute tolerance:
    ``max|x| * max over output channels o of sum |w[..., o, ...]|``.
    """
    ax = np.abs(np.asarray(x, np.complex128))
    aw = np.abs(np.asarray(w, np.complex128))
    if ax.size == 0 or aw.size == 0:
        return 1.0
    o_axis = rhs_spec.index("O")
    per_o = np.moveaxis(aw, o_axis, 0).reshape(aw.shape[o_axis], -1)
    return max(1.0, float(ax.max()) * float(per_o.sum(axis=1).max()))


def _fft_tolerance(dtype, x, w, strides, padding, kw):
    """Absolute error bound for FFT convolution.

    An FFT convolution's error is not local: each output carries
    ``O(eps * log2(L))`` times the *total* mass ``sum |x| * sum |w|`` of the
    signals it was transformed with (the transform mixes every element), so the
    tolerance is that bound, with a modest constant, rather than the per-window
    bound used for exact algorithms.
    """
    eps = float(jnp.finfo(np.dtype(dtype)).eps)
    length = max(2, int(np.prod(np.asarray(x).shape)))
    mass = float(np.sum(np.abs(np.asarray(x, np.complex128)))) * float(
        np.max(np.sum(np.abs(np.asarray(w, np.complex128)))))
    return 8 * eps * np.log2(length) * mass


@settings(PROFILE)
@given(problem=conv_problems())
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conv_general_dilated_matches_lax(algorithm, problem):
    x, w, strides, padding, kw, pref = _args(problem)
    # One jit per library and example: one compile instead of op-by-op dispatch.
    expected = jax.jit(lambda a, b: lax.conv_general_dilated(
        a, b, strides, padding, precision=HI, preferred_element_type=pref, **kw))(x, w)
    actual = jax.jit(lambda a, b: jl.conv_general_dilated(
        a, b, strides, padding, precision=HI, preferred_element_type=pref,
        algorithm=algorithm, **kw))(x, w)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if expected.size == 0:
        return
    if tol(actual.dtype) == 0.0:  # int8 -> int32: exact
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))
        return
    if algorithm == "winograd":
        eps = float(jnp.finfo(actual.dtype).eps)
        scale = _window_scale(x, w, kw["dimension_numbers"][1])
        atol = WINOGRAD_AMPLIFICATION * eps * scale
        np.testing.assert_allclose(np.asarray(actual, np.complex128),
                                   np.asarray(expected, np.complex128), rtol=0,
                                   atol=atol)
        return
    if algorithm == "fft":
        atol = _fft_tolerance(actual.dtype, x, w, strides, padding, kw)
        np.testing.assert_allclose(np.asarray(actual, np.complex128),
                                   np.asarray(expected, np.complex128), rtol=0,
                                   atol=atol)
        return
    # Exact algorithms: rounding error scales with the window's sum of |x||w|.
    scale = _window_scale(x, w, kw["dimension_numbers"][1])
    assert_close(actual, expected, scale=scale)


@st.composite
def winograd_problems(draw):
    """2-D, 3x3, stride 1, undilated: where Winograd really runs (no fallback)."""
    problem = draw(conv_problems(max_rank=2).filter(
        lambda p: len(p["window_strides"]) == 2))
    spec = problem["dimension_numbers"][1]
    o, i = problem["rhs_shape"][spec.index("O")], problem["rhs_shape"][spec.index("I")]
    rhs = {"O": o, "I": i, "H": 3, "W": 3}
    problem.update(rhs_shape=tuple(rhs[ch] for ch in spec), window_strides=(1, 1),
                   rhs_dilation=(1, 1), lhs_dilation=(1, 1),
                   padding=draw(st.sampled_from(["VALID", "SAME", [(1, 1), (2, 0)]])),
                   dtype=draw(st.sampled_from(["float32", "float64", "complex64"])))
    lhs_spec = problem["dimension_numbers"][0]
    dims = dict(zip(lhs_spec, problem["lhs_shape"]))
    dims.update(H=draw(st.integers(3, 11)), W=draw(st.integers(3, 11)))
    problem["lhs_shape"] = tuple(dims[ch] for ch in lhs_spec)
    return problem


@pytest.mark.skipif("winograd" not in INEXACT_ALGORITHMS, reason="no winograd module")
@settings(PROFILE)
@given(problem=winograd_problems())
def test_winograd_3x3_matches_lax(problem):
    test_conv_general_dilated_matches_lax.hypothesis.inner_test("winograd", problem)


@settings(PROFILE, max_examples=max(5, PROFILE.max_examples // 2))
@given(problem=conv_problems(max_rank=2))
def test_vmap_over_batch_of_problems(problem):
    """jax.vmap of jaxconv equals jax.vmap of lax on a stack of problems."""
    x, w, strides, padding, kw, pref = _args(problem)
    xs = np.stack([x, x[::-1] if x.ndim else x])
    ws = np.stack([w, w])

    def f(mod):
        return lambda a, b: mod.conv_general_dilated(
            a, b, strides, padding, precision=HI, preferred_element_type=pref, **kw)

    expected = jax.jit(jax.vmap(f(lax)))(xs, ws)
    actual = jax.jit(jax.vmap(f(jl)))(xs, ws)
    assert actual.shape == expected.shape
    if expected.size and tol(actual.dtype):
        scale = _window_scale(xs, w, kw["dimension_numbers"][1])
        assert_close(actual, expected, scale=scale)
    elif expected.size:
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


# --- friendly ops (jaxconv.conv, max_pool, avg_pool) against lax oracles ------

NP_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap",
            "symmetric": "symmetric"}


def _friendly_pads(padding, spatial, window, stride, dilation):
    """The (lo, hi) pairs SPEC section 2 assigns to ``padding`` (oracle side)."""
    nd = len(spatial)
    if isinstance(padding, str):
        p = padding.upper()
        eff = [d * (k - 1) + 1 for k, d in zip(window, dilation)]
        if p in ("VALID", "SAME", "SAME_LOWER"):
            return [tuple(q) for q in lax.padtype_to_pads(spatial, eff, stride, p)]
        if p == "FULL":
            return [(e - 1, e - 1) for e in eff]
        if p == "CAUSAL":
            return [(e - 1, 0) for e in eff]
        raise AssertionError(padding)
    if isinstance(padding, int):
        return [(padding, padding)] * nd
    return [tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in padding]


@st.composite
def friendly_conv_problems(draw):
    nd = draw(st.integers(1, 2))
    max_n = {1: 9, 2: 6}[nd]
    spatial = draw(st.lists(st.integers(2, max_n), min_size=nd, max_size=nd))
    kernel = draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    stride = draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    dilation = draw(st.lists(st.integers(1, 2), min_size=nd, max_size=nd))
    mode = draw(st.sampled_from(["zeros", "zeros", *NP_MODES]))
    small_pairs = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                           min_size=nd, max_size=nd)
    if mode == "zeros":
        padding = draw(st.one_of(
            st.sampled_from(["VALID", "SAME", "same", "SAME_LOWER", "FULL",
                             "causal"]),
            st.integers(0, 2),
            st.lists(st.integers(0, 2), min_size=nd, max_size=nd),
            st.lists(st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
                     min_size=nd, max_size=nd),
        ))
    else:
        padding = draw(st.one_of(st.integers(0, 2), small_pairs))
    pads = _friendly_pads(padding, spatial, kernel, stride, dilation)
    if mode == "reflect":  # NumPy/PyTorch: reflect padding must be < the size
        assume(all(max(p) < n for p, n in zip(pads, spatial)))
    if mode in ("circular", "symmetric"):
        assume(all(max(p) <= n for p, n in zip(pads, spatial)))
    assume(all(n + lo + hi >= d * (k - 1) + 1 for n, (lo, hi), k, d
               in zip(spatial, pads, kernel, dilation)))
    groups = draw(st.integers(1, 3))
    return dict(
        nd=nd, spatial=tuple(spatial), kernel=tuple(kernel), stride=tuple(stride),
        dilation=tuple(dilation), padding=padding, pads=pads, padding_mode=mode,
        groups=groups, cin=groups * draw(st.integers(1, 2)),
        cout=groups * draw(st.integers(1, 2)),
        batch=tuple(draw(st.lists(st.integers(1, 2), min_size=0, max_size=2))),
        channels_first=draw(st.booleans()),
        dtype=draw(st.sampled_from(["float32", "float64", "complex64"])),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(PROFILE)
@given(problem=friendly_conv_problems())
def test_friendly_conv_matches_lax(problem):
    import jaxconv

    p = problem
    nd, dtype = p["nd"], DTYPES[p["dtype"]][0]
    rng = np.random.default_rng(p["seed"])
    # Canonical (channels-last) data; the oracle works on it.
    x = _rand(rng, (*p["batch"], *p["spatial"], p["cin"]), dtype)
    w = _rand(rng, (*p["kernel"], p["cin"] // p["groups"], p["cout"]), dtype)
    xf = x.reshape(-1, *x.shape[len(p["batch"]):])
    if p["padding_mode"] == "zeros":
        pads = p["pads"]
    else:
        xf = np.pad(xf, [(0, 0), *p["pads"], (0, 0)], mode=NP_MODES[p["padding_mode"]])
        pads = [(0, 0)] * nd
    dn = ("N" + SPATIAL[:nd] + "C", SPATIAL[:nd] + "IO", "N" + SPATIAL[:nd] + "C")
    expected = lax.conv_general_dilated(
        xf, w, p["stride"], pads, rhs_dilation=p["dilation"], dimension_numbers=dn,
        feature_group_count=p["groups"], precision=HI)
    expected = np.asarray(expected).reshape(*p["batch"], *expected.shape[1:])
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
              groups=p["groups"], padding_mode=p["padding_mode"], precision=HI)
    if p["channels_first"]:
        nb = len(p["batch"])
        to_first = (*range(nb), x.ndim - 1, *range(nb, x.ndim - 1))
        wt = np.transpose(w, (nd + 1, nd, *range(nd)))  # (O, I, *K)
        actual = jax.jit(lambda a, b: jaxconv.conv(
            a, b, data_format="channels_first", **kw))(np.transpose(x, to_first), wt)
        actual = np.moveaxis(np.asarray(actual), nb, -1)
    else:
        actual = np.asarray(jax.jit(lambda a, b: jaxconv.conv(a, b, **kw))(x, w))
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    per_o = np.abs(w.astype(np.complex128)).reshape(-1, w.shape[-1]).sum(0).max()
    scale = max(1.0, float(np.abs(x.astype(np.complex128)).max()) * float(per_o))
    assert_close(actual, expected, scale=scale)


@st.composite
def pool_problems(draw):
    nd = draw(st.integers(1, 3))
    max_n = {1: 10, 2: 7, 3: 5}[nd]
    spatial = draw(st.lists(st.integers(1, max_n), min_size=nd, max_size=nd))
    window = draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    stride = draw(st.one_of(st.none(),
                            st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
    padding = draw(st.one_of(
        st.sampled_from(["VALID", "SAME"]),
        st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)),
                 min_size=nd, max_size=nd)))
    strides = tuple(window) if stride is None else tuple(stride)
    pads = _friendly_pads(padding, spatial, window, strides, [1] * nd)
    assume(all(n + lo + hi >= k for n, (lo, hi), k in zip(spatial, pads, window)))
    return dict(spatial=tuple(spatial), window=tuple(window), stride=stride,
                strides=strides, padding=padding, pads=pads,
                channels=draw(st.integers(1, 3)),
                count_include_pad=draw(st.booleans()),
                channels_first=draw(st.booleans()),
                dtype=draw(st.sampled_from(["float32", "float64"])),
                seed=draw(st.integers(0, 2**16)))


@settings(PROFILE)
@given(problem=pool_problems(), op=st.sampled_from(["max_pool", "avg_pool"]))
def test_friendly_pools_match_reduce_window(problem, op):
    import jaxconv

    p = problem
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal((2, *p["spatial"], p["channels"])).astype(p["dtype"])
    dims = (1, *p["window"], 1)
    strides = (1, *p["strides"], 1)
    pads = [(0, 0), *p["pads"], (0, 0)]
    if op == "max_pool":
        expected = lax.reduce_window(x, -np.inf, lax.max, dims, strides, pads)
        kw = {}
    else:
        total = lax.reduce_window(x, 0.0, lax.add, dims, strides, pads)
        if p["count_include_pad"]:
            count = float(np.prod(p["window"]))
        else:
            count = lax.reduce_window(np.ones_like(x), 0.0, lax.add, dims, strides,
                                      pads)
        expected = total / count
        kw = dict(count_include_pad=p["count_include_pad"])
    kw.update(stride=p["stride"], padding=p["padding"])
    fn = getattr(jaxconv, op)
    if p["channels_first"]:
        actual = fn(np.moveaxis(x, -1, 1), p["window"], data_format="channels_first",
                    **kw)
        actual = np.moveaxis(np.asarray(actual), 1, -1)
    else:
        actual = np.asarray(fn(x, p["window"], **kw))
    assert actual.shape == expected.shape
    assert actual.dtype == x.dtype
    assert_close(actual, expected)
