"""Evaluation: metrics over scored samples (greedy accuracy, avg@k, pass@k)."""
