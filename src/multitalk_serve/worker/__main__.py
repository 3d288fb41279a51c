"""``python -m multitalk_serve.worker [--rp_serve_api | --test_input JSON]``: start the RunPod worker.

Loads the pipeline from ``MODEL_PATH`` once, then hands the async handler to the RunPod SDK (production job loop,
local API server with ``--rp_serve_api``, or one local job with ``--test_input`` / ``test_input.json``).
"""

from __future__ import annotations

import logging
import os
import sys


def _log_level() -> int:
    name = (os.environ.get("RUNPOD_LOG_LEVEL") or os.environ.get("RUNPOD_DEBUG_LEVEL") or "INFO").upper()
    return {"WARN": logging.WARNING}.get(name, getattr(logging, name, logging.INFO))


def main() -> None:
    # The SDK logs whole jobs at DEBUG (its default): INFO unless asked, and scrubbed at every level (logs.py).
    os.environ.setdefault("RUNPOD_LOG_LEVEL", os.environ.get("RUNPOD_DEBUG_LEVEL", "INFO"))
    logging.basicConfig(level=_log_level(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, _log_level()))  # their DEBUG is wire-level noise
    import runpod

    from .logs import install

    install()

    from ..engine import CheckpointError, EngineError
    from .config import WorkerConfig
    from .fitness import check_gpu_headroom, check_model_folder, plan_models
    from .handler import Worker
    from .parallel import parallel_size

    group, world = None, 1
    try:
        config = WorkerConfig()  # a bad MAX_DURATION_SECONDS (or any number setting) is E_CONFIG, not a traceback
        adapters, _ = plan_models(config)  # MULTITALK_ADAPTERS / MULTITALK_MODEL: E_CONFIG or E_MODEL naming them
        files = check_model_folder(config, adapters=adapters)
        logging.getLogger("multitalk_serve.worker").info("model folder complete: %d transformer files", len(files))
        world = parallel_size(config)  # MULTITALK_GPUS: one process per GPU, each job split across them
        if world > 1:
            from . import parallel

            worker, group = parallel.start(config, world)
        else:
            worker = Worker.from_config(config)
    except CheckpointError as exc:
        logging.getLogger("multitalk_serve.worker").error(
            "E_MODEL: %s (fill the volume once with `multitalk-serve download --profile bf16 --dest %s`, "
            "see docs/provisioning.md)",
            exc,
            config.model_path,
        )
        sys.exit(1)
    except (EngineError, ValueError) as exc:  # inconsistent settings (MULTITALK_PRESET, MULTITALK_MEMORY_PLAN, ...)
        logging.getLogger("multitalk_serve.worker").error("E_CONFIG: %s", exc)
        sys.exit(1)
    except (RuntimeError, TimeoutError) as exc:  # a rank of a multi-GPU worker failed to start
        if group is None and world <= 1:
            raise
        logging.getLogger("multitalk_serve.worker").error("E_PARALLEL: %s", exc)
        sys.exit(1)

    runpod.serverless.register_fitness_check(
        lambda: check_gpu_headroom(worker.pipeline.device, worker.config.max_resolution, worker.pipeline.memory_plan)
    )
    handle, handle_stream = worker.handle, worker.handle_stream
    if group is not None:  # a failed rank fails the job at once (E_PARALLEL), then the worker exits
        handle, handle_stream = group.wrap(handle), group.wrap_stream(handle_stream)
    try:
        if config.stream:  # every window streamed to /stream/{id}; the final output is the list of items, result last
            runpod.serverless.start(
                {"handler": handle_stream, "return_aggregate_stream": True, "concurrency_modifier": lambda c: 1}
            )
        else:
            runpod.serverless.start({"handler": handle, "concurrency_modifier": lambda current: 1})
    finally:
        if group is not None:
            if group.broken.is_set():
                group.exit_now()
            group.close()


if __name__ == "__main__":
    main()
