#!/usr/bin/env bash
# The accelerator check: run on a machine with a GPU (or TPU) whose Python
# already has jax with its accelerator plugin (and flax, equinox, pytest,
# scipy for the tests), from the repository root:
#
#     bash benchmarks/device_check.sh            # results under ./device-out
#     OUT=/some/dir bash benchmarks/device_check.sh
#
# It records the device, runs the tests that matter on an accelerator (the
# exported-program structure, the profiles against lax, the lax grid,
# locality and memory) and `jaxconv bench --quick` (with --zoo and --models
# when the installed bench has them), each under a time limit, so the whole
# finishes in about 8 minutes. Nothing is installed: the checkout is used in
# place through PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  "$PY" -c 'import jax, jaxconv; print("jax", jax.__version__, "backend",
jax.default_backend(), jax.devices()); print("jaxconv", jaxconv.__version__,
"profile", jaxconv.current_profile().name)'
} 2>&1 | tee "$OUT/device.txt"

timeout 240 "$PY" -m pytest -q -p no:cacheprovider -x \
  tests/test_accelerator.py tests/test_plan.py tests/test_locality.py \
  tests/test_memory.py 2>&1 | tail -n 60 | tee "$OUT/tests.log"

extra=()
help="$("$PY" -m jaxconv bench --help 2>&1)"
grep -q -- "--zoo" <<<"$help" && extra+=(--zoo)
grep -q -- "--models" <<<"$help" && extra+=(--models)
timeout 300 "$PY" -m jaxconv bench --quick "${extra[@]}" --json "$OUT/bench.json" \
  2>&1 | tee "$OUT/bench.log"
echo "device check done: $(ls "$OUT")"
