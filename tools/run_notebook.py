"""Execute a notebook headless (nbclient) and export it to HTML (nbconvert).

    python tools/run_notebook.py notebooks/quickstart.ipynb --html build/quickstart.html

The kernel is this interpreter's own ipykernel, whatever ``python3`` kernelspec the machine or
the user has installed elsewhere, and it inherits this process's environment (so
``LLMBATCH_PD_CACHE``, or an unset ``OPENAI_API_KEY`` that makes the notebooks use the
simulator, reach it). Cells run in the notebook's own folder. A cell that raises stops the run
and the script exits with status 1. ``make demo`` runs it with the provider keys unset, so the
notebook answers from the loopback simulator and nothing reaches the internet.

Nothing waits for a click here: a headless run never clicks, so ``apply`` runs to the end and
``submit(confirm=True)`` waits for ``job.start()`` in code.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter
from traitlets import default


class NativeKernelManager(AsyncKernelManager):
    """This interpreter's ipykernel: no kernel directories are searched, so the native kernel
    (``sys.executable -m ipykernel_launcher``) is the only ``python3``."""

    @default("kernel_spec_manager")
    def _native_only(self) -> KernelSpecManager:
        return KernelSpecManager(kernel_dirs=[])


def execute(path: str | Path, *, timeout: float = 600) -> nbformat.NotebookNode:
    """Run every cell of the notebook at ``path`` and return it with its outputs."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_manager_class=NativeKernelManager, kernel_name="python3",
                            timeout=timeout, resources={"metadata": {"path": str(path.parent.resolve())}})
    client.execute()
    return nb


def to_html(nb: nbformat.NotebookNode) -> str:
    """The notebook as one HTML page (nbconvert's lab template)."""
    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--html", type=Path, help="write the executed notebook as HTML here")
    parser.add_argument("--output", type=Path, help="write the executed notebook (.ipynb) here")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        nb = execute(args.notebook, timeout=args.timeout)
    except CellExecutionError as exc:
        print(f"{args.notebook}: a cell failed\n{exc}", file=sys.stderr)
        return 1
    cells = sum(c.cell_type == "code" for c in nb.cells)
    print(f"{args.notebook}: {cells} code cells ran in {time.monotonic() - t0:.1f}s")
    for target, text in ((args.output, lambda: nbformat.writes(nb)), (args.html, lambda: to_html(nb))):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text(), encoding="utf-8")
            print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
