"""Eager calls compile once: a second call with the same shapes, dtypes and
options compiles nothing.

Compilations are counted with ``jax.monitoring``: every XLA compilation
(of a jitted function or of one primitive run op by op) records a
``/jax/core/compile/backend_compile_duration`` event.  JAX's own test
harness (``_CompileAndCheck``) makes the same check for ``jax.lax``.
"""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import pytest

import jaxconv
from jaxconv import lax as jl

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
ALGORITHMS = ["auto", "direct", "patches", "taps", "fft", "winograd", "xla"]
DTYPES = [np.float32, np.complex64]


@contextlib.contextmanager
def count_compiles():
    """Collects the names of the functions XLA compiles inside the block."""
    names: list[str] = []

    def listener(event, duration, **kwargs):
        del duration
        if event == BACKEND_COMPILE:
            names.append(str(kwargs.get("fun_name", "?")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def second_call_compiles(f, *args, **kwargs) -> list[str]:
    """Call ``f`` twice eagerly; what the second call compiled."""
    jax.block_until_ready(f(*args, **kwargs))
    with count_compiles() as names:
        jax.block_until_ready(f(*args, **kwargs))
    return names


def _rand(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def test_counter_sees_compiles():
    """The counter is live: a first call on a new shape does compile."""
    x, w = _rand((1, 2, 7, 5), np.float32), _rand((3, 2, 2, 3), np.float32)
    with count_compiles() as names:
        jax.block_until_ready(jl.conv(x, w, (1, 1), "VALID"))
    assert names
    # jax.lax's own conv compiles on its first eager call, not on its second.
    with count_compiles() as names:
        jax.block_until_ready(jax.lax.conv(x, w, (2, 1), "SAME"))
    assert names
    assert second_call_compiles(jax.lax.conv, x, w, (2, 1), "SAME") == []


# (lhs NC.., rhs OI.., dimension_numbers, strides, padding, lhs_dil, rhs_dil,
#  feature_group_count, batch_group_count): rhs is given as OI.. and
#  transposed to the layout of dimension_numbers.
LAX_CASES = {
    # complex64 of this case compiled again on its second eager call.
    "rhs_dilated_nhwc_out": ((3, 2, 9, 10), (3, 2, 4, 5), ("NCHW", "HWIO", "NHWC"),
                             (2, 1), ((10, 8), (7, 13)), None, (1, 2), 1, 1),
    "lhs_dilated": ((2, 3, 6, 5), (4, 3, 3, 2), None, (1, 1), ((2, 1), (1, -1)),
                    (2, 3), (1, 2), 1, 1),
    "lhs_dilated_strided": ((1, 4, 5, 6), (4, 2, 2, 3), ("NHWC", "OIHW", "NCHW"),
                            (2, 1), ((1, 0), (2, 2)), (2, 2), (2, 1), 2, 1),
    "winograd_shape_groups": ((2, 4, 6, 6), (6, 2, 3, 3), None, (1, 1), "SAME",
                              None, None, 2, 1),
    "batch_groups_dilated": ((4, 2, 7, 6), (4, 2, 2, 2), None, (1, 2), "VALID",
                             None, (2, 1), 1, 2),
}


def _lax_operands(case, dtype):
    lhs, rhs, dn, strides, padding, ld, rd, fgc, bgc = case
    x, w = _rand(lhs, dtype), _rand(rhs, dtype, 1)
    if dn is not None:
        lhs_spec, rhs_spec, _ = dn
        x = np.transpose(x, ["NCHW".index(c) for c in lhs_spec])
        w = np.transpose(w, ["OIHW".index(c) for c in rhs_spec])
    kw = dict(lhs_dilation=ld, rhs_dilation=rd, dimension_numbers=dn,
              feature_group_count=fgc, batch_group_count=bgc)
    return x, w, strides, padding, kw


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", LAX_CASES.values(), ids=LAX_CASES.keys())
def test_conv_general_dilated(case, algorithm, dtype):
    x, w, strides, padding, kw = _lax_operands(case, dtype)
    assert second_call_compiles(jl.conv_general_dilated, x, w, strides, padding,
                                algorithm=algorithm, **kw) == []


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conv(algorithm, dtype):
    x, w = _rand((2, 3, 9, 10), dtype), _rand((4, 3, 3, 3), dtype, 1)
    for padding in ["SAME", "VALID"]:
        assert second_call_compiles(jl.conv, x, w, (1, 2), padding,
                                    algorithm=algorithm) == []


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conv_with_general_padding(algorithm, dtype):
    x, w = _rand((2, 3, 9, 10), dtype), _rand((4, 3, 4, 3), dtype, 1)
    for strides, padding, ld, rd in [
        ((1, 1), ((3, 2), (-1, 4)), (2, 1), (1, 2)),
        ((2, 1), [(0, 1), (2, 2)], None, (2, 2)),
        ((1, 2), ((5, 5), (1, 0)), (1, 3), None),
    ]:
        assert second_call_compiles(jl.conv_with_general_padding, x, w, strides,
                                    padding, ld, rd, algorithm=algorithm) == []


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_conv_transpose(transpose_kernel, algorithm, dtype):
    x, w = _rand((2, 7, 6, 3), dtype), _rand((3, 2, 3, 4), dtype, 1)
    if transpose_kernel:
        w = np.swapaxes(w, 2, 3).copy()
    for strides, padding, rd in [((2, 2), "SAME", None), ((2, 1), "VALID", (1, 2)),
                                 ((3, 2), ((1, 2), (0, 1)), None)]:
        assert second_call_compiles(jl.conv_transpose, x, w, strides, padding,
                                    rhs_dilation=rd,
                                    transpose_kernel=transpose_kernel,
                                    algorithm=algorithm) == []


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_conv_general_dilated_patches(dtype):
    x = _rand((2, 3, 9, 10), dtype)
    for strides, padding, ld, rd, dn in [
        ((1, 1), "SAME", None, None, None),
        ((2, 1), ((2, 1), (0, -1)), (2, 1), (1, 2), ("NHWC", "OIHW", "NCHW")),
    ]:
        assert second_call_compiles(jl.conv_general_dilated_patches, x, (3, 2),
                                    strides, padding, ld, rd, dn) == []


def test_preferred_element_type_and_precision():
    x = np.ones((1, 2, 5, 5), np.int8)
    assert second_call_compiles(jl.conv, x, x[:, :, :2, :3], (1, 1), "SAME",
                                preferred_element_type=np.float32) == []
    y = _rand((1, 2, 5, 5), np.float32)
    for precision in ["highest", jax.lax.Precision.HIGH,
                      [jax.lax.Precision.HIGHEST, jax.lax.Precision.DEFAULT]]:
        assert second_call_compiles(jl.conv, y, y[:, :, :2, :3], (1, 1), "SAME",
                                    precision=precision) == []


def test_autotune(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCONV_CACHE_DIR", str(tmp_path))
    x, w = _rand((1, 3, 8, 8), np.float32), _rand((4, 3, 3, 3), np.float32, 1)
    assert second_call_compiles(jl.conv, x, w, (1, 1), "SAME",
                                algorithm="autotune") == []


# --- the friendly ops ------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_friendly_convs(algorithm, dtype):
    x = _rand((2, 9, 8, 4), dtype)
    w = _rand((3, 3, 2, 6), dtype, 1)
    calls = [
        (jaxconv.conv, (x, w), dict(stride=(2, 1), padding="SAME", dilation=(1, 2),
                                    groups=2)),
        (jaxconv.conv, (x, _rand((3, 2, 4, 4), dtype, 5)),
         dict(padding=1, padding_mode="reflect")),
        (jaxconv.conv_transpose, (x, _rand((3, 2, 4, 3), dtype, 2)),
         dict(stride=2, padding=1, output_padding=1, dilation=(2, 1))),
        (jaxconv.depthwise_conv, (x, _rand((3, 3, 1, 8), dtype, 3)),
         dict(padding="SAME")),
        (jaxconv.separable_conv, (x, _rand((3, 3, 1, 4), dtype, 3),
                                  _rand((4, 5), dtype, 4)), dict(dilation=2)),
    ]
    for f, args, kw in calls:
        assert second_call_compiles(f, *args, algorithm=algorithm, **kw) == [], f


@pytest.mark.parametrize(
    "name,args,kw",
    [
        ("max_pool", ((3, 3),), dict(stride=2, padding=1)),
        ("min_pool", ((2, 3),), dict(dilation=(2, 1))),
        ("sum_pool", ((2, 2),), dict(padding="SAME")),
        ("avg_pool", ((3, 2),), dict(stride=2, padding=1, ceil_mode=True)),
        ("lp_pool", (2.0, (2, 2)), {}),
        ("global_max_pool", (), {}),
        ("global_avg_pool", (), {}),
        ("adaptive_avg_pool", ((3, 4),), {}),
        ("adaptive_max_pool", ((4, 3),), {}),
    ],
)
def test_pooling(name, args, kw):
    x = _rand((2, 9, 8, 3), np.float32)
    f = getattr(jaxconv, name)
    assert second_call_compiles(f, x, *args, **kw) == []


def test_profile_is_part_of_the_plan():
    """A call under another profile is planned (so compiled) anew, then cached."""
    x, w = _rand((1, 3, 8, 8), np.float32), _rand((4, 3, 3, 3), np.float32, 1)
    xl, wl = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))
    other = jaxconv.get_profile("cpu").replace(unroll_limit=2)
    calls = {
        "jaxconv.lax.conv": (jl.conv, (x, w, (1, 1), "SAME")),
        "jaxconv.conv": (jaxconv.conv, (xl, wl)),
        "jaxconv.conv_transpose": (jaxconv.conv_transpose, (xl, wl)),
    }
    for name, (f, args) in calls.items():
        jax.block_until_ready(f(*args))
        with jaxconv.use_profile(other):
            with count_compiles() as names:
                jax.block_until_ready(f(*args))
            assert names, name
            assert second_call_compiles(f, *args) == [], name
