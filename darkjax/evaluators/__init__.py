"""Evaluators: classification metrics, retrieval, plots."""
