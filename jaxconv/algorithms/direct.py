"""The textbook picture: slide the window, multiply elementwise, sum.

``one_map`` computes one output feature map of one image with a ``lax``
loop over output positions: at each position it cuts the (dilated) window out
of the input, multiplies it by the kernel of one output channel and sums.
``jax.vmap`` then lifts it over the output channels of each group, over the
groups and over the batch.  It is slow — one small reduction per output
element — and exists as the readable reference every fast path is tested
against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._common import out_spatial


def conv_direct(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Sliding-window convolution on the canonical problem."""
    del precision  # elementwise products in acc_dtype: no matmul precision knob
    kernel = w.shape[:-2]
    nd = len(kernel)
    out = out_spatial(x.shape, kernel, stride, dilation)
    n, c = x.shape[0], x.shape[-1]
    i, o = w.shape[-2:]
    m = o // groups
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    dil = tuple(slice(None, None, d) for d in dilation)
    n_out = int(np.prod(out, dtype=np.int64))
    # Row-major strides of the output grid, to turn a flat index into a position.
    grid = np.cumprod((1,) + out[::-1][:-1])[::-1] if nd else np.zeros(0, np.int64)

    def one_map(image, kern):
        """image: (*P, I) one image's channels of one group; kern: (*K, I)."""
        image = image.astype(acc_dtype)
        kern = kern.astype(acc_dtype)

        def body(flat, acc):
            pos = [(flat // int(g)) % o_ for g, o_ in zip(grid, out)]
            start = [p * s for p, s in zip(pos, stride)] + [0]
            window = lax.dynamic_slice(image, start, (*span, i))[dil]
            return acc.at[flat].set(jnp.sum(window * kern, dtype=acc_dtype))

        acc = jnp.zeros((n_out,), acc_dtype)
        return lax.fori_loop(0, n_out, body, acc).reshape(out)

    xg = x.reshape(n, *x.shape[1:-1], groups, i)   # (N, *P, G, I)
    wg = w.reshape(*kernel, i, groups, m)          # (*K, I, G, M)
    per_m = jax.vmap(one_map, in_axes=(None, -1))  # over channel multiplier
    per_g = jax.vmap(per_m, in_axes=(-2, -2))      # over groups
    per_n = jax.vmap(per_g, in_axes=(0, None))     # over the batch
    res = per_n(xg, wg)                            # (N, G, M, *out)
    res = res.reshape(n, o, *out)
    del c
    return jnp.moveaxis(res, 1, -1)
