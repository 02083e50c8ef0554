"""Smoke tests: every example runs in its quick setting (JAXCONV_EXAMPLE_QUICK=1).

Each runs in its own subprocess, so they spread over pytest-xdist workers
(``pytest -n 2``); the full settings are checked by hand (train_digits
reaches >= 0.97 test accuracy).
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

# (script, lines its output must contain, figures it must save)
CASES = [
    ("edge_detection.py", ["Sobel x equals"], ["edge_detection.png"]),
    ("train_digits.py", ["test accuracy: 0."], []),
    ("feature_visualization.py", ["class logits"], ["feature_visualization.png"]),
    ("kernel_sizes.py", ["2 x 3x3", "bottleneck"], ["kernel_sizes.png"]),
    ("flax_plugin.py", ["matches Flax"], []),
    ("data_parallel.py", ["over 4 devices"], []),
]


@pytest.mark.parametrize("script,expected,figures", CASES, ids=[c[0] for c in CASES])
def test_example_quick(script, expected, figures, tmp_path):
    if script != "flax_plugin.py" and script != "data_parallel.py":
        pytest.importorskip("matplotlib")
    if script in ("train_digits.py", "feature_visualization.py"):
        pytest.importorskip("sklearn")
    env = dict(os.environ, JAXCONV_EXAMPLE_QUICK="1", JAXCONV_EXAMPLE_OUT=str(tmp_path),
               JAX_PLATFORMS="cpu", MPLBACKEND="Agg",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if script == "data_parallel.py":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for text in expected:
        assert text in r.stdout, r.stdout
    for name in figures:
        assert (tmp_path / name).is_file()
    if script == "train_digits.py":
        assert r.stdout.strip().splitlines()[-1].startswith("test accuracy: ")
