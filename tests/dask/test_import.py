"""``import llmbatch_pd`` after ``import dask.dataframe`` on an install without distributed
(``pip install dask[dataframe]``): the pandas accessor works; ``ddf.llm`` is simply not there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dask.dataframe")

SCRIPT = """
import sys
sys.modules["distributed"] = None  # as if distributed were not installed
import dask.dataframe
import pandas as pd
import llmbatch_pd
frame = pd.DataFrame({"title": ["a"]})
assert hasattr(frame, "llm") and hasattr(frame.llm, "apply")
print("ok")
"""


def test_import_without_distributed_keeps_the_pandas_accessor():
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
