"""The RunPod serverless worker: a thin handler over ``multitalk_serve.engine``."""
