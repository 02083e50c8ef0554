"""Helpers shared by the examples: quick mode, output directory, figures.

Progress bars come from ``jaxconv._progress`` (drawn only on a terminal).
"""

from __future__ import annotations

import os
import sys

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


def subplots(nrows: int = 1, ncols: int = 1, **figure_kw):
    """A bare ``matplotlib.figure.Figure`` and its axes, or exit with a hint.

    No pyplot: matplotlib's global backend is left as it is, so importing an
    example's functions into a notebook keeps its inline plots.  Save with
    ``fig.savefig(path)``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        sys.exit('this example needs matplotlib: pip install -e ".[examples]"')
    fig = Figure(**figure_kw)
    return fig, fig.subplots(nrows, ncols)
