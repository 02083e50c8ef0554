"""Packaging and user-facing text: license, version, typing, planning words.

The wheel itself is built and installed in a fresh virtual environment by
``.ci/run``; these tests check the sources and the installed metadata.
"""

import contextlib
import importlib.metadata
import io
import os
import re
import subprocess
import sys
import tokenize
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pytest

import jaxconv
from jaxconv import cli, nn, shapes
from jaxconv._typing import Padding, Size

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- version, license, py.typed ---------------------------------------------


def test_one_version_source():
    assert importlib.metadata.version("jaxconv") == jaxconv.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", jaxconv.__version__)
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    dynamic = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "jaxconv.__version__"}


def test_version_is_the_latest_changelog_heading():
    text = (ROOT / "CHANGELOG.md").read_text()
    first = re.search(r"(?m)^## (\S+)", text)
    assert first is not None and first.group(1) == jaxconv.__version__


def test_license_file_and_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    # The installed metadata (built from pyproject.toml by pip) names it.
    meta = importlib.metadata.metadata("jaxconv")
    assert meta["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]


def test_py_typed_ships():
    assert (resources.files("jaxconv") / "py.typed").is_file()
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]["jaxconv"]
    assert "py.typed" in package_data


@pytest.mark.parametrize("fn,arg,alias", [
    (jaxconv.conv, "padding", Padding),
    (jaxconv.conv, "stride", Size),
    (jaxconv.conv_transpose, "padding", Padding),
    (jaxconv.depthwise_conv, "dilation", Size),
    (jaxconv.max_pool, "padding", Padding),
    (jaxconv.unfold, "padding", Padding),
    (shapes.conv_output_shape, "padding", Padding),
    (shapes.conv_output_shape, "kernel_shape", Size),
    (nn.Conv, "padding", Padding),
])
def test_padding_and_size_are_typed(fn, arg, alias):
    assert typing.get_type_hints(fn)[arg] == alias
    assert alias != typing.Any


def test_type_aliases_spell_out_the_accepted_values():
    assert set(typing.get_args(Size)) == {int, Sequence[int]}
    assert set(typing.get_args(Padding)) == {
        str, int, Sequence[int | tuple[int, int]]
    }


# --- internal planning words in user-facing text -----------------------------

# Whole words only: "specification", "tissue" or "PartitionSpec" do not match.
PLANNING = re.compile(
    r"\b(?:specs?|sessions?|issues?|work[ -]periods?|round \d+)\b", re.IGNORECASE
)


def _python_strings(path: Path):
    """(line, text) of every string literal (docstrings included) in ``path``."""
    kinds = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    with open(path, encoding="utf-8") as fh:
        for tok in tokenize.generate_tokens(fh.readline):
            if tok.type in kinds:
                for i, line in enumerate(tok.string.splitlines()):
                    yield tok.start[0] + i, line


def _help_lines(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert cli.main(argv) == 0
    return list(enumerate(out.getvalue().splitlines(), 1))


def _text_lines(path: Path):
    return list(enumerate(path.read_text().splitlines(), 1))


def _sources():
    """(id, function returning (line number, text) pairs) per user-facing text."""
    docs = sorted((ROOT / "docs").rglob("*.md")) if (ROOT / "docs").is_dir() else []
    for path in [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "BENCHMARKS.md",
                 *docs]:
        if path.is_file():
            yield str(path.relative_to(ROOT)), lambda p=path: _text_lines(p)
    for path in sorted([*(ROOT / "jaxconv").rglob("*.py"),
                        *(ROOT / "examples").glob("*.py")]):
        yield str(path.relative_to(ROOT)), lambda p=path: list(_python_strings(p))
    for argv in (["--help"], ["shapes", "--help"], ["demo", "--help"],
                 ["bench", "--help"]):
        yield "jaxconv " + " ".join(argv), lambda a=argv: _help_lines(a)


# Inline code (``specs[a]``, `lhs_spec`) names variables, not plans.
_CODE_SPAN = re.compile(r"``.*?``|`[^`]*`")


def _planning_words(line: str) -> bool:
    return bool(PLANNING.search(_CODE_SPAN.sub(" ", line)))


_SOURCES = dict(_sources())


@pytest.mark.parametrize("source", list(_SOURCES))
def test_no_planning_words_in_user_facing_text(source):
    # README, CHANGELOG, BENCHMARKS, docs, every string literal of the package
    # and the examples (docstrings, messages) and the command-line help.
    hits = [f"{source}:{i}: {line.strip()}" for i, line in _SOURCES[source]()
            if _planning_words(line)]
    assert not hits, "internal planning words in user-facing text:\n" + "\n".join(
        hits)


@pytest.mark.parametrize("text,hit", [
    ("see SPEC section 5", True), ("the fourth session", True),
    ("Sessions 2-3", True), ("issue 15", True), ("the work period", True),
    ("Speed round 2", True), ("a specification", False), ("tissue", False),
    ("PartitionSpec", False), ("spectral", False), ("round-off error", False),
    ("rounds down", False), ("LayerSpecError", False),
    ("``specs[a] = (slice, pad)``", False), ("the `spec` argument", False),
])
def test_planning_word_pattern(text, hit):
    assert _planning_words(text) is hit


# --- matplotlib: never the global backend -------------------------------------

_BACKEND_SWITCH = re.compile(
    r"matplotlib\.use\s*\(|import\s+matplotlib\.pyplot|from\s+matplotlib\s+import"
    r"\s+pyplot|switch_backend\s*\("
)


def test_no_global_backend_switch_in_package_or_examples():
    hits = []
    for path in sorted([*(ROOT / "jaxconv").rglob("*.py"),
                        *(ROOT / "examples").glob("*.py")]):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _BACKEND_SWITCH.search(code):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_demo_and_bench_plot_keep_the_backend(tmp_path):
    pytest.importorskip("matplotlib")
    script = f"""
import sys, matplotlib
from jaxconv import bench, cli
before = matplotlib.get_backend()
code = cli.main(["demo", "--out", {str(tmp_path)!r}, "--size", "40"])
bench.plot([{{"case": "dw3", "direction": "forward", "speedup": 20.0}},
            {{"case": "stem", "direction": "forward", "speedup": 0.8}}],
           {str(tmp_path / "bench.png")!r})
print("RESULT", code, before, matplotlib.get_backend(),
      "matplotlib.pyplot" in sys.modules)
"""
    env = dict(os.environ, MPLBACKEND="svg", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True,
                       text=True, timeout=240, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[-1].split() == ["RESULT", "0", "svg", "svg", "False"]
    for name in ("input.png", "kernels.png", "colour.png", "stack_layer1.png",
                 "bench.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
