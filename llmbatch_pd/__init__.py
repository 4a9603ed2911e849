"""Send the rows of a pandas DataFrame through LLMs: ``df.llm.apply(template, model=...)``.

Importing this package registers the ``df.llm`` and ``s.llm`` accessors. It is also an IPython
extension: ``%load_ext llmbatch_pd`` adds the ``%%llm`` and ``%llm_runs`` magics.
"""

import sys

from . import accessor as _accessor  # registers df.llm and s.llm
from . import cache
from .accessor import last_report, last_result
from .core import errors
from .core.errors import (
    AuthenticationError,
    BudgetError,
    FatalError,
    HostUnreachable,
    InputError,
    LLMBatchError,
    ProviderDown,
    ProviderError,
    QuotaExceededError,
    RepeatedFailure,
    RunInterrupted,
    StructuredOutputIgnored,
    TemplateError,
)
from .core.report import RunReport
from .frames import load_reviews

# the errors module keeps its public path (``from llmbatch_pd.errors import RowError``) now that
# it lives in core/: the same module object under both names
sys.modules[f"{__name__}.errors"] = errors

if "dask.dataframe" in sys.modules:  # dask is in use already: ddf.llm too (never imports dask itself)
    try:  # ddf.llm needs dask.distributed too; dask[dataframe] alone keeps the pandas accessor working
        from . import dask as _dask  # noqa: F401
    except ImportError:
        pass

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """``%load_ext llmbatch_pd`` (or ``c.InteractiveShellApp.extensions = ["llmbatch_pd"]``):
    the ``%%llm`` and ``%llm_runs`` magics (``llmbatch_pd.ui.magics``)."""
    from .ui.magics import load_ipython_extension as load

    load(ipython)


__all__ = [
    "AuthenticationError",
    "BudgetError",
    "FatalError",
    "HostUnreachable",
    "InputError",
    "LLMBatchError",
    "ProviderDown",
    "ProviderError",
    "QuotaExceededError",
    "RepeatedFailure",
    "RunInterrupted",
    "StructuredOutputIgnored",
    "RunReport",
    "TemplateError",
    "cache",
    "errors",
    "last_report",
    "last_result",
    "load_reviews",
]

del _accessor
