"""The layers of the package, read from its source: which folder may import which, and where
pandas, aiohttp and the display libraries may appear. Every import counts (function-level and
``TYPE_CHECKING`` ones too: a type is a dependency). The rules are the README's Design section."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llmbatch_pd"

# folder -> the folders of the package it may import (besides itself)
MAY_IMPORT = {
    "core": set(),
    "planning": {"core"},
    "providers": {"core", "planning"},
    "store": {"core"},
    "transport": {"core", "providers"},
    "runs": {"core", "planning", "providers", "store", "transport"},
    "ui": {"core", "planning"},
    "sim": set(),
    # ddf.llm: the pandas path run per partition, coordinated across a cluster (its columns
    # from frames, its checks from the pandas call and options: "top")
    "dask": {"core", "planning", "providers", "store", "transport", "runs", "ui", "top"},
}
DISPLAY = {"ipywidgets", "tqdm", "IPython"}


def layer_of(module: str) -> str:
    """``llmbatch_pd.runs.chat`` -> ``runs``; a top-level module -> ``top``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in MAY_IMPORT) else "top"


def modules() -> dict[str, set[str]]:
    """Every module of the package -> every module or package it imports (absolute names)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        base = name.split(".") if rel.name == "__init__" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parent = base[: len(base) - (node.level - 1)]
                    target = ".".join(parent + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets.add(target)
                targets |= {f"{target}.{a.name}" for a in node.names if target.startswith("llmbatch_pd")}
        found[name] = targets
    return found


MODULES = modules()


def test_the_layout_is_what_the_readme_draws() -> None:
    folders = {layer_of(m) for m in MODULES} - {"top"}
    assert folders == set(MAY_IMPORT)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) != "top"))
def test_a_module_imports_only_the_layers_below_it(module: str) -> None:
    own = layer_of(module)
    inner = {layer_of(t) for t in MODULES[module] if t.startswith("llmbatch_pd.") and t in MODULES}
    assert inner - {own} <= MAY_IMPORT[own], f"{module} imports {sorted(inner - {own} - MAY_IMPORT[own])}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_pandas_http_and_display_live_in_their_layers(module: str) -> None:
    third = {t.split(".")[0] for t in MODULES[module] if not t.startswith("llmbatch_pd")}
    own = layer_of(module)
    if "pandas" in third:
        assert own in ("top", "dask"), f"{module} imports pandas: only the accessor layers touch DataFrames"
    if "dask" in third or "distributed" in third:
        assert own == "dask", f"{module} imports dask: only llmbatch_pd/dask/ does (an optional extra)"
    if "aiohttp" in third:
        assert own in ("transport", "sim"), f"{module} imports aiohttp: HTTP lives in transport/"
    if third & DISPLAY:
        assert own == "ui", f"{module} imports {sorted(third & DISPLAY)}: display lives in ui/"


def test_the_errors_module_keeps_its_public_path() -> None:
    """``llmbatch_pd.errors`` moved to ``core/``; a fresh interpreter still imports it (and
    the errors the package's ``__init__`` does not re-export) by its public name."""
    import subprocess
    import sys

    code = ("from llmbatch_pd.errors import RateLimitError, RowError, InputError\n"
            "import llmbatch_pd.errors, llmbatch_pd.core.errors\n"
            "assert llmbatch_pd.errors is llmbatch_pd.core.errors\n"
            "assert issubclass(RateLimitError, llmbatch_pd.errors.ProviderError)\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
