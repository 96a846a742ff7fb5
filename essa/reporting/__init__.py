"""Reports of finished runs: one run's report.md + fitness.png, and comparisons across runs."""
