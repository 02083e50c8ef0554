"""The `jaxconv` command: the layer language, good and bad input via subprocess."""

import contextlib
import io
import os
import re
import subprocess
import sys

import jax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxconv
from jaxconv import bench, cli, nn
from jaxconv._layerspec import LayerSpecError, parse_layers, parse_shape
from jaxconv._progress import Progress

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
    assert lines[-2].split() == ["total", "19,466", "5,795,584"]
    assert lines[-1].startswith("FLOPs: a multiply-add counts 2")
    assert r.stderr == ""  # 28x28x1 reads as channels last: no warning


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
    assert "--quick" in r.stdout and "terminal" in r.stdout


# --- --version, --channels-first, the layout warning, --macs ----------------


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out == f"jaxconv {jaxconv.__version__} (jax {jax.__version__})\n"


def _table(out):
    """{layer name: (output shape, params, count)} and the total row."""
    rows, total = {}, None
    for line in out.splitlines():
        m = re.match(r"^(.*?\S)\s{2,}(\([\d, ]*\))\s+([\d,]+)\s+([\d,]+)", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
        elif line.startswith("total"):
            total = line.split()[1:]
    return rows, total


def test_shapes_channels_first_matches_channels_last(capsys):
    layers = "conv 3x3 8 p1, maxpool 2, dconv 3x3 2 same, gap, dense 10"
    assert cli.main(["shapes", layers, "--input", "3x32x32", "--channels-first"]) == 0
    first = capsys.readouterr()
    assert first.err == ""
    assert cli.main(["shapes", layers, "--input", "32x32x3"]) == 0
    last = capsys.readouterr()
    rows_f, total_f = _table(first.out)
    rows_l, total_l = _table(last.out)
    conv, dw = "Conv(8, 3x3, pad=1)", "DepthwiseConv(x2, 3x3, SAME)"
    assert rows_f[conv][0] == "(8, 32, 32)" and rows_l[conv][0] == "(32, 32, 8)"
    assert rows_f["MaxPool(2)"][0] == "(8, 16, 16)"
    assert rows_f[dw][0] == "(16, 16, 16)" and rows_l[dw][0] == "(16, 16, 16)"
    assert rows_f["GlobalAvgPool"][0] == "(16,)" == rows_l["GlobalAvgPool"][0]
    # The same network: the same parameters and FLOPs, layer by layer; by
    # hand: conv 27*8+8 params, 2*32*32*8*27 FLOPs; pool 16*16*8*4; depthwise
    # 9*16+16, 2*16*16*16*9; gap 16*16*16; dense 16*10+10, 2*16*10.
    assert [r[1:] for r in rows_f.values()] == [r[1:] for r in rows_l.values()]
    assert rows_f[conv][1:] == ("224", "442,368")
    assert rows_f[dw][1:] == ("160", "73,728")
    assert total_f == total_l == ["554", "528,704"]


@pytest.mark.parametrize("shape,channels_first,warns", [
    ((3, 224, 224), False, True),     # PyTorch's CxHxW read as HxWxC
    ((1, 28, 28), False, True),
    ((4, 64), False, True),           # 1-D: 4 samples of 64 channels?
    ((224, 224, 3), False, False),
    ((28, 28, 1), False, False),
    ((1000, 1), False, False),
    ((4, 4, 1), False, False),
    ((8, 8, 8), False, False),        # nothing looks like a channel count
    ((224, 224, 3), True, True),      # HxWxC read as CxHxW
    ((3, 224, 224), True, False),
    ((1, 28, 28), True, False),
])
def test_layout_warning(shape, channels_first, warns):
    assert (cli.layout_warning(shape, channels_first) is not None) is warns


def test_shapes_warns_once_on_stderr(capsys):
    assert cli.main(["shapes", "conv 3x3 16", "--input", "3x64x64"]) == 0
    out, err = capsys.readouterr()
    assert "(1, 62, 16)" in out  # computed as asked: channels last
    assert err.count("\n") == 1 and err.startswith("jaxconv shapes: warning:")
    assert "3x64x64" in err and "--channels-first" in err
    assert cli.main(["shapes", "conv 3x3 16", "--input", "64x64x3",
                     "--channels-first"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drop --channels-first" in err


@pytest.mark.parametrize("argv,word", [
    (["shapes", "conv 9x9 8", "--input", "3x4x4"], "empty output"),
    (["shapes", "conv 3x3 8", "--input", "1x2x2", "--channels-first"],
     "empty output"),
    (["shapes", "conv 3x3 8, blah", "--input", "3x32x32", "--macs"], "blah"),
    (["shapes", "conv 3x3 8", "--input", "32x32x3", "--channels-first",
      "--macs", "--frob"], "--frob"),
])
def test_bad_input_with_new_flags_is_one_line(argv, word, capsys):
    # A shape that would also draw the layout warning still gives one line.
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and word in err


def test_shapes_macs(capsys):
    assert cli.main(["shapes", SPEC_EXAMPLE, "--input", "28x28x1"]) == 0
    flops_out = capsys.readouterr().out
    assert cli.main(["shapes", SPEC_EXAMPLE, "--input", "28x28x1", "--macs"]) == 0
    macs_out = capsys.readouterr().out
    head_f, head_m = flops_out.splitlines()[0], macs_out.splitlines()[0]
    assert "FLOPs" in head_f and "MACs" in head_m and "FLOPs" not in head_m
    # The column stays where it was (right-aligned under the same edge).
    assert head_f.index("FLOPs") + 5 == head_m.index("MACs") + 4
    assert macs_out.splitlines()[-1].startswith("MACs: multiply-accumulates")
    rows_f, total_f = _table(flops_out)
    rows_m, total_m = _table(macs_out)
    # conv / dense: one MAC per multiply-add (FLOPs / 2); pools: 0 MACs.
    c32, c64 = "Conv(32, 3x3, SAME)", "Conv(64, 3x3, VALID)"
    assert rows_m[c32][2] == "225,792" and rows_f[c32][2] == "451,584"
    assert rows_m[c64][2] == "2,654,208" and rows_m["Relu"][2] == "0"
    assert rows_m["Dense(10)"][2] == "640"
    assert rows_m["MaxPool(2)"][2] == "0" and rows_f["MaxPool(2)"][2] == "25,088"
    assert rows_m["GlobalAvgPool"][2] == "0"
    assert total_m == ["19,466", "2,880,640"] and total_f == ["19,466", "5,795,584"]


# --- the progress bar: drawn on a terminal only ------------------------------


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_silent_when_not_a_terminal():
    log = io.StringIO()
    assert list(Progress(range(3), "work", stream=log)) == [0, 1, 2]
    with Progress(desc="epoch", total=2, stream=log) as bar:
        bar.update(1, "loss 0.5")
        bar.update(1, "loss 0.4")
    assert log.getvalue() == ""


def test_progress_draws_on_a_terminal():
    tty = _Terminal()
    items = list(Progress(["a", "b"], "cases", stream=tty, label=str.upper))
    assert items == ["a", "b"]
    text = tty.getvalue()
    frames = text.split("\r")[1:]  # each redraw starts with a carriage return
    assert [f.split()[:3] for f in frames] == [
        ["cases", "[" + "." * 30 + "]", "0/2"],
        ["cases", "[" + "#" * 15 + "." * 15 + "]", "1/2"],
        ["cases", "[" + "#" * 30 + "]", "2/2"],
    ]
    assert [f.split()[-1] for f in frames] == ["A", "B", "done"]
    assert text.endswith("\n") and text.count("\n") == 1


def test_progress_counts_by_hand_and_blanks_leftovers():
    tty = _Terminal()
    with Progress(desc="epoch", total=2, stream=tty) as bar:
        bar.update(1, "a long message here")
        bar.update(1, "short")
    frames = tty.getvalue().split("\r")[1:]
    assert "1/2" in frames[1] and "2/2" in frames[2]
    # A shorter line is padded so no characters of the longer one remain.
    assert len(frames[2].rstrip("\n")) >= len(frames[1])
    assert tty.getvalue().endswith("\n") and tty.getvalue().count("\n") == 1


def test_bench_progress_not_in_logs(capsys, monkeypatch):
    # bench.main's progress bar goes through jaxconv._progress: with stderr
    # captured (not a terminal) nothing but the table is written.
    calls = []
    monkeypatch.setattr(bench, "run_case", lambda case, direction, quick: calls.append(
        (case.id, direction)) or _fake_record(case.id, direction))
    assert bench.main(["--quick", "--cases", "dw3,point"]) == 0
    out, err = capsys.readouterr()
    assert calls == [("point", "forward"), ("dw3", "forward"), ("dw3", "gradient")]
    assert err == "" and "\r" not in out


def _fake_record(case, direction):
    return {"case": case, "direction": direction, "algorithm": "taps",
            "jaxconv_s": 1e-3, "lax_s": 2e-3, "speedup": 2.0, "temp_bytes": 0,
            "lax_temp_bytes": 0, "input_bytes": 8, "output_bytes": 8}


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


def test_shapes_plan_column(capsys):
    layers = "conv 3x3 16 same, relu, dwconv 5x5 same, conv 1x1 8"
    assert cli.main(["shapes", layers, "--input", "32x32x3", "--plan"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if " taps/" in line]
    assert [r[0] for r in rows] == ["conv", "depthwise", "conv"]
    assert [next(w for w in r if w.startswith("taps/")) for r in rows] == [
        "taps/im2col", "taps/depthwise", "taps/dot"]
    # Without the flag no plan is printed.
    assert cli.main(["shapes", layers, "--input", "32x32x3"]) == 0
    assert "formulation" not in capsys.readouterr().out
