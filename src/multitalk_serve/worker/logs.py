"""Keeping secrets and payloads out of the logs, whatever the log level.

The RunPod SDK logs whole jobs and results at DEBUG (inputs with base64 media, ``s3Config`` credentials, results
with inline videos and presigned URLs). ``install()`` routes every SDK and Python log line through ``scrub``:
long base64 runs, data URIs, credential values and URL query strings (signatures, tokens) are replaced.
"""

from __future__ import annotations

import logging
import re

SECRET_KEYS = (
    r"(?:accessSecret|accessId|access[_-]?key(?:[_-]?id)?|secret[_a-z]*|password|token|api[_-]?key"
    r"|aws_secret_access_key|aws_access_key_id|credentials?|authorization|x-amz-security-token)"
)
_PATTERNS = [
    (re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=\s]+"), "<data-uri redacted>"),
    (re.compile(r"[A-Za-z0-9+/]{120,}={0,2}"), lambda m: f"<{len(m.group(0))} base64 characters redacted>"),
    # key: 'value', key="value", 'key': b'value' (botocore logs header dicts with bytes values)
    (re.compile(rf"(['\"]?{SECRET_KEYS}['\"]?\s*[:=]\s*b?)(['\"])(.*?)\2", re.IGNORECASE), r"\1\2<redacted>\2"),
    # AWS signature pieces wherever they appear (Authorization headers, presigned URLs, canonical requests)
    (re.compile(r"(Credential=|Signature=|X-Amz-Credential=|X-Amz-Signature=)[^\s,;&'\"]+"), r"\1<redacted>"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{12,}\b"), "<access key redacted>"),
    (re.compile(r"(https?://[^\s'\"?]+)\?[^\s'\"]*"), r"\1?<query redacted>"),
]


def scrub(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install() -> None:
    """Scrub the RunPod SDK's own logger and every handler of the root logger (idempotent)."""
    from runpod.serverless.modules.rp_logger import RunPodLogger

    if not getattr(RunPodLogger.log, "_scrubbed", False):
        original = RunPodLogger.log

        def log(self, message, message_level="INFO", job_id=None):
            return original(self, scrub(str(message)), message_level, job_id)

        log._scrubbed = True
        RunPodLogger.log = log
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())
