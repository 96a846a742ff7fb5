"""Turn ``model.path`` into a local folder, with a clear error when there is none."""

from __future__ import annotations

from pathlib import Path

from essa.models.prepare import DEMO_MODEL_ALIAS, demo_model_dir, is_prepared


def resolve_model_path(path: str) -> Path:
    """The demo alias -> its prepared folder; anything else must be an existing local folder."""
    if path == DEMO_MODEL_ALIAS:
        folder = demo_model_dir()
        if not is_prepared(folder):
            raise FileNotFoundError(f"the demo model is not prepared yet (expected in {folder}); "
                                    f"run `essa prepare-model`")
        return folder
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder} (model.path must be a local "
                                f"Hugging Face folder or {DEMO_MODEL_ALIAS!r}; nothing is downloaded)")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder: no config.json")
    return folder
