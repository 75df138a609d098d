"""Evaluation of the accuracy / visual-token trade-off, the cost model and speed benchmarks."""
