#!/usr/bin/env bash
# Build the docs site into site/ in strict mode (any warning fails the build).
# Needs the docs extra: pip install -e ".[docs]"
set -euo pipefail
cd "$(dirname "$0")/.."
NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict "$@"
