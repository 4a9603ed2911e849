"""Tests of llmbatch_pd/runs/ (and of what users see of it)."""
