"""``python -m jaxconv``: the ``jaxconv`` command (see :mod:`jaxconv.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
