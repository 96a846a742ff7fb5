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
        raise FileNotFoundError(f"model folder not found: {folder} (absolute: {folder.absolute()}). "
                                f"model.path must be a local Hugging Face folder or "
                                f"{DEMO_MODEL_ALIAS!r}; nothing is downloaded at run time. "
                                f"{_download_hint(path)}")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder: no config.json")
    return folder


def _download_hint(path: str) -> str:
    """What to do about a missing model folder: download it there once, or point elsewhere."""
    return (f"Download the model once on a machine with network, e.g. `hf download ORG/NAME "
            f"--local-dir {path}` (a Hugging Face id in model.path is not fetched either), or "
            f"point to an existing folder with --set model.path=DIR.")
