"""Collection rules for the whole checkout (``tests/conftest.py`` holds the test setup).

``jaxconv.equinox`` needs the optional Equinox package: without it, its
docstring examples are not collected (importing it raises ``ImportError`` by
design) and ``tests/test_equinox.py`` skips itself.
"""

import importlib.util

try:
    _HAVE_EQUINOX = importlib.util.find_spec("equinox") is not None
except ValueError:  # sys.modules["equinox"] is None: the import is blocked
    _HAVE_EQUINOX = False

collect_ignore = [] if _HAVE_EQUINOX else ["jaxconv/equinox"]
