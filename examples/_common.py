"""Helpers shared by the examples: quick mode, output directory, progress bar."""

from __future__ import annotations

import os
import sys
import time

try:  # run from a checkout without `pip install -e .`: use the checkout
    import jaxconv  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: ``JAXCONV_EXAMPLE_QUICK=1`` runs every example in a tiny smoke setting.
QUICK = os.environ.get("JAXCONV_EXAMPLE_QUICK", "0") not in ("", "0")


def output_dir(default: str = "example-output") -> str:
    """Directory for figures: ``$JAXCONV_EXAMPLE_OUT`` or ``./example-output``."""
    path = os.environ.get("JAXCONV_EXAMPLE_OUT", default)
    os.makedirs(path, exist_ok=True)
    return path


def pyplot():
    """matplotlib.pyplot with a non-interactive backend, or exit with a hint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit('this example needs matplotlib: pip install -e ".[examples]"')
    return plt


class Progress:
    """A one-line text progress bar: ``with Progress(n) as bar: bar.update(...)``."""

    def __init__(self, total: int, label: str = "epoch", width: int = 30):
        self.total, self.label, self.width = total, label, width
        self.count, self.start = 0, time.perf_counter()

    def __enter__(self):
        return self

    def update(self, info: str = "") -> None:
        self.count += 1
        done = int(self.width * self.count / self.total)
        bar = "#" * done + "-" * (self.width - done)
        secs = time.perf_counter() - self.start
        end = "\n" if self.count == self.total else ""
        sys.stdout.write(
            f"\r{self.label} {self.count:>3}/{self.total} [{bar}] {secs:5.1f}s {info}"
            + end
        )
        sys.stdout.flush()

    def __exit__(self, *exc):
        if self.count < self.total:
            sys.stdout.write("\n")
        return False
