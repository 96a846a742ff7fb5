"""Informative mini-batches: prompts on which a generation's candidates disagree.

A prompt that every candidate answers right, or every one answers wrong, adds the same value to
every fitness and so carries no ranking information; ES pays for it on every candidate all the
same. Dynamic sampling in DAPO drops such prompts from GRPO's groups; here the analogue is the
choice of the next mini-batch. After each generation the sampler records, per prompt of the batch,
the mean reward over the candidates (the solve rate near the mean) and whether the candidates
disagreed. The next batch takes ``fresh_share`` of its prompts fresh from the seeded stream of
``BatchSampler`` (so the estimates keep meeting new prompts) and the rest from the prompts seen to
be informative, least recently used first.

The state (stream position, per-prompt records) is a small JSON-able dict saved in the run's
checkpoint, so a resumed run draws the same batches. Indices are rows of the train split only:
validation and test items are never drawn.
"""

from __future__ import annotations

import numpy as np

from essa.data.sampler import BatchSampler


def informative_items(rewards) -> np.ndarray:
    """Per item (column) of a (candidates, items) reward matrix: did the candidates disagree?
    Failed candidates (NaN rows) are left out."""
    rewards = np.asarray(rewards, dtype=np.float64)
    finite = np.isfinite(rewards)
    high = np.where(finite, rewards, -np.inf).max(axis=0, initial=-np.inf)
    low = np.where(finite, rewards, np.inf).min(axis=0, initial=np.inf)
    return finite.any(axis=0) & (high > low)


class InformativeSampler:
    """Mini-batches of ``batch_size`` indices into a train split of ``n`` items.

    ``batch(g)`` draws generation g's batch; ``update(ids, rewards)`` records what the candidates
    scored on it (rewards: (candidates, len(ids)); NaN rows for failed candidates).
    """

    def __init__(self, n: int, batch_size: int, seed: int, fresh_share: float = 0.5):
        if not 0 < fresh_share <= 1:
            raise ValueError(f"fresh_share must be in (0, 1], got {fresh_share}")
        self.stream = BatchSampler(n, batch_size, seed)
        self.n, self.batch_size, self.seed, self.fresh_share = n, batch_size, seed, fresh_share
        self.fresh_used = 0  # items taken from the stream so far
        # prompt -> [mean reward over the last generation that saw it, that generation, informative]
        self.records: dict[int, list] = {}
        self.last_batch: dict = {"fresh": 0, "reused": 0}

    def batch(self, generation: int) -> np.ndarray:
        """Indices (batch_size,) for ``generation``: reused informative prompts, then fresh ones."""
        want_fresh = max(1, int(round(self.fresh_share * self.batch_size)))
        # sorted first: the order must not depend on the dict's history (a resumed run rebuilds it)
        pool = sorted(i for i, (_, _, informative) in self.records.items() if informative)
        order = np.random.default_rng([self.seed, generation, 7]).permutation(len(pool))
        # least recently used first; the seeded permutation breaks ties
        pool = sorted((pool[k] for k in order), key=lambda i: self.records[i][1])
        reused = pool[: self.batch_size - want_fresh]
        taken, fresh = set(reused), []
        # fresh items fill the rest; an item already in the batch (the stream wrapped around) is
        # skipped, except when the split is too small to avoid it
        while len(reused) + len(fresh) < self.batch_size:
            item = int(self.stream.items(self.fresh_used, 1)[0])
            self.fresh_used += 1
            if item not in taken or len(taken) >= self.n:
                taken.add(item)
                fresh.append(item)
        self.last_batch = {"fresh": len(fresh), "reused": len(reused)}
        return np.asarray(reused + fresh, dtype=np.int64)

    def update(self, generation: int, ids, rewards) -> int:
        """Record a generation's rewards (candidates x items) on ``ids``; returns how many of
        the items were informative (finite rewards not all equal)."""
        ids = np.asarray(ids, dtype=np.int64)
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1, len(ids))
        disagree = informative_items(rewards)
        for column, item in enumerate(ids.tolist()):
            values = rewards[:, column]
            values = values[np.isfinite(values)]
            if values.size:  # all candidates failed: nothing learned about this prompt
                self.records[item] = [float(values.mean()), int(generation), bool(disagree[column])]
        return int(disagree.sum())

    def state(self) -> dict:
        """The resumable state (JSON-able)."""
        return {"fresh_used": self.fresh_used,
                "records": {str(i): r for i, r in sorted(self.records.items())}}

    def load_state(self, state: dict) -> None:
        """Continue from ``state()`` of the same split, batch size, seed and share."""
        self.fresh_used = int(state["fresh_used"])
        self.records = {int(i): [float(r[0]), int(r[1]), bool(r[2])]
                        for i, r in state["records"].items()}
        if any(not 0 <= i < self.n for i in self.records):
            raise ValueError("informative sampler state: prompt indices outside the train split "
                             f"of {self.n} items (was it saved for another task?)")
