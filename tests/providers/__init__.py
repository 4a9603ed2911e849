"""Tests of llmbatch_pd/providers/ (and of what users see of it)."""
