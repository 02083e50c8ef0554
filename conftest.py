"""Collection rules and the CPU family for the whole checkout.

``tests/conftest.py`` holds the test setup.

``jaxconv.equinox`` needs the optional Equinox package: without it, its
docstring examples are not collected (importing it raises ``ImportError`` by
design) and ``tests/test_equinox.py`` skips itself.
"""

import importlib.util
import os

try:
    _HAVE_EQUINOX = importlib.util.find_spec("equinox") is not None
except ValueError:  # sys.modules["equinox"] is None: the import is blocked
    _HAVE_EQUINOX = False

collect_ignore = [] if _HAVE_EQUINOX else ["jaxconv/equinox"]


# The cpu preset's constants depend on the host's CPU family (AVX-512 or
# not, ``jaxconv.algorithms.profile.cpu_family``).  The rule tables the tests
# check are the ``avx2`` family's, pinned here so that the suite plans every
# problem identically on every host; tests/test_plan.py checks the
# ``avx512`` table and the detection explicitly.
os.environ.setdefault("JAXCONV_CPU_FAMILY", "avx2")
