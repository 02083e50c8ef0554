"""The notebooks as committed: outputs stripped, Colab-ready, plots without pyplot.

Running them is ``python notebooks/run.py --quick`` (in ``.ci/run``); these
checks read the JSON only, so they need neither Jupyter nor a kernel.
"""

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
EXPECTED = ["01_quick_start", "02_flax_cnn", "03_equinox_cnn",
            "04_benchmark_your_layer"]


def _code_cells(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def test_the_four_notebooks_are_there():
    assert [p.stem for p in PATHS] == EXPECTED


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {i} has outputs"
            assert cell["execution_count"] is None, f"cell {i} has a count"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_first_code_cell_installs_jaxconv_only_when_missing(path):
    first = _code_cells(path)[0]
    assert 'if importlib.util.find_spec("jaxconv") is None:' in first
    assert "%pip install" in first


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_plots_leave_the_matplotlib_backend_alone(path):
    source = "\n".join(_code_cells(path))
    assert "matplotlib.use" not in source
    pyplot = r"matplotlib\.pyplot|import pyplot|\bplt\.|%matplotlib"
    assert not re.search(pyplot, source)
    assert "Figure(" in source and "display(" in source
    assert "JAXCONV_NOTEBOOK_QUICK" in source  # every notebook has a quick mode


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_code_cells_are_valid_python(path):
    for source in _code_cells(path):
        # IPython magics (%pip) become `pass`, keeping the indentation.
        python = re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.MULTILINE)
        ast.parse(python)


def test_runner_check_stripped():
    result = subprocess.run(
        [sys.executable, str(NOTEBOOKS / "run.py"), "--check-stripped"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(PATHS)} notebooks checked: no outputs stored" in result.stdout


def test_runner_reports_stored_outputs(tmp_path):
    spec = importlib.util.spec_from_file_location("notebooks_run", NOTEBOOKS / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    nb = json.loads(PATHS[0].read_text(encoding="utf-8"))
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["execution_count"] = 3
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]
    dirty = tmp_path / "dirty.ipynb"
    dirty.write_text(json.dumps(nb), encoding="utf-8")
    assert run.stored_outputs(dirty) and "has outputs" in run.stored_outputs(dirty)[0]
    assert run.stored_outputs(PATHS[0]) == []
