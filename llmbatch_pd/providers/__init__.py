"""Wire protocols: one module per API dialect."""
