"""Tests of llmbatch_pd/planning/ (and of what users see of it)."""
