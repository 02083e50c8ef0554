"""The docs site: the API reference covers the public API, the examples run.

Pure file checks (no mkdocs needed), so they run with the normal suite:

* every name in ``jaxconv.__all__``, ``jaxconv.nn.__all__``,
  ``jaxconv.lax.__all__``, ``jaxconv.shapes.__all__`` and
  ``jaxconv.padding.__all__`` has a ``::: jaxconv.NAME`` entry in
  ``docs/reference/*.md``, and every such entry names an object that exists;
* every page in the ``nav`` of ``mkdocs.yml`` exists;
* the code on the guide pages runs: blocks fenced ```` ```python ```` are
  executed and ```` ```pycon ```` blocks are run as doctests, in page order in
  one namespace per page.  Blocks fenced ```` ```py ```` (code of other
  libraries, e.g. PyTorch) are shown, not run.  A page whose code imports an
  optional library that is not installed is skipped.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import re
import sys
import textwrap
import types
from pathlib import Path

import jax
import pytest

import jaxconv

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
MODULES = ("jaxconv", "jaxconv.nn", "jaxconv.lax", "jaxconv.shapes", "jaxconv.padding")

_DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$", re.MULTILINE)
_FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>python|pycon)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
    re.MULTILINE | re.DOTALL,
)
_IMPORT = re.compile(r"^\s*(?:>>> )?(?:from|import)\s+(\w+)", re.MULTILINE)
_OPTIONAL = {"flax", "equinox", "optax", "scipy", "skimage", "matplotlib", "sklearn"}


def reference_entries() -> list[str]:
    """The ``::: identifier`` lines of the reference pages, in file order."""
    names = []
    for page in sorted(REFERENCE.glob("*.md")):
        names += _DIRECTIVE.findall(page.read_text())
    return names


def _public_names() -> list[str]:
    names = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        names += [f"{module_name}.{name}" for name in module.__all__]
    return names


def _resolve(identifier: str):
    """The object an identifier names, importing modules along the way."""
    parts = identifier.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


def test_reference_lists_every_public_name():
    entries = set(reference_entries())
    missing = [name for name in _public_names() if name not in entries]
    assert not missing, (
        f"public names without a `::: NAME` entry in docs/reference/*.md: {missing}"
    )


def test_reference_has_the_names_of_jaxconv_all_and_nn_all():
    # The two lists the docs promise to cover, checked on their own so that a
    # change to MODULES above cannot drop them.
    entries = set(reference_entries())
    for module in (jaxconv, jaxconv.nn):
        for name in module.__all__:
            assert f"{module.__name__}.{name}" in entries, name


def test_reference_entries_exist_and_are_not_repeated():
    entries = reference_entries()
    assert entries, "no `::: jaxconv...` entries found in docs/reference"
    repeated = sorted({e for e in entries if entries.count(e) > 1})
    assert not repeated, f"entries listed twice: {repeated}"
    for identifier in entries:
        assert identifier.split(".")[0] == "jaxconv", identifier
        _resolve(identifier)  # raises for a stale entry


def test_nav_pages_exist():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:") :]
    nav = nav[: re.search(r"\n\S", nav[1:]).start() + 1]
    pages = re.findall(r"([\w./-]+\.md)\s*$", nav, re.MULTILINE)
    assert pages, "no pages found in the nav of mkdocs.yml"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"nav pages missing from docs/: {missing}"


def _code_pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if _FENCE.search(p.read_text()))


@pytest.mark.parametrize("page", _code_pages(), ids=lambda p: p.name)
def test_page_code_runs(page: Path):
    text = page.read_text()
    blocks = [
        (m["lang"], textwrap.dedent(m["body"]), text.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(text)
    ]
    needed = {
        name for _, body, _ in blocks for name in _IMPORT.findall(body)
    } & _OPTIONAL
    for name in sorted(needed):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{page.name} needs {name}")
    # The pages show what a user sees: JAX's default configuration, not the
    # test suite's (x64 on, rank promotion raising; see conftest.py).
    with jax.enable_x64(False), jax.numpy_rank_promotion("allow"):
        _run_blocks(page, blocks)


def _run_blocks(page: Path, blocks: list[tuple[str, str, int]]) -> None:
    # A real module, so that classes defined on the page (dataclasses,
    # eqx.Module) find their module in sys.modules.
    module = types.ModuleType(f"jaxconv_docs_{page.stem.replace('-', '_')}")
    sys.modules[module.__name__] = module
    try:
        _run_in(module.__dict__, page, blocks)
    finally:
        del sys.modules[module.__name__]


def _run_in(namespace: dict, page: Path, blocks: list[tuple[str, str, int]]) -> None:
    parser = doctest.DocTestParser()
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    for lang, body, line in blocks:
        where = f"{page.name}, block at line {line}"
        if lang == "python":
            exec(compile(body, where, "exec"), namespace)
            continue
        test = parser.get_doctest(body, namespace, where, str(page), line)
        runner = doctest.DocTestRunner(optionflags=flags)
        report: list[str] = []
        runner.run(test, out=report.append, clear_globs=False)
        assert not runner.failures, "".join(report)
        namespace.update(test.globs)  # DocTest works on a copy
