"""Send the rows of a pandas DataFrame through LLMs: ``df.llm.apply(template, model=...)``.

Importing this package registers the ``df.llm`` and ``s.llm`` accessors.
"""

from . import accessor as _accessor  # registers df.llm and s.llm
from . import cache
from .accessor import last_report, last_result
from .core import errors  # llmbatch_pd.errors, as before the layers
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

__version__ = "0.1.0"

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
]

del _accessor
