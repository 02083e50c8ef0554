"""Slow NumPy loop references for pooling and unfold/fold (tests only).

All references take channels-first ``(N, C, *spatial)`` float64 arrays and
explicit ``(lo, hi)`` padding; they are written from the PyTorch definitions,
one output cell at a time, and share no code with the library.
"""

import math

import numpy as np


def pool_out_size(n, k, s, lo, hi, d, ceil_mode):
    """PyTorch's pooling output length, written out independently."""
    span = d * (k - 1) + 1
    num = n + lo + hi - span
    if not ceil_mode:
        return num // s + 1
    out = -(-num // s) + 1
    if (out - 1) * s >= n + lo:
        out -= 1
    return out


def pool(x, window, stride, pads, dilation, ceil_mode, op, *, include_pad=True, p=2):
    """Windowed pooling; ``op`` in max, min, sum, avg, lp (PyTorch semantics)."""
    x = np.asarray(x)
    spatial = x.shape[2:]
    out = [
        pool_out_size(n, k, s, lo, hi, d, ceil_mode)
        for n, k, s, (lo, hi), d in zip(spatial, window, stride, pads, dilation)
    ]
    dtype = x.dtype if op in ("max", "min", "sum") else np.result_type(x, 1.0)
    y = np.zeros(x.shape[:2] + tuple(out), dtype)
    for o in np.ndindex(*out):
        cells, padded = [], 0
        for tap in np.ndindex(*window):
            pos = [
                i * s + k * d - lo
                for i, k, s, d, (lo, _) in zip(o, tap, stride, dilation, pads)
            ]
            if all(-lo <= q < n + hi for q, n, (lo, hi) in zip(pos, spatial, pads)):
                padded += 1
            if all(0 <= q < n for q, n in zip(pos, spatial)):
                cells.append(x[(slice(None), slice(None), *pos)])
        stack = np.stack(cells) if cells else np.zeros((0,) + x.shape[:2], x.dtype)
        if op == "max":
            v = stack.max(0) if cells else np.full(x.shape[:2], -np.inf)
        elif op == "min":
            v = stack.min(0) if cells else np.full(x.shape[:2], np.inf)
        elif op == "sum":
            v = stack.sum(0, dtype=x.dtype)
        elif op == "avg":
            v = stack.sum(0) / (padded if include_pad else len(cells))
        elif op == "lp":
            v = (stack**p).sum(0) / padded * math.prod(window)
            v = v ** (1.0 / p)
        else:
            raise ValueError(op)
        y[(slice(None), slice(None), *o)] = v
    return y


def adaptive_pool(x, output_size, op):
    """Adaptive avg/max pooling over PyTorch's bins."""
    x = np.asarray(x)
    spatial = x.shape[2:]
    y = np.zeros(x.shape[:2] + tuple(output_size), x.dtype)
    for o in np.ndindex(*output_size):
        box = [
            slice(math.floor(i * n / m), math.ceil((i + 1) * n / m))
            for i, n, m in zip(o, spatial, output_size)
        ]
        window = x[(slice(None), slice(None), *box)].reshape(x.shape[:2] + (-1,))
        y[(slice(None), slice(None), *o)] = (
            window.max(-1) if op == "max" else window.mean(-1)
        )
    return y


def _window_positions(spatial, kernel, stride, pads, dilation):
    out = [
        (n + lo + hi - d * (k - 1) - 1) // s + 1
        for n, k, s, (lo, hi), d in zip(spatial, kernel, stride, pads, dilation)
    ]
    return out


def unfold(x, kernel, stride, pads, dilation):
    """``(N, C*prod(k), L)`` columns, feature ``c * prod(k) + tap``."""
    x = np.asarray(x)
    n_, c_ = x.shape[:2]
    spatial = x.shape[2:]
    out = _window_positions(spatial, kernel, stride, pads, dilation)
    taps = list(np.ndindex(*kernel))
    cols = np.zeros((n_, c_ * len(taps), math.prod(out)), x.dtype)
    for col, o in enumerate(np.ndindex(*out)):
        for t, tap in enumerate(taps):
            pos = [
                i * s + k * d - lo
                for i, k, s, d, (lo, _) in zip(o, tap, stride, dilation, pads)
            ]
            if all(0 <= q < n for q, n in zip(pos, spatial)):
                for c in range(c_):
                    cols[:, c * len(taps) + t, col] = x[(slice(None), c, *pos)]
    return cols


def fold(cols, output_size, kernel, stride, pads, dilation):
    """Sum of the columns back into ``(N, C, *output_size)``."""
    cols = np.asarray(cols)
    out = _window_positions(output_size, kernel, stride, pads, dilation)
    taps = list(np.ndindex(*kernel))
    n_, c_ = cols.shape[0], cols.shape[1] // len(taps)
    y = np.zeros((n_, c_) + tuple(output_size), cols.dtype)
    for col, o in enumerate(np.ndindex(*out)):
        for t, tap in enumerate(taps):
            pos = [
                i * s + k * d - lo
                for i, k, s, d, (lo, _) in zip(o, tap, stride, dilation, pads)
            ]
            if all(0 <= q < n for q, n in zip(pos, output_size)):
                for c in range(c_):
                    y[(slice(None), c, *pos)] += cols[:, c * len(taps) + t, col]
    return y


def to_channels_last_cols(cols_cf, out, channels):
    """Channels-first columns ``(N, C*T, L)`` as channels-last ``(N, *out, T*C)``."""
    n_ = cols_cf.shape[0]
    taps = cols_cf.shape[1] // channels
    c = cols_cf.reshape(n_, channels, taps, *out)
    c = np.moveaxis(c, (1, 2), (-1, -2))  # (N, *out, T, C)
    return c.reshape(n_, *out, taps * channels)
