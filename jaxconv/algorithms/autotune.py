"""Opt-in autotuning (``algorithm="autotune"``): time the candidates once, cache.

``"auto"`` picks a ``taps`` formulation from static shapes by a rule measured
on one 2-core CPU (``taps.taps_variant``).  On another machine — more cores,
a GPU, a different cache size — another formulation can be faster.  With
``algorithm="autotune"`` the first trace of a canonical problem (shapes,
dtypes, stride, dilation, groups, padding) on a backend compiles every
exact formulation that applies to it, times each on random data of that
shape (medians of interleaved runs, outside the trace), and keeps the
fastest.  The choice is cached in memory and on disk, so the timing happens
once per problem and machine:

* the cache file is ``$JAXCONV_CACHE_DIR/autotune.json`` (default
  ``~/.cache/jaxconv``); ``JAXCONV_CACHE_DIR=""`` keeps it in memory only;
* writes are atomic (a temporary file in the same directory, then
  ``os.replace``), so concurrent processes never see half a file;
* a cache that cannot be read or parsed is ignored with a ``RuntimeWarning``
  (and rewritten on the next choice); an unwritable directory only warns.

Only exact formulations are candidates (never FFT or Winograd), so NaN/Inf
stay local exactly as with ``"auto"``.  Transposed (lhs-dilated) problems use
the ``"auto"`` sub-pixel plan.  Tuning costs compile time on the first call
of each new shape (about a second per candidate on a 2-core CPU).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import depthwise
from . import taps as _taps
from ._common import padded_shape

CACHE_VERSION = 1
REPEATS = 7
_MEMORY: dict[str, str] = {}


def cache_path() -> str | None:
    """The cache file, or None when ``JAXCONV_CACHE_DIR`` is set to ``""``."""
    root = os.environ.get("JAXCONV_CACHE_DIR")
    if root is None:
        root = os.path.join(os.path.expanduser("~"), ".cache", "jaxconv")
    if not root:
        return None
    return os.path.join(root, "autotune.json")


def candidates(x_shape, w_shape, stride, dilation, groups) -> list[str]:
    """The ``taps`` formulations that compute this (padded) problem exactly."""
    kernel = tuple(w_shape[:-2])
    i = w_shape[-2]
    t = int(np.prod(kernel, dtype=np.int64))
    if i == 1 and groups == x_shape[-1]:
        out = ["depthwise"]
        if depthwise.toeplitz_applies(x_shape, w_shape, stride, dilation, groups):
            out.append("toeplitz")
        return out
    if t == 1:
        return ["dot"]
    if groups > 1:
        return ["grouped", "taps"] if i <= _taps.GROUPED_MAX_I else ["taps"]
    out = ["taps"]
    if t <= _taps.UNROLL_LIMIT:
        out.append("im2col")
        if all(s == 1 for s in stride):
            out.append("alltaps")
        if stride[-1] == 1 and kernel[-1] > 1:
            out += ["rows", "wide"]
        if (any(s > 1 and k > 1 for s, k in zip(stride, kernel))
                and all(d == 1 for s, d in zip(stride, dilation) if s > 1)):
            out.append("s2d")
    return out


def _key(x, w, stride, dilation, groups, pads, acc_dtype) -> str:
    device = jax.devices()[0]
    return json.dumps([
        CACHE_VERSION, device.platform, getattr(device, "device_kind", ""),
        list(x.shape), str(x.dtype), list(w.shape), str(w.dtype),
        list(stride), list(dilation), groups, [list(p) for p in pads],
        str(np.dtype(acc_dtype)),
    ])


def _load(path) -> dict[str, str]:
    try:
        with open(path) as f:
            data = json.load(f)
        if not (isinstance(data, dict) and data.get("version") == CACHE_VERSION
                and isinstance(data.get("choices"), dict)):
            raise ValueError("unexpected layout")
        return {str(k): str(v) for k, v in data["choices"].items()}
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, ValueError) as e:
        warnings.warn(f"jaxconv: ignoring the unreadable autotune cache {path!r} "
                      f"({e}); it will be rewritten.", RuntimeWarning, stacklevel=4)
        return {}


def _store(path, key, choice) -> None:
    try:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        choices = _load(path)  # merge with what other processes wrote
        choices[key] = choice
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".autotune-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": CACHE_VERSION, "choices": choices}, f,
                          indent=0, sort_keys=True)
            os.replace(tmp, path)  # atomic: readers see the old or the new file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        warnings.warn(f"jaxconv: could not write the autotune cache {path!r} ({e}).",
                      RuntimeWarning, stacklevel=4)


def _time(fns, args) -> dict[str, float]:
    compiled = {}
    for name, fn in fns.items():
        compiled[name] = jax.jit(fn).lower(*args).compile()
        jax.block_until_ready(compiled[name](*args))  # warm up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(REPEATS):
        for name, c in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(c(*args))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def choose(x, w, *, stride, dilation, groups, pads, precision, acc_dtype) -> str:
    """The fastest ``taps`` formulation for this problem (cached).

    ``x`` and ``w`` may be tracers: only their shapes and dtypes are used;
    the timing runs on random arrays, eagerly, outside any trace.
    """
    key = _key(x, w, stride, dilation, groups, pads, acc_dtype)
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_path()
    if path is not None:
        hit = _load(path).get(key)
        if hit is not None:
            _MEMORY[key] = hit
            return hit
    shape = padded_shape(x.shape, pads)
    names = candidates(shape, w.shape, stride, dilation, groups)
    if len(names) == 1:
        choice = names[0]
    else:
        kw = dict(stride=tuple(stride), dilation=tuple(dilation), groups=groups,
                  precision=precision, acc_dtype=acc_dtype, padding=pads)
        fns = {name: (lambda a, b, name=name: _taps.conv_taps(a, b, variant=name, **kw))
               for name in names}
        with jax.ensure_compile_time_eval():
            rng = np.random.default_rng(0)
            args = (jnp.asarray(rng.standard_normal(x.shape), x.dtype),
                    jnp.asarray(rng.standard_normal(w.shape), w.dtype))
            times = _time(fns, args)
        choice = min(times, key=times.get)
    _MEMORY[key] = choice
    if path is not None:
        _store(path, key, choice)
    return choice
