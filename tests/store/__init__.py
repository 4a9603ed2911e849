"""Tests of llmbatch_pd/store/ (and of what users see of it)."""
