"""The seeded mini-batch sampler: one batch of prompt indices per generation.

Stateless by design: the batch of generation ``g`` is a pure function of (seed, g), so resuming a
run needs only the generation number. Items are drawn from a stream of epochs, each a fresh
permutation of the split; no item repeats within an epoch.
"""

from __future__ import annotations

import numpy as np


class BatchSampler:
    """Batches of ``batch_size`` indices into a split of ``n`` items."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < 1:
            raise ValueError("BatchSampler: the split is empty")
        if not 1 <= batch_size:
            raise ValueError(f"BatchSampler: batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed

    def _epoch(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def batch(self, generation: int) -> np.ndarray:
        """Indices (batch_size,) for ``generation`` (0-based)."""
        return self.items(generation * self.batch_size, self.batch_size)

    def items(self, start: int, count: int) -> np.ndarray:
        """Items ``start .. start + count - 1`` of the stream of epochs (``batch`` reads it in
        steps of batch_size; the informative sampler reads its fresh items from it)."""
        out = []
        while len(out) < count:
            epoch, offset = divmod(start + len(out), self.n)
            take = min(self.n - offset, count - len(out))
            out.extend(self._epoch(epoch)[offset:offset + take].tolist())
        return np.asarray(out, dtype=np.int64)

    def epoch_of(self, generation: int) -> int:
        """The epoch the first item of ``generation``'s batch comes from."""
        return generation * self.batch_size // self.n
