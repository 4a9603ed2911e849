"""Before a run: tokens, prices, the estimate, worst cases."""
