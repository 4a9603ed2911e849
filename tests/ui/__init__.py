"""Tests of llmbatch_pd/ui/ (and of what users see of it)."""
