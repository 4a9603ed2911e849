"""Tests of llmbatch_pd/transport/ (and of what users see of it)."""
