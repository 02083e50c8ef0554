"""``algorithm="xla"``: XLA's own convolution, the one explicit escape hatch.

For export to tools that need a convolution op, A/B comparisons, or a layer
where the platform's library (cuDNN, oneDNN) is preferred.  ``"auto"`` and
``"autotune"`` never choose it; nothing else in jaxconv calls it.
"""

from __future__ import annotations

from jax import lax


def run(x, w, *, stride, padding, lhs_dilation, rhs_dilation, feature_group_count,
        batch_group_count, precision, preferred_element_type):
    """``lax.conv_general_dilated`` on the canonical layout.

    ``x (N, *S, C)``, ``w (*K, I, O)``; the other arguments as in
    ``jax.lax.conv_general_dilated``.
    """
    nd = w.ndim - 2
    spatial = tuple(range(1, nd + 1))
    dn = lax.ConvDimensionNumbers(lhs_spec=(0, nd + 1, *spatial),
                                  rhs_spec=(nd + 1, nd, *range(nd)),
                                  out_spec=(0, nd + 1, *spatial))
    return lax.conv_general_dilated(
        x, w, tuple(stride), tuple(tuple(p) for p in padding),
        lhs_dilation=tuple(lhs_dilation), rhs_dilation=tuple(rhs_dilation),
        dimension_numbers=dn, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
