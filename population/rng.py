"""Random-state isolation for libraries that use numpy's global generator (pycma).

pycma reseeds ``np.random`` from its ``seed`` option and samples from it. A strategy wrapping
pycma owns a private ``RandomState`` and swaps it in for the duration of each pycma call, so
(a) pycma's draws depend only on the strategy's seed and its own history, whatever else uses
the global generator between calls, and (b) the caller's global state is left untouched.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np


@contextmanager
def private_global_random_state(private: np.random.RandomState) -> Iterator[None]:
    """Run the body with ``np.random``'s global state replaced by ``private``'s.

    On exit the state the body left behind is stored back into ``private`` and the caller's
    global state is restored, even if the body raised.
    """
    outer = np.random.get_state()
    np.random.set_state(private.get_state())
    try:
        yield
    finally:
        private.set_state(np.random.get_state())
        np.random.set_state(outer)
