"""``algorithm="autotune"``: every candidate is exact, the choice is cached.

The autotuner times the exact ``taps`` formulations of a problem once and
keeps the fastest in memory and in a JSON file (atomic writes; an unreadable
file is ignored with a warning).  These tests check each candidate against
lax, the cache's life cycle, and that a cached choice is used without
timing anything again.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax import lax

import jaxconv
from jaxconv import lax as jl
from jaxconv.algorithms import autotune
from jaxconv.algorithms.plan import candidates, choose, execute
from jaxconv.algorithms.problem import Problem

HI = lax.Precision.HIGHEST
DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}

# (x shape, w shape, stride, padding, rhs_dilation, groups)
PROBLEMS = [
    ((1, 9, 8, 5), (3, 3, 5, 4), (1, 1), "SAME", (1, 2), 1),
    ((2, 11, 10, 6), (3, 2, 6, 4), (2, 2), "SAME", (1, 1), 1),
    ((2, 13, 7), (3, 7, 5), (1,), [(2, 1)], (2,), 1),
    ((1, 8, 8, 6), (3, 3, 2, 6), (1, 1), "SAME", (1, 1), 3),
    ((1, 9, 9, 4), (3, 3, 1, 8), (2, 1), "SAME", (1, 1), 4),
    ((1, 140, 2), (70, 1, 2), (1,), "SAME", (1,), 2),
]


def _ids(p):
    return f"{p[0]}-{p[1]}-s{p[2]}-g{p[5]}"


def _lax(p):
    xs, ws, s, pad, rd, g = p
    return lambda x, w: lax.conv_general_dilated(  # noqa: E731
        x, w, s, pad, rhs_dilation=rd, dimension_numbers=DN[len(xs) - 2],
        feature_group_count=g, precision=HI)


def _args(p, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(p[0]), rng.standard_normal(p[1])


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    # As in a new process: no traced or compiled program remembers a choice.
    jax.clear_caches()
    monkeypatch.setenv("JAXCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "_MEMORY", {})
    monkeypatch.setattr(autotune, "REPEATS", 1)


def _problem(p, dtype=jnp.float64):
    """The canonical problem of ``p`` (unpadded input, its zero padding)."""
    xs, ws, s, pad, rd, g = p
    pads = jaxconv.shapes.resolve_padding(pad, xs[1:-1], ws[:-2], stride=s,
                                          dilation=rd)
    return Problem.of(jax.ShapeDtypeStruct(xs, dtype), jax.ShapeDtypeStruct(ws, dtype),
                      stride=s, dilation=rd, groups=g, pads=pads)


def _names(problem):
    return [c.formulation for c in candidates(problem, jaxconv.get_profile("cpu"))]


@pytest.mark.parametrize("problem", PROBLEMS, ids=_ids)
def test_every_candidate_matches_lax(problem):
    canonical = _problem(problem)
    plans = candidates(canonical, jaxconv.get_profile("cpu"))
    # One applicability rule: "auto"'s choice is always a candidate.
    assert choose(canonical, jaxconv.get_profile("cpu"))[0] in _names(canonical)
    x, w = _args(problem)
    want = _lax(problem)(x, w)
    for plan in plans:
        got = jax.jit(lambda x, w, plan=plan: execute(x, w, plan, HI))(x, w)
        try:
            assert_close(got, want)
        except AssertionError as e:
            raise AssertionError(f"candidate {plan.formulation!r}: {e}") from None


def _canon(xs, ws, s, g, pad="VALID"):
    return _problem((xs, ws, s, pad, (1,) * len(s), g), jnp.float32)


def test_candidates_name_the_alternatives():
    dense = _names(_canon((1, 58, 58, 64), (3, 3, 64, 64), (1, 1), 1))
    assert set(dense) == {"taps", "im2col", "alltaps", "rows", "wide", "shifted"}
    strided = _names(_canon((1, 57, 57, 16), (3, 3, 16, 32), (2, 2), 1))
    assert "s2d" in strided and "alltaps" not in strided
    assert _names(_canon((1, 9, 9, 4), (3, 3, 1, 4), (1, 1), 4)) == ["depthwise"]
    assert _names(_canon((1, 9, 9, 4), (1, 1, 4, 4), (1, 1), 1)) == ["dot"]


@pytest.mark.parametrize("problem", PROBLEMS[:3], ids=_ids)
def test_autotune_matches_lax_and_gradients(problem):
    xs, ws, s, pad, rd, g = problem
    f = lambda x, w: jl.conv_general_dilated(  # noqa: E731
        x, w, s, pad, rhs_dilation=rd, dimension_numbers=DN[len(xs) - 2],
        feature_group_count=g, precision=HI, algorithm="autotune")
    x, w = _args(problem)
    assert_close(jax.jit(f)(x, w), _lax(problem)(x, w))
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    for a, b in zip(jax.grad(loss(f), (0, 1))(x, w),
                    jax.grad(loss(_lax(problem)), (0, 1))(x, w)):
        assert_close(a, b)


def test_choice_is_cached_on_disk_and_reused(tmp_path, monkeypatch):
    problem = PROBLEMS[0]
    x, w = _args(problem)
    f = lambda x, w: jl.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", rhs_dilation=(1, 2), dimension_numbers=DN[2],
        algorithm="autotune")
    jax.jit(f)(x, w)
    path = tmp_path / "autotune.json"
    data = json.loads(path.read_text())
    assert data["version"] == autotune.CACHE_VERSION
    (choice,) = data["choices"].values()
    assert choice in _names(_problem(problem))
    # No temporary files left (the lock file stays, empty).
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "autotune.json", "autotune.json.lock"]

    # A new process (empty memory cache) reads the file and times nothing.
    monkeypatch.setattr(autotune, "_MEMORY", {})

    def no_timing(*a):
        raise AssertionError("a cached problem was timed again")

    monkeypatch.setattr(autotune, "_time", no_timing)
    jax.clear_caches()  # and no compiled program either
    g = lambda x, w: f(x, w)  # noqa: E731
    assert_close(jax.jit(g)(x, w), _lax(problem)(x, w))
    assert autotune._MEMORY and list(autotune._MEMORY.values()) == [choice]


def test_corrupt_cache_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "autotune.json"
    path.write_text("{not json")
    x, w = _args(PROBLEMS[0])
    with pytest.warns(RuntimeWarning, match="unreadable autotune cache"):
        y = jl.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(1, 2),
                                    dimension_numbers=DN[2], algorithm="autotune")
    assert_close(y, _lax(PROBLEMS[0])(x, w))
    assert len(json.loads(path.read_text())["choices"]) == 1  # rewritten


def test_empty_cache_dir_keeps_choices_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCONV_CACHE_DIR", "")
    assert autotune.cache_path() is None
    x, w = _args(PROBLEMS[0])
    jl.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN[2],
                            algorithm="autotune")
    assert len(autotune._MEMORY) == 1 and not os.listdir(tmp_path)


def test_unwritable_cache_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("JAXCONV_CACHE_DIR", str(blocker / "sub"))
    x, w = _args(PROBLEMS[0])
    with pytest.warns(RuntimeWarning, match="could not write the autotune cache"):
        y = jl.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN[2],
                                    algorithm="autotune")
    assert y.shape == (1, 9, 8, 4)


def test_autotune_keeps_nonfinite_values_local():
    x, w = _args(PROBLEMS[0])
    x[0, 4, 4, 1] = np.nan
    kw = dict(rhs_dilation=(1, 2), dimension_numbers=DN[2])
    ours = jl.conv_general_dilated(x, w, (1, 1), "SAME", algorithm="autotune", **kw)
    theirs = lax.conv_general_dilated(x, w, (1, 1), "SAME", **kw)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))


def test_friendly_ops_and_layers_accept_autotune():
    x, w = _args(PROBLEMS[0])
    y = jaxconv.conv(x, w, padding="SAME", dilation=(1, 2), algorithm="autotune")
    assert_close(y, _lax(PROBLEMS[0])(x, w))
    with pytest.raises(ValueError, match="'autotune'"):
        jaxconv.conv(x, w, algorithm="fastest")


def test_autotune_logs_what_it_times_and_picks(caplog):
    x, w = _args(PROBLEMS[1])
    with caplog.at_level("INFO", logger="jaxconv"):
        jl.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=DN[2],
                                algorithm="autotune")
    messages = [r.getMessage() for r in caplog.records if r.name == "jaxconv"]
    assert any(m.startswith("autotune: timing ") and "im2col" in m for m in messages)
    assert any(m.startswith("autotune: picked ") for m in messages)


def test_cache_location_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXCONV_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert autotune.cache_path() == str(tmp_path / "xdg" / "jaxconv" / "autotune.json")
    monkeypatch.setenv("JAXCONV_CACHE_DIR", str(tmp_path / "own"))
    assert autotune.cache_path() == str(tmp_path / "own" / "autotune.json")


def test_cache_key_names_the_machine():
    key = json.loads(autotune._key(_problem(PROBLEMS[0]), jaxconv.get_profile("cpu"),
                                   None))
    version, jax_version, jaxlib_version, platform, processor = autotune.machine()
    assert key[1:6] == [version, jax.__version__, jax_version, platform, processor]
    assert version == jaxconv.__version__ and processor


_WRITER = """
import os, sys, time
from jaxconv.algorithms import autotune
path, name = sys.argv[1], sys.argv[2]
open(f"{path}.{name}.ready", "w").close()
while not os.path.exists(path + ".go"):  # start together
    time.sleep(0.001)
for i in range(100):
    autotune._store(path, f"{name}-{i}", "taps")
"""


def test_concurrent_writers_keep_every_entry(tmp_path):
    # Two processes add 100 entries each to one cache file at the same time:
    # without the lock around read-merge-write, the last writer drops
    # entries of the other (about a quarter of them, measured).
    import subprocess
    import sys
    import time

    path = tmp_path / "autotune.json"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name])
             for name in ("a", "b")]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("*.ready"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "autotune.json.go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(json.loads(path.read_text())["choices"]) == 200


def test_multi_process_runs_use_the_auto_plan(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(autotune, "_WARNED", [])
    problem = _problem(PROBLEMS[0])
    cpu = jaxconv.get_profile("cpu")
    with pytest.warns(RuntimeWarning, match="multi-process"):
        chosen = autotune.choose(problem, cpu, None)
    assert chosen.formulation == choose(problem, cpu)[0]
    assert "multi-process" in chosen.reason and not autotune._MEMORY
