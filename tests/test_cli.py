"""The `jaxconv` command: the layer language, good and bad input via subprocess."""

import contextlib
import io
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxconv import cli, nn
from jaxconv._layerspec import LayerSpecError, parse_layers, parse_shape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC_EXAMPLE = "conv 3x3 32 same, relu, maxpool 2, conv 3x3 64, relu, gap, dense 10"


def run(*args, timeout=120):
    path = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "jaxconv", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_parse_layers():
    model = parse_layers("conv 3x5 16 same s2 d1 g2 reflect nobias, gelu, "
                         "dconv 3x3 2 valid, tconv 4x4 8 s2 p1 op1, avgpool 3 s2 p1, "
                         "gmp, dense 7, dropout 0.25, flatten")
    conv, gelu, dw, tconv, pool, gmp, dense, drop, flat = model.layers
    assert conv == nn.Conv(16, (3, 5), padding="SAME", stride=2, dilation=1,
                           groups=2, padding_mode="reflect", use_bias=False)
    assert isinstance(gelu, nn.Gelu)
    assert dw.channel_multiplier == 2 and dw.padding == "VALID"
    assert (tconv.features, tconv.stride, tconv.padding, tconv.output_padding) == (
        8, 2, 1, 1)
    assert isinstance(pool, nn.AvgPool) and (pool.stride, pool.padding) == (2, 1)
    assert isinstance(gmp, nn.GlobalMaxPool) and dense.features == 7
    assert drop.rate == 0.25 and isinstance(flat, nn.Flatten)
    assert parse_shape("28x28x1") == (28, 28, 1) == parse_shape("28, 28, 1")


@pytest.mark.parametrize("text,match", [
    ("conv 3x3 32, blah", "unknown layer 'blah'"),
    ("conv 3x3 -4", "-4 must be positive"),
    ("conv -3x3 4", "must be positive"),
    ("conv 3x3", "missing output channels"),
    ("conv 3x3 8 s0", "stride"),
    ("maxpool 2 g2", "unknown option 'g2'"),
    ("relu 3", "takes no arguments"),
    ("dropout 1.5", "rate"),
    ("conv 3x3 8,, relu", "empty"),
])
def test_parse_layers_errors(text, match):
    with pytest.raises(LayerSpecError, match=match):
        parse_layers(text)


@pytest.mark.parametrize("text", ["28xx", "28x-1x1", "abc", ""])
def test_parse_shape_errors(text):
    with pytest.raises(LayerSpecError):
        parse_shape(text)


def test_main_in_process(capsys):
    assert cli.main(["shapes", SPEC_EXAMPLE, "--input", "28x28x1"]) == 0
    out = capsys.readouterr().out
    assert "Conv(32, 3x3, SAME)" in out and "19,466" in out
    assert cli.main(["shapes", "conv 3x3 8", "--input", "2x2x1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty output" in err


def test_cli_shapes_subprocess():
    r = run("shapes", SPEC_EXAMPLE, "--input", "28x28x1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["layer", "output", "shape"]
    assert any(line.startswith("Conv(32, 3x3, SAME)") and "320" in line
               and "451,584" in line for line in lines)
    assert lines[-1].split() == ["total", "19,466", "5,795,584"]


@pytest.mark.parametrize("args,word", [
    (("shapes", "conv 3x3 32, frobnicate 3", "--input", "28x28x1"), "frobnicate"),
    (("shapes", "conv 3x3 -32", "--input", "28x28x1"), "-32"),
    (("shapes", "conv 3x3 32", "--input", "28x-28x1"), "-28"),
    (("shapes", "conv 3x3 32", "--input", "twenty"), "twenty"),
    (("shapes", "conv 9x9 32", "--input", "4x4x1"), "empty output"),
    (("shapes", "dense 10", "--input", "4x4x1"), "Dense"),
    (("shapes", "conv 3x3 32"), "--input"),
    (("frobnicate",), "frobnicate"),
    (("demo", "--image", "/nonexistent/photo.png"), "/nonexistent/photo.png"),
    (("demo", "--image", os.path.join(ROOT, "pyproject.toml")), "pyproject.toml"),
])
def test_cli_bad_input_one_line_exit_2(args, word):
    r = run(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert word in lines[0]


def test_cli_help_has_examples():
    r = run("shapes", "--help")
    assert r.returncode == 0
    for word in ("conv KxK C", "dconv", "tconv", "maxpool", "gap", "dense N",
                 "dropout P", "examples:", "--input"):
        assert word in r.stdout
    r = run("--help")
    assert r.returncode == 0 and "jaxconv demo" in r.stdout
    r = run("demo", "--help")
    assert r.returncode == 0 and "--out" in r.stdout and "examples:" in r.stdout


def test_cli_demo_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    r = run("demo", "--out", str(tmp_path), "--size", "48", timeout=240)
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert {"input.png", "kernels.png", "colour.png", "stack_layer1.png"} <= set(
        written)
    assert f"wrote {tmp_path / 'kernels.png'}" in r.stdout


def test_cli_bench_forwards_help():
    r = run("bench", "--help")
    assert r.returncode == 0, r.stderr
    assert "--quick" in r.stdout


# --- hostile input: random and malformed specs never escape as a traceback ----


def _run_main(argv):
    """``cli.main(argv)`` with its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


_WORDS = ["conv", "dconv", "tconv", "maxpool", "avgpool", "gap", "flatten",
          "dense", "relu", "dropout", "same", "valid", "full", "causal", "s2",
          "d2", "g4", "3x3", "0x3", "-1", "1e9", "x", ",", ",,", "  ", "3", "32",
          "0", "0.5", "99999999999999999999", "\u00e9", "--", "-h"]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    spec=st.one_of(
        st.lists(st.sampled_from(_WORDS), max_size=8).map(" ".join),
        st.text(max_size=30),
    ),
    shape=st.one_of(
        st.lists(st.integers(-3, 40), min_size=1, max_size=4).map(
            lambda v: "x".join(map(str, v))),
        st.text(max_size=12),
    ),
)
def test_cli_shapes_fuzz_one_line_or_success(spec, shape):
    code, out, err = _run_main(["shapes", spec, "--input", shape])
    assert code in (0, 2)
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    else:
        assert out.strip()


@settings(max_examples=20, deadline=None, derandomize=True)
@given(path=st.text(min_size=1, max_size=40).filter(lambda p: "\x00" not in p))
def test_cli_demo_fuzz_bad_image_path(path, tmp_path_factory):
    # Random paths name no readable image: one line, exit 2.
    out_dir = tmp_path_factory.mktemp("demo")
    bad = str(out_dir / ("missing-" + path.replace("/", "_")))
    code, _, err = _run_main(["demo", "--image", bad, "--out", str(out_dir / "o")])
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
