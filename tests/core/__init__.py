"""Tests of llmbatch_pd/core/ (and of what users see of it)."""
