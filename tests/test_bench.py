"""``jaxconv bench``: the timing protocol, the JSON records, the layer zoo,
``--compare``, ``--models`` and the vmap records.

Nothing here measures speed: the timer is replaced where a record is built
(``_fake_timer``), so the tests check the protocol and the bookkeeping.
"""

import json
import math
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxconv import _zoo, bench


def _counting(first_s, later_s, slow_calls=1):
    calls = []

    def f(*args):
        calls.append(time.perf_counter())
        time.sleep(first_s if len(calls) <= slow_calls else later_s)
        return np.zeros(())

    return f, calls


@pytest.fixture
def _fake_timer(monkeypatch):
    """Every timed call takes 2 ms for jaxconv... as far as the bench knows:
    the compiled functions are not run at all."""
    monkeypatch.setattr(bench, "_time_once", lambda f, args: 2e-3)


RECORD_FIELDS = {"case", "direction", "algorithm", "jaxconv_s", "lax_s", "speedup",
                 "speedup_range", "temp_bytes", "lax_temp_bytes", "input_bytes",
                 "output_bytes"}


# --- the timing protocol ------------------------------------------------------------

def test_interleaved_discards_the_warm_up_call():
    # A first call 50x slower than the rest (compilation-like cold start)
    # must not move the median, even with the minimum number of repetitions.
    fa, calls_a = _counting(0.25, 0.005)
    fb, calls_b = _counting(0.25, 0.010)
    ta, tb = bench.interleaved(fa, fb, (), budget=0.0, min_reps=3, max_reps=3)
    assert len(calls_a) == len(calls_b) == 4  # one warm-up + three timed
    assert 0.004 < ta < 0.05 and 0.009 < tb < 0.05


def test_short_calls_warm_up_over_several_rounds(monkeypatch):
    # Calls slow for their first three runs (fresh pages for large
    # temporaries): rounds under WARM_UP_S repeat, untimed, so the slow
    # calls stay out of even a three-repetition median.
    monkeypatch.setattr(bench, "WARM_UP_S", 0.2)
    fa, calls_a = _counting(0.03, 0.002, slow_calls=3)
    fb, calls_b = _counting(0.002, 0.002)
    ta, tb = bench.interleaved(fa, fb, (), budget=0.0, min_reps=3, max_reps=3)
    assert len(calls_a) == len(calls_b) == bench.WARM_UP_ROUNDS + 3
    assert ta < 0.02 and tb < 0.02
    # Rounds that take WARM_UP_S or longer warm up once.
    monkeypatch.setattr(bench, "WARM_UP_S", 0.001)
    fa, calls_a = _counting(0.002, 0.002)
    bench.interleaved(fa, fb, (), budget=0.0, min_reps=3, max_reps=3)
    assert len(calls_a) == 4


def test_interleaved_alternates_the_order():
    order = []

    def fa():
        order.append("a")
        return np.zeros(())

    def fb():
        order.append("b")
        return np.zeros(())

    bench.interleaved(fa, fb, (), budget=0.0, min_reps=4, max_reps=4)
    timed = order[2 * bench.WARM_UP_ROUNDS:]  # after the warm-up pairs
    assert timed == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_interleaved_samples_rotates_three_functions():
    order = []
    calls = [((lambda k=k: order.append(k) or np.zeros(())), ()) for k in "abc"]
    out = bench.interleaved_samples(calls, budget=0.0, min_reps=3, max_reps=3)
    assert [len(t) for t in out] == [3, 3, 3]
    assert order[3 * bench.WARM_UP_ROUNDS:] == list("abc" "bca" "cab")


def test_interleaved_samples_cap():
    calls = [(lambda: time.sleep(0.02) or np.zeros(()), ())]
    out = bench.interleaved_samples(calls, budget=0.0, min_reps=5, max_reps=9,
                                    cap_s=0.05)
    assert 1 <= len(out[0]) <= 2
    out = bench.interleaved_samples(calls, budget=0.0, min_reps=5, max_reps=9,
                                    cap_s=0.001)
    assert len(out[0]) == 1


def test_ratio_range_is_the_interquartile_range():
    num = [2.0, 4.0, 6.0, 8.0, 10.0]
    assert bench.ratio_range(num, [1.0] * 5) == [4.0, 8.0]
    assert bench.ratio_range([3.0], [1.5]) == [2.0, 2.0]


# --- suite records ------------------------------------------------------------------

def test_bench_json_record(tmp_path, capsys, _fake_timer):
    path = tmp_path / "out.json"
    assert bench.main(["--quick", "--cases", "point", "--json", str(path)]) == 0
    table = capsys.readouterr().out
    assert "point" in table and "forward" in table
    data = json.loads(path.read_text())
    assert set(data) == {"machine", "results"}
    (r,) = data["results"]
    assert set(r) == RECORD_FIELDS | {"flops"}
    assert (r["case"], r["direction"]) == ("point", "forward")
    assert r["speedup"] == pytest.approx(r["lax_s"] / r["jaxconv_s"]) == 1.0
    assert r["speedup_range"] == [1.0, 1.0]
    # point: x (1, 56, 56, 256) and w (1, 1, 256, 64) in, (1, 56, 56, 64) out.
    assert r["input_bytes"] == 4 * (56 * 56 * 256 + 256 * 64)
    assert r["output_bytes"] == 4 * 56 * 56 * 64
    assert r["flops"] == 2 * 56 * 56 * 64 * 256
    assert isinstance(r["temp_bytes"], int) and r["temp_bytes"] >= 0
    assert r["algorithm"].startswith("taps")


def test_machine_record():
    m = bench.machine_info()
    assert {"cpu", "cores", "jax", "jaxlib", "jaxconv", "git_commit", "profile",
            "device_kind"} <= set(m)
    import jaxconv

    assert m["jaxconv"] == jaxconv.__version__ and m["jax"] == jax.__version__
    assert m["profile"] == jaxconv.current_profile().name
    assert m["cpu_family"] == jaxconv.current_profile().family == "avx2"
    assert m["device_kind"] == jax.devices()[0].device_kind
    assert isinstance(m["cpu"], str) and m["cpu"] and m["cores"] >= 1
    assert m["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", m["git_commit"])
    assert m["git_dirty"] in (None, True, False)
    assert (m["git_commit"] is None) == (m["git_dirty"] is None)


def test_bench_unknown_case(capsys):
    assert bench.main(["--cases", "dense3,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown case(s) nope" in err and "dense3" in err


def test_bench_help_describes_the_new_flags(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--zoo", "--models", "--vmap", "--compare", "--threshold"):
        assert flag in out
    assert "ResNet-18" in out and "HiFi-GAN" in out


# --- the zoo -----------------------------------------------------------------------

ALL_LAYERS = [layer for arch in _zoo.ARCHS for layer in _zoo.layers(arch)]


def test_zoo_covers_the_architectures():
    assert len(_zoo.ARCHS) >= 9
    assert {"resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_t",
            "resnext50_32x4d", "unet", "unet3d", "hifigan_v1"} <= set(_zoo.ARCHS)
    distinct = [layer for a in _zoo.ARCHS for layer in _zoo.distinct_layers(a)]
    assert len(distinct) >= 200
    cases = _zoo.zoo_cases()
    assert len(cases) == 2 * len(distinct)
    assert len({c.id for c in cases}) == len(cases)
    for c in cases:
        assert re.fullmatch(r"zoo/[a-z0-9_]+/[A-Za-z0-9_.]+/b(1|8)", c.id), c.id
        assert c.id == f"zoo/{c.layer.arch}/{c.layer.name}/b{c.n}"
    # Every kind of layer the zoo is for is in it.
    assert any(la.transposed and len(la.spatial) == 2 for la in distinct)
    assert any(la.transposed and len(la.spatial) == 1 for la in distinct)
    assert any(la.transposed and len(la.spatial) == 3 for la in distinct)
    assert any(1 < la.groups < la.c_in for la in distinct)  # ResNeXt
    assert any(la.groups == la.c_in == la.c_out and la.kernel == (7, 7)
               for la in distinct)  # ConvNeXt depthwise
    assert any(max(la.dilation) == 5 and la.kernel == (11,) for la in distinct)


def test_zoo_distinct_layers_drop_repeats_only():
    for arch in _zoo.ARCHS:
        full, distinct = _zoo.layers(arch), _zoo.distinct_layers(arch)
        assert {la.problem for la in full} == {la.problem for la in distinct}
        assert len({la.problem for la in distinct}) == len(distinct)
        assert len({la.name for la in full}) == len(full)  # names are unique


@pytest.mark.parametrize("layer", ALL_LAYERS, ids=lambda la: f"{la.arch}/{la.name}")
def test_zoo_layer_shapes_agree_with_lax(layer):
    case = _zoo.ZooCase("zoo/x/y/b2", 2, layer)
    g = bench._geometry(case)
    wshape = g.kernel + ((g.c_in, g.c_out) if g.transposed
                         else (g.c_in // g.groups, g.c_out))
    x = jax.ShapeDtypeStruct((2, *layer.spatial, layer.c_in), jnp.float32)
    w = jax.ShapeDtypeStruct(wshape, jnp.float32)
    y = jax.eval_shape(bench.make_fn(case, lax), x, w)
    assert y.shape == (2, *layer.out_spatial, layer.c_out)
    assert all(s >= 1 for s in layer.out_spatial)
    assert layer.c_in % layer.groups == 0 and layer.c_out % layer.groups == 0
    assert bench.forward_flops(case) == layer.flops(2) > 0


def test_zoo_layers_chain():
    # A layer fed by a conv (through element-wise ops only) takes that conv's
    # output shape; most layers are fed that way.
    for arch in _zoo.ARCHS:
        full = _zoo.layers(arch)
        by_name = {la.name: la for la in full}
        linked = 0
        for la in full:
            if la.src is not None:
                src = by_name[la.src]
                assert (la.spatial, la.c_in) == (src.out_spatial, src.c_out), la
                assert full.index(src) < full.index(la)
                linked += 1
        # ConvNeXt's blocks end in linear layers: only its stem and
        # downsampling convs feed a conv directly.
        assert linked >= (4 if arch == "convnext_t" else len(full) // 2), arch


def test_zoo_known_shapes():
    r18 = {la.name: la for la in _zoo.layers("resnet18")}
    assert len(_zoo.distinct_layers("resnet18")) == 11
    assert r18["conv1"].out_spatial == (_zoo.IMAGE // 2,) * 2
    assert r18["layer4.1.conv2"].spatial == (_zoo.IMAGE // 32,) * 2
    assert r18["layer4.1.conv2"].c_in == 512
    rx = {la.name: la for la in _zoo.layers("resnext50_32x4d")}
    assert (rx["layer1.0.conv2"].groups, rx["layer1.0.conv2"].c_in) == (32, 128)
    unet = {la.name: la for la in _zoo.layers("unet")}
    assert unet["up1.up"].spatial == (_zoo.IMAGE // 16,) * 2
    assert unet["up1.up"].out_spatial == (_zoo.IMAGE // 8,) * 2
    assert unet["up1.conv1"].c_in == 1024 and unet["outc"].c_out == 2
    hifi = {la.name: la for la in _zoo.layers("hifigan_v1")}
    assert hifi["conv_post"].out_spatial == (_zoo.FRAMES * 256,)
    assert hifi["ups.0"].kernel == (16,) and hifi["ups.0"].out_spatial == (
        _zoo.FRAMES * 8,)
    eff = {la.name: la for la in _zoo.layers("efficientnet_b0")}
    se = eff["features.2.0.block.2.fc1"]
    assert (se.spatial, se.c_in, se.c_out) == ((1, 1), 96, 4)
    assert _zoo.layers("unet3d")[-1].out_spatial == (_zoo.VOLUME,) * 3


def test_zoo_layers_rejects_an_unknown_arch():
    with pytest.raises(ValueError, match=r"`arch` \(='vgg'\) must be one of"):
        _zoo.layers("vgg")


def test_zoo_run_records_and_summary(tmp_path, capsys, _fake_timer):
    # The same problem in MobileNetV2 and EfficientNet-B0 is timed once.
    ids = ["zoo/mobilenet_v2/features.1.conv.0.0/b1",
           "zoo/efficientnet_b0/features.1.0.block.0.0/b1"]
    path = tmp_path / "zoo.json"
    assert bench.main(["--zoo", "--quick", "--cases", ",".join(ids),
                       "--json", str(path)]) == 0
    out = capsys.readouterr().out
    data = json.loads(path.read_text())
    rs = data["results"]
    assert [(r["case"], r["direction"]) for r in rs] == [
        (ids[0], "forward"), (ids[0], "gradient"),
        (ids[1], "forward"), (ids[1], "gradient")]
    for r in rs:
        assert RECORD_FIELDS | {"flops"} <= set(r)
        assert r["algorithm"] and r["algorithm"] != "auto"
    layer = _zoo.ZooCase(ids[0], 1, _zoo.distinct_layers("mobilenet_v2")[1]).layer
    assert rs[0]["flops"] == layer.flops(1) and rs[1]["flops"] == 2 * layer.flops(1)
    assert "same_as" not in rs[0] and rs[2]["same_as"] == ids[0]
    assert "zoo summary (1 distinct" in out and "geomean 1.00" in out
    assert "0 of 1 below 0.8" in out and "worst 2:" in out


def test_summarize_zoo_counts_and_worst():
    def rec(case, direction, s):
        return {"case": case, "direction": direction, "speedup": s,
                "algorithm": "a", "jaxconv_s": 1e-3, "lax_s": s * 1e-3}

    rs = [rec(f"zoo/a/l{i}/b1", d, s) for i, s in enumerate([0.5, 2.0, 8.0])
          for d in ("forward", "gradient")]
    rs.append(dict(rec("zoo/b/l0/b1", "forward", 0.1), same_as="zoo/a/l0/b1"))
    text = bench.summarize_zoo(rs, worst=2)
    assert "forward   geomean 2.00" in text and "1 of 3 below 0.8" in text
    worst = text.split("worst 2:")[1].strip().splitlines()
    assert len(worst) == 2 and all("0.50  zoo/a/l0/b1" in w for w in worst)


def test_summarize_zoo_roofline():
    rs = [{"case": "zoo/a/l0/b1", "direction": "forward", "speedup": 0.5,
           "algorithm": "taps/im2col", "jaxconv_s": 2e-3, "lax_s": 1e-3,
           "flops": 10 ** 8},
          {"case": "zoo/a/l0/b1", "direction": "gradient", "speedup": 2.0,
           "algorithm": "taps/depthwise", "jaxconv_s": 1e-3, "lax_s": 2e-3,
           "flops": 2 * 10 ** 8}]
    assert bench.roofline(rs[0], 100.0) == pytest.approx((0.5, 1.0))
    text = bench.summarize_zoo(rs, gemm_gflops=100.0)
    # 1e8 FLOP in 2 ms = 50 GFLOP/s: half the rate; lax all of it.
    assert "dense forward layers at 50% of the 100 GFLOP/s GEMM rate" in text
    assert "(median; lax 100%), 1 records" in text
    assert "dense gradient" not in text  # depthwise is not a GEMM formulation
    assert "taps/im2col; jaxconv 2.000 ms, lax 1.000 ms; 50% / 100% of" in text
    assert "GEMM rate" not in bench.summarize_zoo(rs)


def test_gemm_rate_and_machine_record():
    rate = bench.gemm_rate(n=128, reps=3)
    assert 0.01 < rate < 1e6
    assert bench.machine_info(rate)["gemm_gflops"] == round(rate, 1)
    assert "gemm_gflops" not in bench.machine_info()


def test_zoo_plot(tmp_path):
    pytest.importorskip("matplotlib")
    rs = [{"case": f"zoo/a/l{i}/b1", "direction": d, "speedup": 0.5 + i,
           "flops": 10 ** (6 + i)} for i in range(3) for d in ("forward", "gradient")]
    bench.plot(rs, str(tmp_path / "zoo.png"))
    assert (tmp_path / "zoo.png").read_bytes()[:4] == b"\x89PNG"


# --- --compare ----------------------------------------------------------------------

def _run(records, cpu="CPU A"):
    return {"machine": {"cpu": cpu, "cores": 2, "profile": "cpu"},
            "results": [{"case": c, "direction": d, "speedup": s,
                         "speedup_range": rng, "jaxconv_s": 1e-3 / s,
                         "lax_s": 1e-3} for c, d, s, rng in records]}


def test_compare_two_files(tmp_path, capsys):
    old = _run([("dw3", "forward", 10.0, [9.0, 11.0]),
                ("point", "forward", 1.0, [0.9, 1.1]),
                ("dense3", "forward", 1.0, [0.95, 1.05]),
                ("stem", "forward", 2.0, [1.0, 3.0]),
                ("gone", "forward", 1.0, None)])
    new = _run([("dw3", "forward", 5.0, [4.5, 5.5]),      # 2x slower
                ("point", "forward", 1.5, [1.4, 1.6]),    # 1.5x faster
                ("dense3", "forward", 1.05, [1.0, 1.1]),  # within the threshold
                ("stem", "forward", 2.6, [2.0, 3.2]),     # ranges overlap: noise
                ("added", "gradient", 1.0, None)], cpu="CPU B")
    a, b = tmp_path / "old.json", tmp_path / "new.json"
    a.write_text(json.dumps(old))
    b.write_text(json.dumps(new))
    assert bench.main(["--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    faster = out.split("faster (")[1].split("slower (")[0]
    slower = out.split("slower (")[1].split("unchanged")[0]
    assert faster.startswith("1;") and "1.50x  point forward" in faster
    assert slower.startswith("1)") and "0.50x  dw3 forward" in slower
    assert "dense3" not in faster + slower and "stem" not in faster + slower
    assert "unchanged within noise: 2" in out
    assert "only in the old run: 1 (gone forward)" in out
    assert "only in the new run: 1 (added gradient)" in out
    assert "note: cpu differs: 'CPU A' -> 'CPU B'" in out


def test_compare_threshold(tmp_path, capsys):
    old = _run([("point", "forward", 1.0, None)])
    new = _run([("point", "forward", 1.3, None)])
    text = bench.compare(old, new, threshold=0.5)
    assert "faster (0;" in text and "unchanged within noise: 1" in text
    assert "faster (1;" in bench.compare(old, new, threshold=0.2)


def test_compare_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert bench.main(["--compare", str(bad), str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"a": 1}))
    assert bench.main(["--compare", str(other), str(other)]) == 2
    assert "no 'results' list" in capsys.readouterr().err
    assert bench.main(["--compare", str(other), str(other), str(other)]) == 2
    assert "OLD.json or OLD.json NEW.json" in capsys.readouterr().err


def test_compare_after_a_run(tmp_path, capsys, _fake_timer):
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_run([("point", "forward", 4.0, [3.9, 4.1])])))
    assert bench.main(["--quick", "--cases", "point", "--compare", str(old)]) == 0
    assert "0.25x  point forward" in capsys.readouterr().out


# --- vmap records -------------------------------------------------------------------

def test_vmap_records(_fake_timer):
    case = bench.Case("tiny", "test", 1, (8, 8), 4, 4, 3, vmap=True)
    for direction in bench.VMAP_DIRECTIONS:
        r = bench.run_vmap(case, direction, quick=True)
        assert RECORD_FIELDS | {"batch", "batched_s", "vmapped_s", "vmap_ratio",
                                "vmap_ratio_range"} <= set(r)
        assert (r["case"], r["direction"], r["batch"]) == (
            "tiny", direction, bench.VMAP_BATCH)
        assert r["vmap_ratio"] == pytest.approx(r["batched_s"] / r["vmapped_s"])
        assert r["speedup"] == pytest.approx(r["lax_s"] / r["jaxconv_s"])
        x_bytes = 4 * bench.VMAP_BATCH * 8 * 8 * 4
        w_bytes = 4 * 3 * 3 * 4 * 4
        out = {"vmap_forward": x_bytes, "vmap_kernel_grad": w_bytes,
               "vmap_grad": x_bytes + w_bytes,
               "per_example_grad": bench.VMAP_BATCH * w_bytes}[direction]
        assert r["output_bytes"] == out
    assert {c.id for c in bench.CASES if c.vmap} >= {"dense3_b8", "dw3", "group32"}


def test_vmap_ratios_come_from_their_own_rounds(monkeypatch):
    # vmapped vs batched in one round, vmapped vs lax in another: a slow lax
    # call must not sit between the two calls whose ratio is the vmap cost.
    rounds = []

    def fake(calls, **kw):
        rounds.append([f for f, _ in calls])
        first = len(rounds) == 1
        return [[1.0] * 3, [0.5] * 3] if first else [[2.0] * 3, [8.0] * 3]

    monkeypatch.setattr(bench, "interleaved_samples", fake)
    case = bench.Case("tiny", "test", 1, (8, 8), 4, 4, 3, vmap=True)
    r = bench.run_vmap(case, "vmap_forward", quick=True)
    assert [len(c) for c in rounds] == [2, 2]
    assert rounds[0][0] is rounds[1][0]  # jaxconv's vmapped call in both
    assert rounds[0][1] is not rounds[1][1]
    assert (r["vmapped_s"], r["batched_s"], r["vmap_ratio"]) == (1.0, 0.5, 0.5)
    assert (r["jaxconv_s"], r["lax_s"], r["speedup"]) == (2.0, 8.0, 4.0)


@pytest.mark.parametrize("direction", bench.VMAP_DIRECTIONS)
def test_vmap_functions_match_their_batched_twins(direction):
    from jaxconv import lax as jl

    case = bench.Case("tiny", "test", 3, (6, 6), 4, 4, 3)
    x, w = bench.make_args(case)
    f = bench.make_fn(case, jl)
    ct = jnp.asarray(np.random.default_rng(2).standard_normal((3, 6, 6, 4)),
                     jnp.float32)
    vmapped, batched = bench._vmap_fns(f, direction)
    a = vmapped(x, w, ct)
    b = batched(x, w, ct)
    if direction == "per_example_grad":
        assert a.shape == (3, *w.shape)
        a = a.sum(0)
    if direction == "vmap_grad":
        assert [t.shape for t in a] == [x.shape, w.shape]
    else:
        a, b = [a], [b]
    for got, want in zip(a, b, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    # The batched twin is the definition: lax's gradients of the same conv.
    ref = bench._vmap_fns(bench.make_fn(case, jax.lax), direction)[1](x, w, ct)
    for got, want in zip(b, ref if direction == "vmap_grad" else [ref], strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_vmap_flag_selects_the_marked_cases(monkeypatch, capsys):
    calls = []

    def fake(case, direction, quick):
        calls.append((case.id, direction))
        return {"case": case.id, "direction": direction, "algorithm": "a",
                "jaxconv_s": 1e-3, "lax_s": 1e-3, "speedup": 1.0,
                "speedup_range": [1.0, 1.0], "temp_bytes": 0, "lax_temp_bytes": 0,
                "input_bytes": 1, "output_bytes": 1, "batch": 8, "batched_s": 1e-3,
                "vmap_ratio": 1.0, "vmap_ratio_range": [1.0, 1.0]}

    monkeypatch.setattr(bench, "run_vmap", fake)
    monkeypatch.setattr(bench, "run_case", lambda *a, **k: pytest.fail("suite run"))
    assert bench.main(["--vmap", "--quick"]) == 0
    marked = [c.id for c in bench.CASES if c.vmap]
    assert calls == [(c, d) for c in marked for d in bench.VMAP_DIRECTIONS]
    assert "batched/vmapped 1.00 (batch 8)" in capsys.readouterr().out


# --- models -------------------------------------------------------------------------

def test_models_without_flax(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "flax", None)
    monkeypatch.setitem(sys.modules, "flax.linen", None)
    assert bench.main(["--models", "--quick"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "--models needs flax" in err


def test_errors_ignore_cancelled_gradients_only():
    from jaxconv import _bench_models as bm

    ref = (np.float64(2.0), np.ones((2, 3)),
           {"w": np.full((4,), 3.0), "b": np.full((4,), 1e-15)})
    out = (np.float32(2.0), np.ones((2, 3)),
           {"w": np.full((4,), 3.0), "b": np.full((4,), 1e-7)})
    total, leaf, cancelled = bm.errors(out, ref)
    assert cancelled == 1 and leaf == 0.0 and total < 1e-7
    out = (out[0], out[1], {"w": np.full((4,), 3.3), "b": out[2]["b"]})
    total, leaf, cancelled = bm.errors(out, ref)
    assert leaf == pytest.approx(0.1) and total == pytest.approx(0.1, rel=1e-6)
    out = (np.float32(2.2), *out[1:])
    assert bm.errors(out, ref)[0] == pytest.approx(0.1)


def test_models_tiny_train_step(_fake_timer):
    pytest.importorskip("flax")
    import flax.linen as nn

    from jaxconv import _bench_models as bm

    class Tiny(nn.Module):
        ops: object

        @nn.compact
        def __call__(self, x, train=True):
            kw = self.ops.conv_kwargs()
            x = nn.Conv(8, (3, 3), 2, [(1, 1)] * 2, use_bias=False, **kw)(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = self.ops.max_pool(nn.relu(x), 3, 2, 1)
            x = nn.Conv(8, (3, 3), 1, [(1, 1)] * 2, feature_group_count=8, **kw)(x)
            return nn.Dense(5)(jnp.mean(x, axis=(1, 2)))

    r = bm.measure("model/tiny", Tiny, (2, 12, 12, 3), 5, False,
                   timing=(0.0, 3, 3))
    assert RECORD_FIELDS <= set(r) and r["direction"] == "train_step"
    assert r["convs"] >= 2 and "taps" in r["algorithm"]  # jaxconv really ran
    assert r["ok"] and r["rel_err"] < 1e-5 and r["lax_rel_err"] < 1e-5
    assert 0 < r["leaf_rel_err"] < 1e-4
    assert r["params"] == 3 * 3 * 3 * 8 + 2 * 8 + 3 * 3 * 8 + 8 + 8 * 5 + 5

    # The check can fail: a step that computes something else is caught.
    bad = bm.Ops(jaxconv=True)
    bad.conv = lambda x, w, *a, **k: lax.conv_general_dilated(x, w * 1.01, *a, **k)
    r = bm.measure("model/tiny", lambda ops: Tiny(bad if ops.jaxconv else ops),
                   (2, 12, 12, 3), 5, False, timing=(0.0, 3, 3))
    assert not r["ok"] and r["rel_err"] > 1e-3


def test_models_ids_and_real_shapes():
    pytest.importorskip("flax")
    from jaxconv import _bench_models as bm

    assert len(bm.model_ids()) >= 4
    assert all(i.startswith("model/") for i in bm.model_ids())
    with pytest.raises(ValueError, match=r"`name` \(='model/vgg'\)"):
        bm.run_model("model/vgg", quick=True)
    # The models' conv layers are the zoo's (at the models' input size).
    models = bm._models()
    x = jax.ShapeDtypeStruct(bm.SHAPES["model/resnet18"][0], jnp.float32)
    net = models["model/resnet18"](bm.Ops(jaxconv=False))
    params = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, train=False), x)
    kernels = [a.shape for a in jax.tree.leaves(params["params"]) if a.ndim == 4]
    zoo = [la.kernel + (la.c_in // la.groups, la.c_out)
           for la in _zoo.layers("resnet18")]
    assert sorted(kernels) == sorted(zoo)
    assert math.prod(x.shape[1:3]) == _zoo.IMAGE ** 2


def _benchmark_script(name="gemm_floor"):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gemm_floor_module():
    return _benchmark_script("gemm_floor")


def _zoo_case(case_id):
    (case,) = [c for c in _zoo.zoo_cases() if c.id == case_id]
    return case


def test_gemm_floor_forms():
    # benchmarks/gemm_floor.py: the bare GEMMs of a layer's products, their
    # operands' shapes following the layer, FLOPs those of the convolution.
    floor = _gemm_floor_module()
    post = _zoo_case("zoo/hifigan_v1/conv_post/b8")  # 1-D, 32 -> 1, 7 taps
    n, (length,) = post.n, post.layer.spatial
    f = floor.forms(post)
    assert f["gather"] == [("deep", ((n * length, 7 * 32), (7 * 32, 1)), 1),
                           ("taps", ((n * length, 32), (32, 1)), 7),
                           ("wide", ((n * length, 32), (32, 7 * 1)), 1)]
    assert f["scatter"][0] == ("deep", ((n * length, 1), (1, 7 * 32)), 1)
    assert f["weights"][1] == ("taps", ((32, n * length), (n * length, 1)), 7)
    assert floor.products(post, "forward") == ["gather"]
    assert floor.products(post, "gradient") == ["scatter", "weights"]
    # strided 2-D: the output's rows, no `wide` form
    conv1 = _zoo_case("zoo/resnet18/conv1/b1")  # 64x64x3 -> 64, 7x7 / 2
    f = floor.forms(conv1)
    assert f["gather"] == [("deep", ((32 * 32, 49 * 3), (49 * 3, 64)), 1),
                           ("taps", ((32 * 32, 3), (3, 64)), 49)]
    # grouped: batched over groups
    grouped = next(c for c in _zoo.zoo_cases() if c.layer.groups == 32
                   and c.layer.kernel == (3, 3))
    g_in = grouped.layer.c_in // 32
    (deep, shapes, _), *_ = floor.forms(grouped)["gather"]
    assert shapes[0][0] == 32 and shapes[1] == (32, 9 * g_in, grouped.layer.c_out // 32)
    # transposed: the input's rows on the patch side; its forward scatters
    up = _zoo_case("zoo/hifigan_v1/ups.0/b1")
    g, m, t, p, q, rows_in, wide = floor._geometry(up)
    assert (m, p, q, wide) == (rows_in, up.layer.c_out, up.layer.c_in, False)
    assert floor.products(up, "forward") == ["scatter"]
    # every form of a product does the convolution's multiply-adds
    for case in (post, conv1, grouped, up):
        fwd = bench.forward_flops(case)
        for prod, fs in floor.forms(case).items():
            for _, (a, b), count in fs:
                assert 2 * math.prod(a) * b[-1] * count == fwd, (case.id, prod)
    # depthwise layers are not GEMM-shaped
    dw = next(c for c in _zoo.zoo_cases() if c.layer.groups == c.layer.c_in > 1)
    assert not floor.gemm_floor_eligible(dw)


def test_gemm_floor_script(capsys, _fake_timer, tmp_path):
    floor = _gemm_floor_module()
    rows = floor.run("zoo/hifigan_v1/conv_post/b1", budget=0.0)
    assert [r["case"] for r in rows] == ["zoo/hifigan_v1/conv_post/b1"]
    (r,) = rows
    assert r["floor"] in (["gather.deep"], ["gather.taps"], ["gather.wide"])
    assert r["forms_s"]["gather.taps"] == pytest.approx(7 * 2e-3)
    assert r["floor_s"] == pytest.approx(2e-3)
    assert r["floor_speedup"] == pytest.approx(1)
    assert r["reason"].startswith("GEMM floor: lax within 1.00x")
    # a gradient record sums its input- and kernel-gradient products
    (g,) = floor.run("zoo/hifigan_v1/conv_post/b1", budget=0.0, direction="gradient")
    assert g["floor_s"] == pytest.approx(4e-3) and len(g["floor"]) == 2
    assert floor.reason(2.0, 0.5).startswith("pass cost: the bare GEMMs 2.00x")
    # records from a bench JSON below a speedup; depthwise ones left out
    src = tmp_path / "zoo.json"
    src.write_text(json.dumps({"results": [
        {"case": "zoo/resnet18/conv1/b1", "direction": "forward", "speedup": 0.5},
        {"case": "zoo/resnet18/conv1/b1", "direction": "gradient", "speedup": 0.9},
        {"case": "dense3_b8", "direction": "gradient", "speedup": 0.7},
        {"case": "dw3", "direction": "forward", "speedup": 0.1},
        {"case": "stack16", "direction": "compile", "speedup": 0.1}]}))
    picked = floor.select(None, "both", str(src), 0.8)
    assert [(c.id, d) for c, d in picked] == [("zoo/resnet18/conv1/b1", "forward"),
                                              ("dense3_b8", "gradient")]
    floor.main(["--from", str(src), "--budget", "0",
                "--json", str(tmp_path / "o.json")])
    out = capsys.readouterr().out
    assert "2 records" in out and "at the GEMM floor" in out
    assert len(json.loads((tmp_path / "o.json").read_text())["results"]) == 2


def test_per_example_floor_script(capsys):
    # benchmarks/per_example_floor.py: per-example GEMMs against the batched one
    script = _benchmark_script("per_example_floor")
    r = script.floor("zoo/resnet18/layer4.0.conv2/b8", reps=1)  # 3x3, 512 -> 512, 2x2
    assert (r["k"], r["q"], r["o"], r["groups"]) == (9 * 512, 4, 512, 1)
    assert r["kernels_mb"] == pytest.approx(8 * 9 * 512 * 512 * 4 / 1e6)
    assert r["per_example_ms"] > 0 and r["batched_ms"] > 0
    script.main(["zoo/resnext50_32x4d/layer4.0.conv2/b8", "--reps", "1"])
    out = capsys.readouterr().out
    assert out.count("zoo/") == 1 and "G=32" in out
    message = r"`case` \(='zoo/none/b8'\) must be a zoo case id"
    with pytest.raises(ValueError, match=message):
        script.floor("zoo/none/b8")
    with pytest.raises(SystemExit):
        script.main(["zoo/none/*"])
    assert "no zoo case matches" in capsys.readouterr().err
