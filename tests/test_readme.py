"""The README's Python examples run as written: every ```python block, in order, in one
IPython namespace (some are notebook cells with %magics), with the providers' endpoints pointed at the loopback simulator through the
environment variables the README documents (nothing else is changed)."""

import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from llmbatch_pd.sim import Simulator

from .conftest import KEY

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [textwrap.dedent(b) for b in re.findall(r"^ *```python\n(.*?)^ *```", text, re.S | re.M)]


def test_the_readme_has_examples() -> None:
    assert len(blocks()) >= 5


def test_every_readme_example_runs(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LLMBATCH_PD_CACHE", str(tmp_path / "cache.sqlite"))
    with Simulator(ttft_ms=1, api_key=KEY) as sim:
        for name in ("OPENAI", "DEEPSEEK", "GEMINI"):
            monkeypatch.setenv(f"{name}_BASE_URL", sim.base_url)
            monkeypatch.setenv(f"{name}_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.anthropic_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        from IPython.core.interactiveshell import InteractiveShell

        shell = InteractiveShell.instance()  # the blocks with %magics run as a notebook runs them
        try:
            for i, code in enumerate(blocks(), 1):
                with _quiet():
                    result = shell.run_cell(code, silent=True)
                error = result.error_before_exec or result.error_in_exec
                if error is not None:
                    pytest.fail(f"README block {i} failed: {error!r}\n{code}")
            namespace = dict(shell.user_ns)
        finally:
            InteractiveShell.clear_instance()
        sent = sim.stats()["total"]
    assert sent > 0
    assert isinstance(namespace["res"], pd.DataFrame) and namespace["res"]["label"].notna().sum() >= 290


class _quiet:
    """Row warnings (the bundled reviews have 3 without text) are expected here."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", UserWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
