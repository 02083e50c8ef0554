"""The row scan behind depthwise and grouped kernel gradients (``rowscan.py``).

``rowscan(x, w)`` is the grouped convolution itself, written as a scan over
output rows (one example per step for a batch, the whole batch per step for a
single example); it is checked against ``jax.lax`` on the value and on the
transpose w.r.t. ``w`` (the kernel gradient it exists for), for 1 and several
examples, strides, dilations, 2-D and 3-D, and grouped kernels with several
input channels per group.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax

from jaxconv.algorithms.rowscan import rowscan

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


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-s{c[2]}")
def test_rowscan_value_and_kernel_gradient(case):
    x_shape, w_shape, stride, dilation, groups = case
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape, jnp.float32)
    w = jax.random.normal(kw, w_shape, jnp.float32)
    f = jax.jit(lambda w: rowscan(x, w, stride, dilation, groups, jnp.float32))
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
    the output without a transpose); a single example, the whole row."""
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
