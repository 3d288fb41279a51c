"""Limits of the model and of a job, each written once (imports nothing: the CLI and the worker's schema read them
before any library loads)."""

MAX_SPEAKERS = 2  # the model routes one or two speakers (label RoPE ranges, masks: person 1, person 2, background)
MAX_STEPS = 100  # sampling steps a job may ask for (official default 40; the speed LoRA needs 4-8)
