"""Base models: the CPU demo model's preparation and resolving a configured model path."""

from essa.models.prepare import DEMO_MODEL_ALIAS, demo_model_dir, prepare_demo_model
from essa.models.resolve import resolve_model_path

__all__ = ["DEMO_MODEL_ALIAS", "demo_model_dir", "prepare_demo_model", "resolve_model_path"]
