"""The display's number formatting; it lives in :mod:`llmbatch_pd.core.numbers` (pure, no display
libraries) so that the engine's and the ledger's messages use the same figures."""

from ..core.numbers import *  # noqa: F403
from ..core.numbers import __all__  # noqa: F401
