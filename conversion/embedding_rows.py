"""Rows for tokens added to the vocabulary, drawn as transformers' `convert_llava_weights_to_hf.py` draws them:
from a normal distribution with the mean of the existing input embeddings and 1e-5 times their covariance, for the
input embeddings and the LM head alike. Seeded, so a conversion is reproducible."""

from collections.abc import Callable

import torch

from .errors import ConversionError

NEW_ROW_COVARIANCE_SCALE = 1e-5
STATISTICS_BLOCK_ROWS = 4096


class EmbeddingRowSampler:
    def __init__(self, load_embeddings: Callable[[], torch.Tensor], seed: int = 0):
        self._load_embeddings = load_embeddings
        self._seed = seed
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def observe(self, embeddings: torch.Tensor) -> None:
        """Compute the statistics from the embeddings when they pass by anyway (saves reading them twice)."""
        if self._stats is None:
            self._stats = self._statistics(embeddings)

    def sample(self, num_rows: int, stream: int) -> torch.Tensor:
        """`num_rows` new float32 rows; `stream` separates the draws of different matrices."""
        if self._stats is None:
            self._stats = self._statistics(self._load_embeddings())
        mean, scale_tril = self._stats
        generator = torch.Generator().manual_seed(self._seed + stream)
        noise = torch.randn(num_rows, mean.shape[0], generator=generator, dtype=torch.float64)
        return (mean.double() + noise @ scale_tril.T.double()).float()

    @staticmethod
    def _statistics(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Block by block, sums kept in float64: no float32 copy of the whole matrix is ever held.
        count, width = embeddings.shape
        total = torch.zeros(width, dtype=torch.float64)
        products = torch.zeros(width, width, dtype=torch.float64)
        for start in range(0, count, STATISTICS_BLOCK_ROWS):
            block = embeddings[start : start + STATISTICS_BLOCK_ROWS].float()
            total += block.sum(dim=0, dtype=torch.float64)
            products += block.T @ block
        mean = total / count
        covariance = (NEW_ROW_COVARIANCE_SCALE * (products / count - torch.outer(mean, mean))).float()
        del products
        if not torch.isfinite(covariance).all():
            raise ConversionError("The input embeddings hold NaN or infinite values; new token rows cannot be drawn.")
        scale_tril, info = torch.linalg.cholesky_ex(covariance)
        # A rank-deficient covariance (e.g. fewer rows than dimensions) needs a little jitter to factorise.
        jitter = 1e-6 * float(covariance.diagonal().mean()) + 1e-30
        while info.item() != 0:
            scale_tril, info = torch.linalg.cholesky_ex(covariance + jitter * torch.eye(width))
            jitter *= 10
        return mean.float(), scale_tril


def append_rows(matrix: torch.Tensor, total_rows: int, sampler: EmbeddingRowSampler, stream: int) -> torch.Tensor:
    extra = total_rows - matrix.shape[0]
    if extra <= 0:
        return matrix
    return torch.cat([matrix, sampler.sample(extra, stream).to(matrix.dtype)])
