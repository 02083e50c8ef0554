"""Execute the notebooks of this folder; exit 1 if a cell raises.

    pip install -e ".[notebooks]"
    python notebooks/run.py --quick                 # all, in quick mode (CI)
    python notebooks/run.py 02_flax_cnn --out out/  # one, full, keep the outputs
    python notebooks/run.py --check-stripped        # only check: no outputs stored

``--quick`` sets ``JAXCONV_NOTEBOOK_QUICK=1`` for the kernel, which the
notebooks read to shrink training and timings.  The notebooks run in a
temporary folder; the files here are never modified (``--out`` writes the
executed copies elsewhere).  ``--check-stripped`` fails when a committed
notebook holds outputs or execution counts (clear them before committing,
e.g. ``jupyter nbconvert --clear-output --inplace notebooks/*.ipynb``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def stored_outputs(path: Path) -> list[str]:
    """Where ``path`` holds outputs or execution counts (plain JSON, no nbformat)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [
        f"{path.name}: cell {i} has "
        + ("outputs" if cell.get("outputs") else "an execution count")
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


def execute(path: Path, *, out: Path | None, timeout: int) -> float:
    """Run every cell of ``path`` in a fresh kernel; return the seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": workdir}})
        client.execute()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python notebooks/run.py",
        description="Execute the notebooks (all, or those named); exit 1 on an "
                    "error in any cell.")
    parser.add_argument("names", nargs="*",
                        help="notebooks to run, e.g. 01_quick_start (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="set JAXCONV_NOTEBOOK_QUICK=1: small training and timings")
    parser.add_argument("--out", type=Path,
                        help="write the executed notebooks (with outputs) here")
    parser.add_argument("--timeout", type=int, default=900,
                        help="seconds allowed per cell (default 900)")
    parser.add_argument("--check-stripped", action="store_true",
                        help="only check that no notebook stores outputs")
    args = parser.parse_args(argv)

    paths = sorted(HERE.glob("*.ipynb"))
    if args.names:
        wanted = {n.removesuffix(".ipynb") for n in args.names}
        unknown = wanted - {p.stem for p in paths}
        if unknown:
            parser.error(f"no notebook named {', '.join(sorted(unknown))}")
        paths = [p for p in paths if p.stem in wanted]

    if args.check_stripped:
        problems = [msg for p in paths for msg in stored_outputs(p)]
        for msg in problems:
            print(msg)
        print(f"{len(paths)} notebooks checked: "
              + ("outputs stored" if problems else "no outputs stored"))
        return 1 if problems else 0

    if args.quick:
        os.environ["JAXCONV_NOTEBOOK_QUICK"] = "1"  # the kernel inherits it
    failed = []
    for path in paths:
        print(f"{path.name} ...", flush=True)
        try:
            seconds = execute(path, out=args.out, timeout=args.timeout)
        except Exception as err:  # CellExecutionError, a timeout, a dead kernel
            failed.append(path.name)
            print(f"{path.name}: FAILED\n{err}", flush=True)
        else:
            print(f"{path.name}: ok in {seconds:.0f} s", flush=True)
    print(f"{len(paths) - len(failed)} of {len(paths)} notebooks ran without error")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
