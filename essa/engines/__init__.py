"""Inference engines behind one small interface (:class:`essa.engines.base.Engine`)."""

from essa.engines.base import Completion, Engine, SamplingSettings
from essa.engines.factory import make_engine, sampling_from_config

__all__ = ["Completion", "Engine", "SamplingSettings", "make_engine", "sampling_from_config"]
