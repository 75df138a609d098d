"""Diagnostics for logit comparisons across processes."""

import torch


def where_logits_differ(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> str:
    """Which positions and vocabulary entries hold the differences: a drift confined to late positions points at
    positional encodings, one confined to a few vocabulary entries at rows of the output embedding."""
    wrong = (got - expected).abs() > tolerance
    positions = wrong.any(dim=1).nonzero().flatten().tolist()
    vocabulary = wrong.any(dim=0).nonzero().flatten().tolist()
    return (f"{len(positions)} of {got.shape[0]} positions differ ({positions[:12]}), "
            f"{len(vocabulary)} of {got.shape[1]} vocabulary entries ({vocabulary[:12]})")
