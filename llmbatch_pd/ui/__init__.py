"""Progress displays: they read a run's counters and never call HTTP."""
