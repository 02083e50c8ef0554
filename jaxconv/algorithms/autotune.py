"""Opt-in autotuning (``algorithm="autotune"``): time the candidates once, cache.

``"auto"`` picks a formulation from static shapes by a rule measured on
2-core CPUs (``plan.choose``).  On another machine — more cores,
a GPU, a different cache size — another formulation can be faster.  With
``algorithm="autotune"`` the first trace of a canonical problem (shapes,
dtypes, stride, dilation, groups, padding) on a backend compiles every
exact formulation that applies to it (``plan.candidates``), times each on
random data of that shape (medians of interleaved runs, outside the trace),
and keeps the fastest.  The choice is cached in memory and on disk, so the
timing happens once per problem and machine:

* the cache file is ``$JAXCONV_CACHE_DIR/autotune.json`` (default
  ``$XDG_CACHE_HOME/jaxconv``, else ``~/.cache/jaxconv``);
  ``JAXCONV_CACHE_DIR=""`` keeps it in memory only;
* an entry's key holds the problem, the profile, the precision, and the
  machine: jaxconv, jax and jaxlib versions, platform and CPU model (or
  device kind), so a shared home never reuses another machine's choice;
* writes are atomic (a temporary file in the same directory, then
  ``os.replace``) and the read-merge-write runs under a file lock, so
  concurrent processes never see half a file nor drop each other's entries;
* in a multi-process run (``jax.process_count() > 1``) every process uses
  the ``"auto"`` plan, with a warning, so that all compile the same program;
* a cache that cannot be read or parsed is ignored with a ``RuntimeWarning``
  (and rewritten on the next choice); an unwritable directory only warns;
* what is timed and picked is logged (``logging.getLogger("jaxconv")``,
  level INFO), and a progress bar shows the compiles on a terminal.

The candidates are what ``"auto"`` may run: the exact formulations, and for
the longest 1-D depthwise kernels the FFT product behind its finiteness
guard (never the unguarded FFT or Winograd), so NaN/Inf stay local exactly
as with ``"auto"``.  Transposed (lhs-dilated) problems use
the ``"auto"`` sub-pixel plan.  Tuning costs compile time on the first call
of each new shape (about a second per candidate on a 2-core CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from types import ModuleType

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from .._progress import progress
from .plan import Plan, candidates, execute
from .plan import choose as choose_auto
from .problem import Problem
from .profile import Profile

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # not POSIX: writes stay atomic, concurrent merges may race
    fcntl = None

CACHE_VERSION = 2
LOG = logging.getLogger("jaxconv")
REPEATS = 7
_MEMORY: dict[str, str] = {}
_WARNED: list[bool] = []


def cache_path() -> str | None:
    """The cache file, or None when ``JAXCONV_CACHE_DIR`` is set to ``""``.

    ``$JAXCONV_CACHE_DIR/autotune.json``, else
    ``$XDG_CACHE_HOME/jaxconv/autotune.json``, else
    ``~/.cache/jaxconv/autotune.json``.
    """
    root = os.environ.get("JAXCONV_CACHE_DIR")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "jaxconv")
    if not root:
        return None
    return os.path.join(root, "autotune.json")


@functools.cache
def machine() -> tuple[str, ...]:
    """What a timing depends on besides the problem: the versions of jaxconv,
    jax and jaxlib, the platform and the processor (CPU model, or the
    accelerator's device kind)."""
    try:
        version = importlib.metadata.version("jaxconv")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", "") or ""
    if device.platform == "cpu":
        kind = _cpu_model() or kind
    return (version, jax.__version__, jaxlib.__version__, device.platform, kind)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _key(problem: Problem, profile: Profile, precision) -> str:
    return json.dumps([
        CACHE_VERSION, *machine(), profile.name, str(precision), *(
            list(v) if isinstance(v, tuple) else v
            for v in dataclasses.astuple(problem)),
    ])


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on ``path + ".lock"`` (POSIX ``flock``; elsewhere
    none) around a read-modify-write of the cache."""
    if fcntl is None:
        yield
        return
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
        with _locked(path):  # no other writer between the read and the replace
            choices = _load(path)  # merge with what other processes wrote
            choices[key] = choice
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".autotune-",
                                       suffix=".json")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"version": CACHE_VERSION, "choices": choices}, f,
                              indent=0, sort_keys=True)
                os.replace(tmp, path)  # atomic: readers see the old or the new
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except OSError as e:
        warnings.warn(f"jaxconv: could not write the autotune cache {path!r} ({e}).",
                      RuntimeWarning, stacklevel=4)


def _time(fns, args) -> dict[str, float]:
    compiled = {}
    for name in progress(list(fns), "autotune", label=str):
        compiled[name] = jax.jit(fns[name]).lower(*args).compile()
        jax.block_until_ready(compiled[name](*args))  # warm up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(REPEATS):
        for name, c in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(c(*args))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def choose(problem: Problem, profile: Profile, precision) -> Plan:
    """The fastest exact plan for ``problem`` (cached by formulation name).

    Only shapes and dtypes are used (the operands may be tracers): the
    timing runs on random arrays, eagerly, outside any trace.
    """
    plans = {p.formulation: p for p in candidates(problem, profile)}
    if jax.process_count() > 1:
        # Each process would time (and might pick) differently, and the SPMD
        # programs of a multi-process run must be the same: "auto" instead.
        if not _WARNED:
            _WARNED.append(True)
            warnings.warn("jaxconv: algorithm='autotune' uses the 'auto' plan in "
                          "a multi-process run (every process must compile the "
                          "same program).", RuntimeWarning, stacklevel=4)
        auto = choose_auto(problem, profile)
        return dataclasses.replace(plans[auto[0]], reason="autotune in a "
                                   f"multi-process run: {auto[1]}")
    key = _key(problem, profile, precision)
    choice = _MEMORY.get(key)
    path = cache_path()
    if choice is None and path is not None:
        choice = _load(path).get(key)
    if choice not in plans:
        if len(plans) == 1:
            choice = next(iter(plans))
        else:
            fns = {name: (lambda a, b, plan=plan: execute(a, b, plan, precision))
                   for name, plan in plans.items()}
            with jax.ensure_compile_time_eval():
                rng = np.random.default_rng(0)
                args = (jnp.asarray(rng.standard_normal(problem.x_shape),
                                    problem.dtype),
                        jnp.asarray(rng.standard_normal(problem.w_shape),
                                    problem.w_dtype))
                LOG.info("autotune: timing %s for %s", ", ".join(fns),
                         problem.describe())
                times = _time(fns, args)
            choice = min(times, key=times.get)
            LOG.info("autotune: picked %s (%s)", choice, ", ".join(
                f"{name} {t * 1e3:.3g} ms" for name, t in sorted(
                    times.items(), key=lambda item: item[1])))
        if path is not None:
            _store(path, key, choice)
    _MEMORY[key] = choice
    chosen = plans[choice]
    return dataclasses.replace(chosen, reason=(
        f"autotuned: fastest of {', '.join(plans)}" if len(plans) > 1
        else f"autotune: the only exact formulation ({chosen.reason})"))
