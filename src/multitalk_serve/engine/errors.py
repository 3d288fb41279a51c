"""Errors raised by the engine. Each names what is wrong (file, key, field) so callers can show it as is."""


class EngineError(Exception):
    """Base class of the engine's errors."""


class CheckpointError(EngineError):
    """A model directory or file is missing, incomplete or inconsistent (files, keys, shapes, configs)."""
