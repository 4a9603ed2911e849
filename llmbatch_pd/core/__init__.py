"""Data and rules every layer shares: types, errors, prompts, the budget ledger, the report's figures. Imports nothing else of the package."""
