"""``jaxconv bench``: the timing protocol and the SPEC section 5 JSON record."""

import json
import time

import numpy as np
import pytest

from jaxconv import bench


def _counting(first_s, later_s):
    calls = []

    def f(*args):
        calls.append(time.perf_counter())
        time.sleep(first_s if len(calls) == 1 else later_s)
        return np.zeros(())

    return f, calls


def test_interleaved_discards_the_warm_up_call():
    # A first call 50x slower than the rest (compilation-like cold start)
    # must not move the median, even with the minimum number of repetitions.
    fa, calls_a = _counting(0.25, 0.005)
    fb, calls_b = _counting(0.25, 0.010)
    ta, tb = bench.interleaved(fa, fb, (), budget=0.0, min_reps=3, max_reps=3)
    assert len(calls_a) == len(calls_b) == 4  # one warm-up + three timed
    assert 0.004 < ta < 0.05 and 0.009 < tb < 0.05


def test_interleaved_alternates_the_order():
    order = []

    def fa():
        order.append("a")
        return np.zeros(())

    def fb():
        order.append("b")
        return np.zeros(())

    bench.interleaved(fa, fb, (), budget=0.0, min_reps=4, max_reps=4)
    timed = order[2:]  # after the warm-up pair
    assert timed == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_bench_json_record(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert bench.main(["--quick", "--cases", "point", "--json", str(path)]) == 0
    table = capsys.readouterr().out
    assert "point" in table and "forward" in table
    data = json.loads(path.read_text())
    assert set(data) == {"machine", "results"}
    (r,) = data["results"]
    assert set(r) == {"case", "direction", "algorithm", "jaxconv_s", "lax_s",
                      "speedup", "temp_bytes", "lax_temp_bytes", "input_bytes",
                      "output_bytes"}
    assert (r["case"], r["direction"]) == ("point", "forward")
    assert r["speedup"] == pytest.approx(r["lax_s"] / r["jaxconv_s"])
    # point: x (1, 56, 56, 256) and w (1, 1, 256, 64) in, (1, 56, 56, 64) out.
    assert r["input_bytes"] == 4 * (56 * 56 * 256 + 256 * 64)
    assert r["output_bytes"] == 4 * 56 * 56 * 64
    assert isinstance(r["temp_bytes"], int) and r["temp_bytes"] >= 0
    assert r["algorithm"].startswith("taps")


def test_bench_unknown_case(capsys):
    assert bench.main(["--cases", "dense3,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown case(s) nope" in err and "dense3" in err
