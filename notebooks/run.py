"""Run the notebooks top to bottom and write the executed copies into a folder.

The notebooks are kept in git without outputs; ``make notebooks`` runs them on the bundled
data and writes the executed copies (default ``reports/notebooks/``), so what you read is
never stale.

    python notebooks/run.py [--out reports/notebooks] [NOTEBOOK ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run(path: Path, out_dir: Path | None = None, timeout: int = 600) -> Any:
    """Execute one notebook in the notebooks folder; return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    )
    client.execute()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / path.name)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the notebooks top to bottom.")
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=Path("reports/notebooks"))
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(HERE.glob("[0-9][0-9]-*.ipynb"))
    for p in paths:
        t0 = time.perf_counter()
        run(p, args.out)
        print(f"ran {p.name} in {time.perf_counter() - t0:.1f} s -> {args.out / p.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
