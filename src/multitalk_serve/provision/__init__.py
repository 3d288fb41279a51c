"""Provisioning: fill a model directory (a RunPod network volume) with a verified profile of weights."""
