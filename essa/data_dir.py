"""Where the shared data lives: one rule for the task loaders (essa.data) and for data a reward
reads (the ifeval reward's NLTK tables).

A leaf module, importing nothing from essa: essa.data imports essa.rewards, so a reward cannot
import essa.data.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """``$ESSA_DATA_DIR``, else ``../shared/data`` beside the project checkout."""
    env = os.environ.get("ESSA_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"
