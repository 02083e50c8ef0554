"""``jaxconv bench --models``: the Equinox U-Net record ``model/eqx_unet``.

Nothing here measures speed (the timer is replaced where a record is built);
the model sizes are tiny except where only shapes are traced.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from jaxconv import _bench_models as bm
from jaxconv import bench

eqx = pytest.importorskip("equinox")
from jaxconv import _bench_eqx as be  # noqa: E402
from jaxconv import equinox as jqx  # noqa: E402

MODEL_FIELDS = {"case", "direction", "algorithm", "convs", "jaxconv_s", "lax_s",
                "speedup", "speedup_range", "temp_bytes", "lax_temp_bytes",
                "input_bytes", "output_bytes", "input_shape", "params", "rel_err",
                "lax_rel_err", "leaf_rel_err", "lax_leaf_rel_err", "cancelled_grads",
                "ok"}
TINY = {"batch": 2, "image": 8, "channels": (4, 8), "groups": 2, "heads": 2}


@pytest.fixture
def _fake_timer(monkeypatch):
    monkeypatch.setattr(bench, "_time_once", lambda f, args: 2e-3)


def _count(tree, cls):
    return sum(isinstance(n, cls) for n in jax.tree.leaves(
        tree, is_leaf=lambda n: isinstance(n, cls)))


def _abstract(a):
    return isinstance(a, jax.ShapeDtypeStruct)


def _out_shape(model, x):
    p, s = eqx.partition(model, _abstract, is_leaf=_abstract)
    return jax.eval_shape(lambda p, x: jax.vmap(eqx.combine(p, s))(x), p, x).shape


def test_unet_layers_and_shapes():
    # the benchmarked sizes, built abstractly (nothing is initialised)
    model = eqx.filter_eval_shape(be.build, **{
        k: be.CONFIG[k] for k in ("in_channels", "channels", "groups", "heads")})
    # 4 levels: stem, 2 convs per residual block (4 down, 1 mid, 3 up), the 1x1
    # shortcuts where channels change (3 down, 3 up), 3 stride-2 convs, the
    # output conv; 3 transposed convs; one attention block.
    assert _count(model, eqx.nn.Conv2d) == 1 + 2 * 8 + 6 + 3 + 1
    assert _count(model, eqx.nn.ConvTranspose2d) == 3
    assert _count(model, eqx.nn.MultiheadAttention) == 1
    assert _count(model, eqx.nn.GroupNorm) == 2 * 8 + 1 + 1
    # float32 parameters also with x64 on (as in this suite)
    leaves = jax.tree.leaves(model, is_leaf=_abstract)
    assert all(a.dtype == jnp.float32 for a in leaves if _abstract(a))
    x = jax.ShapeDtypeStruct((8, 3, 32, 32), jnp.float32)
    assert _out_shape(model, x) == (8, 3, 32, 32)


def test_unet_without_attention_converts():
    model = be.build(channels=(4, 8), groups=2, heads=0)
    assert model.mid_attn is None
    ours = jqx.from_equinox(model)
    assert _count(ours, jqx.Conv2d) == 13 and _count(ours, jqx.ConvTranspose2d) == 1
    assert _count(ours, eqx.nn.Conv) == _count(ours, eqx.nn.ConvTranspose) == 0
    # the same parameter arrays, in the same order
    mine, theirs = (jax.tree.leaves(eqx.filter(m, eqx.is_array)) for m in (ours, model))
    assert len(mine) == len(theirs) and all(a is b for a, b in zip(mine, theirs))
    assert all(a.dtype == jnp.float32 for a in mine)
    x = jax.ShapeDtypeStruct((2, 3, 8, 8), jnp.float32)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)
                            if eqx.is_array(a) else a, ours)
    assert _out_shape(abstract, x) == (2, 3, 8, 8)
    # the reference run's copy is float64 throughout
    with jax.enable_x64(True):
        m64 = be._to(jnp.float64, model)
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(
            eqx.filter(m64, eqx.is_array)))


@pytest.mark.parametrize("kwargs, match", [
    ({"channels": ()}, r"`channels` \(=\(\)\)"),
    ({"channels": (4, 0)}, r"`channels` \(=\(4, 0\)\)"),
    ({"channels": (4, 6), "groups": 4}, r"`groups` \(=4\) .* dividing"),
    ({"channels": (4, 8), "groups": 2, "heads": 3}, r"`heads` \(=3\) .* \(=8\)"),
])
def test_build_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        be.build(**kwargs)


def test_jaxconv_and_lax_train_steps_agree(_fake_timer):
    r = be.measure(**TINY, timing=(0.0, 3, 3))
    assert set(r) == MODEL_FIELDS
    assert r["case"] == "model/eqx_unet" and r["direction"] == "train_step"
    assert r["input_shape"] == [2, 3, 8, 8]
    # forward, input and kernel gradients of 13 convs and 1 transposed conv,
    # less the stem's input gradient (the input is no parameter)
    assert r["convs"] == 3 * 14 - 1
    assert "taps" in r["algorithm"]  # jaxconv really ran
    assert r["ok"] and r["rel_err"] < 1e-5 and r["lax_rel_err"] < 1e-5
    assert 0 < r["leaf_rel_err"] < 1e-4 and r["cancelled_grads"] == 0
    model = be.build(**{k: TINY[k] for k in ("channels", "groups", "heads")})
    assert r["params"] == sum(a.size for a in jax.tree.leaves(
        eqx.filter(model, eqx.is_array)))


def test_the_check_catches_a_wrong_step(monkeypatch, _fake_timer):
    convert = jqx.from_equinox

    def off(model, algorithm="auto"):  # kernels 1% off: another function
        return jax.tree.map(lambda a: a * 1.01 if eqx.is_array(a) and a.ndim == 4
                            else a, convert(model, algorithm=algorithm))

    monkeypatch.setattr(jqx, "from_equinox", off)
    r = be.measure(batch=2, image=4, channels=(2,), groups=1, heads=0,
                   timing=(0.0, 3, 3))
    assert not r["ok"] and r["rel_err"] > 1e-3


def test_model_ids_and_dispatch(monkeypatch):
    assert "model/eqx_unet" in bm.model_ids()
    seen = {}
    monkeypatch.setattr(be, "measure", lambda name, **kw: seen.update(kw, name=name)
                        or {"case": name})
    assert bm.run_model("model/eqx_unet", quick=True) == {"case": "model/eqx_unet"}
    assert seen["name"] == "model/eqx_unet" and seen["timing"] == bm.TIMING["quick"]
    assert {k: seen[k] for k in be.CONFIG} == be.CONFIG
    assert be.CONFIG["batch"] == 8 and be.CONFIG["channels"] == (32, 64, 128, 256)
    with pytest.raises(ValueError, match="model/eqx_unet"):
        bm.run_model("model/vgg", quick=True)


def _fake_record(name, quick):
    return {"case": name, "direction": "train_step", "algorithm": "taps/dot",
            "convs": 1, "jaxconv_s": 1e-3, "lax_s": 2e-3, "speedup": 2.0,
            "speedup_range": [2.0, 2.0], "temp_bytes": 0, "lax_temp_bytes": 0,
            "input_bytes": 1, "output_bytes": 1}


def test_bench_selects_the_record(monkeypatch, capsys):
    monkeypatch.setattr(bm, "run_model", _fake_record)
    assert bench.main(["--models", "--quick", "--cases", "model/eqx_unet"]) == 0
    out, err = capsys.readouterr()
    assert "model/eqx_unet" in out and "train step geomean speedup 2.00 over 1" in out
    assert "skipped" not in err


def test_bench_skips_the_record_without_equinox(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "equinox", None)
    monkeypatch.setattr(bm, "run_model", _fake_record)
    assert "model/eqx_unet" not in bm.model_ids()
    assert bench.main(["--models", "--quick", "--cases", "model/unet"]) == 0
    out, err = capsys.readouterr()
    assert "model/eqx_unet skipped: it needs equinox" in err
    assert "model/unet" in out and "eqx_unet" not in out


def test_library_imports_without_equinox():
    code = ("import sys; sys.modules['equinox'] = None; import jaxconv, "
            "jaxconv.bench, jaxconv._bench_models, jaxconv._bench_eqx as be; "
            "print(be.available(), "
            "'model/eqx_unet' in jaxconv._bench_models.model_ids())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["False", "False"]
