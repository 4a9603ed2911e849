"""Tests of llmbatch_pd/sim/ (and of what users see of it)."""
