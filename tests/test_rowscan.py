"""The row scan behind depthwise and grouped kernel gradients (``rowscan.py``).

``rowscan(x, w)`` is the grouped convolution itself, written as a scan over
output rows (one example per step for a batch, the whole batch per step for a
single example); it is checked against ``jax.lax`` on the value and on the
transpose w.r.t. ``w`` (the kernel gradient it exists for), for 1 and several
examples, strides, dilations, 2-D and 3-D, and grouped kernels with several
input channels per group, whole rows and rows in chunks of columns; the
chunk width the plan picks (``row_width``) is checked by hand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax
from jax.extend.core import subjaxprs

import jaxconv
from jaxconv import lax as jl
from jaxconv.algorithms import plan as planning
from jaxconv.algorithms.problem import Problem
from jaxconv.algorithms.rowscan import row_width, rowscan

HI = lax.Precision.HIGHEST

# (x shape N,*S,C (already padded), w shape *K,I,O, stride, dilation, groups)
CASES = [
    ((1, 9, 8, 4), (3, 3, 1, 4), (1, 1), (1, 1), 4),
    ((3, 9, 8, 4), (3, 3, 1, 8), (1, 1), (1, 1), 4),
    ((3, 11, 10, 4), (3, 2, 1, 4), (2, 3), (2, 1), 4),
    ((2, 9, 7, 6), (3, 3, 2, 6), (1, 2), (1, 1), 3),
    ((2, 5, 6, 7, 2), (2, 3, 3, 1, 2), (1, 1, 2), (2, 1, 1), 2),
]


def _lax_conv(x, w, stride, dilation, groups):
    nd = x.ndim - 2
    spatial = "".join("DHW"[3 - nd:])
    dn = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    return lax.conv_general_dilated(x, w, stride, "VALID", rhs_dilation=dilation,
                                    dimension_numbers=dn, feature_group_count=groups,
                                    precision=HI)


def _out(case):
    x_shape, w_shape, stride, dilation, _ = case
    return tuple((n - d * (k - 1) - 1) // s + 1 for n, k, s, d in
                 zip(x_shape[1:-1], w_shape[:-2], stride, dilation))


# Every case with whole rows (None), and with every proper divisor of its
# output width as the chunk.
WIDTHS = [(c, wc) for c in CASES
          for wc in [None] + [d for d in range(1, _out(c)[1]) if _out(c)[1] % d == 0]]


@pytest.mark.parametrize("case,width", WIDTHS,
                         ids=lambda c: f"w{c}" if not isinstance(c, tuple)
                         else f"{c[0]}-{c[1]}-s{c[2]}")
def test_rowscan_value_and_kernel_gradient(case, width):
    x_shape, w_shape, stride, dilation, groups = case
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape, jnp.float32)
    w = jax.random.normal(kw, w_shape, jnp.float32)
    f = jax.jit(lambda w: rowscan(x, w, stride, dilation, groups, jnp.float32, width))
    want = _lax_conv(x, w, stride, dilation, groups)
    got = f(w)
    assert got.shape == want.shape
    assert_close(got, want)
    ct = jax.random.normal(kc, want.shape, jnp.float32)
    (gw,) = jax.vjp(f, w)[1](ct)
    (gw_lax,) = jax.vjp(lambda w: _lax_conv(x, w, stride, dilation, groups), w)[1](ct)
    assert_close(gw, gw_lax)


def test_rowscan_one_example_per_step():
    """A batch runs one example's row per step (its stacked rows reshape to
    the output without a transpose); a single example, the whole row, its
    rows stacked the same way."""
    x = jnp.ones((3, 6, 5, 2))
    w = jnp.ones((3, 3, 1, 2))
    jaxpr = jax.make_jaxpr(lambda w: rowscan(x, w, (1, 1), (1, 1), 2, jnp.float32))(w)
    (scan,) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    assert scan.params["length"] == 3 * 4
    jaxpr1 = jax.make_jaxpr(lambda w: rowscan(x[:1], w, (1, 1), (1, 1), 2,
                                              jnp.float32))(w)
    (scan1,) = [e for e in jaxpr1.eqns if e.primitive.name == "scan"]
    assert scan1.params["length"] == 4
    np.testing.assert_allclose(
        rowscan(x, w, (1, 1), (1, 1), 2, jnp.float32), np.full((3, 4, 3, 2), 9.0))
    # A single example's rows stack without an example axis either: neither
    # the value nor its transpose (the kernel gradient) moves an axis.
    ct = jnp.ones((1, 4, 3, 2), jnp.float32)
    for f in (lambda w: rowscan(x[:1], w, (1, 1), (1, 1), 2, jnp.float32),
              lambda w: jax.vjp(lambda w: rowscan(x[:1], w, (1, 1), (1, 1), 2,
                                                  jnp.float32), w)[1](ct)):
        assert "transpose" not in _primitives(jax.make_jaxpr(f)(w).jaxpr), f


def _primitives(jaxpr):
    """Every primitive name in ``jaxpr`` and its sub-jaxprs."""
    names = [e.primitive.name for e in jaxpr.eqns]
    for sub in subjaxprs(jaxpr):
        names += _primitives(sub)
    return names


def test_rowscan_kernel_gradient_stacks_the_weight_rows_once():
    """The kernel gradient gathers its ``T * I`` accumulated weight rows with
    one concatenate; a pad of each into the whole kernel, summed (what
    indexing the kernel per tap and channel transposes to), cost 3.3 of the
    23 ms of a per-example group32 gradient."""
    x = jnp.ones((2, 6, 5, 8))
    w = jnp.ones((3, 3, 2, 8))  # 4 groups of 2 input channels: 18 weight rows
    ct = jnp.ones((2, 4, 3, 8), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda w: jax.vjp(
        lambda w: rowscan(x, w, (1, 1), (1, 1), 4, jnp.float32), w)[1](ct))(w)
    names = _primitives(jaxpr.jaxpr)
    assert names.count("pad") == 0, names
    assert names.count("concatenate") == 1, names


def test_rowscan_chunks_of_a_row():
    """With ``width`` columns per step the scan runs ``out[1] / width`` steps
    per row, for a batch and for one example, and a width that does not
    divide the row is refused."""
    x = jnp.ones((3, 6, 8, 2))
    w = jnp.ones((3, 3, 1, 2))  # out (4, 6)
    for xs, rows in ((x, 3 * 4), (x[:1], 4)):
        jaxpr = jax.make_jaxpr(lambda w, xs=xs: rowscan(xs, w, (1, 1), (1, 1), 2,
                                                        jnp.float32, 2))(w)
        (scan,) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
        assert scan.params["length"] == rows * 3
    with pytest.raises(ValueError, match="must divide the output width 6"):
        rowscan(x, w, (1, 1), (1, 1), 2, jnp.float32, 4)


def test_row_width_by_hand():
    # 72 accumulators (9 taps x 8 input channels) of 2048 channels, float32:
    # 589824 bytes a column; 2 MiB hold 3, the widest divisor of 28 is 2.
    assert row_width((28, 28), 9, 8, 2048, 4, 2 << 20) == 2
    assert row_width((28, 28), 9, 8, 2048, 4, 28 * 589824) == 28
    assert row_width((28, 28), 9, 8, 2048, 4, 14 * 589824 - 1) == 7
    assert row_width((28, 28), 9, 8, 2048, 4, 1) == 1  # not even one column
    assert row_width((5, 7), 9, 1, 64, 4, 6 * 9 * 64 * 4) == 1  # 7 is prime
    # 3-D: a column is a (depth, O) plane
    assert row_width((4, 6, 5), 27, 1, 16, 8, 3 * 27 * 5 * 16 * 8) == 3


def _problem(xs, ws, groups):
    f32 = jnp.float32
    return Problem.of(jax.ShapeDtypeStruct(xs, f32), jax.ShapeDtypeStruct(ws, f32),
                      stride=(1, 1), dilation=(1, 1), groups=groups,
                      pads=((1, 1), (1, 1)))


def test_plan_picks_the_row_width():
    """The plan's ``row_width``: whole rows for a batched ResNeXt-style
    layer, chunks for its per-example gradient's folded problem (the examples
    as groups of one image), per the profile's carry budget."""
    cpu = jaxconv.get_profile("cpu")
    batched = planning.plan(_problem((8, 28, 28, 256), (3, 3, 8, 256), 32), cpu)
    assert batched.formulation == "grouped" and batched.param("row_width") == 28
    folded = planning.plan(_problem((1, 28, 28, 2048), (3, 3, 8, 2048), 256), cpu)
    assert folded.param("kernel_grad") == "rowscan"
    assert folded.param("row_width") == 2
    wide = planning.plan(_problem((1, 28, 28, 2048), (3, 3, 8, 2048), 256),
                         cpu.replace(rowscan_carry_bytes=1 << 30))
    assert wide.param("row_width") == 28
    # depthwise, 9 accumulators of 4096 channels: 147456 bytes a column
    dw = planning.plan(_problem((1, 28, 28, 4096), (3, 3, 1, 4096), 4096), cpu)
    assert dw.formulation == "depthwise" and dw.param("row_width") == 14


@pytest.mark.parametrize("groups,i", [(6, 1), (3, 2)], ids=["depthwise", "grouped"])
def test_chunked_rows_through_the_public_api(groups, i):
    """A carry budget below one row: the gradients through
    ``jaxconv.lax`` (and through ``vmap``, per-example) equal lax's."""
    kx, kw = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (3, 9, 10, 6), jnp.float32)
    w = jax.random.normal(kw, (3, 3, i, 6), jnp.float32)

    def f(mod, x, w):
        return mod.conv_general_dilated(
            x, w, (1, 1), "SAME", feature_group_count=groups,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HI)

    def loss(mod):
        return lambda x, w: jnp.sum(jnp.sin(f(mod, x, w)))

    small = jaxconv.get_profile("cpu").replace(rowscan_carry_bytes=1)
    with jaxconv.use_profile(small):
        (row,) = jaxconv.explain(lambda x, w: f(jl, x, w), x, w)
        assert row.plan.param("row_width") == 1
        got = jax.jit(jax.grad(loss(jl), (0, 1)))(x, w)
        per_example = jax.jit(jax.vmap(jax.grad(
            lambda x, w: loss(jl)(x[None], w), 1), (0, None)))(x, w)
    want = jax.grad(loss(lax), (0, 1))(x, w)
    for a, b in zip(got, want):
        assert_close(a, b)
    want_pe = jax.vmap(jax.grad(lambda x, w: loss(lax)(x[None], w), 1), (0, None))(x, w)
    assert_close(per_example, want_pe)
