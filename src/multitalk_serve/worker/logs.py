"""Keeping secrets and payloads out of the logs, whatever the log level and whatever shape a request has.

The RunPod SDK logs whole jobs and results at DEBUG (inputs with base64 media, ``s3Config`` credentials, results
with inline videos and presigned URLs). ``install()`` routes every SDK and Python log line through ``scrub``:

- the value of a secret-bearing key (``s3Config`` and its variants, ``accessId``/``accessSecret``, ``password``,
  ``token``, ``api_key``, ``authorization``, ``credentials``, ...) is replaced whole, whatever it is: a string, a
  number, a list, an object (however nested), JSON inside a string, in Python-repr, JSON or ``key=value`` form;
- long base64 runs, data URIs, AWS signatures and access key ids, URL query strings and ``user:password@`` parts of
  URLs are replaced wherever they appear.

Python logging is scrubbed when each record is made (``logging.setLogRecordFactory``), so every logger and every
handler, also ones added later, sees only scrubbed text, exceptions' tracebacks included.
"""

from __future__ import annotations

import bisect
import logging
import re

SECRET_KEYS = (
    r"(?:s3[_-]?config|accessSecret|accessId|access[_-]?key(?:[_-]?id)?|secret[_a-z]*|password|passwd|token"
    r"|api[_-]?key|aws_secret_access_key|aws_access_key_id|aws_session_token|credentials?|authorization"
    r"|x-amz-security-token)"
)
# A secret-bearing key, quoted or not (also escaped quotes: JSON inside a string), then ':' or '='.
_KEY = re.compile(rf"(\\*['\"]?){SECRET_KEYS}\1\s*[:=]\s*", re.IGNORECASE)
# (pattern, replacement, and the literal texts one of which every match holds: None when there is none)
_PATTERNS = [
    (("base64,",), re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=\s]+"), "<data-uri redacted>"),
    (None, re.compile(r"[A-Za-z0-9+/]{120,}={0,2}"), lambda m: f"<{len(m.group(0))} base64 characters redacted>"),
    # AWS signature pieces wherever they appear (Authorization headers, presigned URLs, canonical requests)
    (
        ("Credential=", "Signature="),
        re.compile(r"(Credential=|Signature=|X-Amz-Credential=|X-Amz-Signature=)[^\s,;&'\"]+"),
        r"\1<redacted>",
    ),
    (("AKIA", "ASIA"), re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{12,}\b"), "<access key redacted>"),
    (("?",), re.compile(r"(https?://[^\s'\"?]+)\?[^\s'\"]*"), r"\1?<query redacted>"),
    # (a scheme is a run of [a-z0-9+.-] ending at ':', which the run cannot hold: possessive = greedy here)
    (("://",), re.compile(r"(\b[a-z][a-z0-9+.-]*+://)[^\s/@'\"]+@", re.IGNORECASE), r"\1<redacted>@"),
]
_ESCAPED_QUOTE = re.compile(r"\\+['\"]")
_CLOSER = re.compile(r"\s*(?:[,}\])]|$)")
_KEY_CLOSER = re.compile(r"\s*(?:[,:}\])]|$)")
_STOP = set(",;&}])\n\r\t ")


def _closes(text: str, i: int, key: bool = False) -> bool:
    """A quote at ``i`` closes its string only when what follows is structure (``, } ] )``, and ``:`` after a key
    inside a structure) or the end: escaping is ambiguous in text that went through repr or JSON more than once,
    structure is not."""
    return (_KEY_CLOSER if key else _CLOSER).match(text, i) is not None


def _value_end(text: str, start: int, structured: bool = True) -> int:
    """Where the value starting at ``start`` ends: a quoted string (also an escaped-quoted one, as JSON inside a
    string shows), a bracketed structure (brackets inside strings ignored), or a bare word: up to the next
    delimiter after a quoted key (``'token': 5,``), the rest of the line after a bare one (``token=a b c``). An
    unterminated value runs to the end of the text (too much is redacted rather than too little)."""
    n = len(text)
    if text.startswith(("b'", 'b"'), start):  # bytes repr: b'...'
        start += 1
    escaped = _ESCAPED_QUOTE.match(text, start)
    if escaped:  # \"value\" inside JSON inside a string: up to the same escaped quote followed by structure
        delim = escaped.group(0)
        i = text.find(delim, escaped.end())
        while i >= 0 and not _closes(text, i + len(delim)):
            i = text.find(delim, i + 1)
        return n if i < 0 else i + len(delim)
    first = text[start] if start < n else ""
    if first in ("'", '"'):
        i = start + 1
        while i < n:
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == first and _closes(text, i + 1):
                return i + 1
            i += 1
        return n
    if first and first in "{[(":
        depth, quote, i = 0, "", start
        while i < n:
            ch = text[i]
            if quote:
                if ch == "\\":
                    i += 2
                    continue
                if ch == quote and _closes(text, i + 1, key=True):
                    quote = ""
            elif ch in "'\"":
                quote = ch
            elif ch in "{[(":
                depth += 1
            elif ch in "}])":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    i = start
    stops = _STOP if structured else "\n\r&"  # key=value in free text: the rest of the line
    while i < n and text[i] not in stops:
        i += 1
    return i


# Every secret key starts with one of these (lower case): where none occurs, no key does. Finding them with
# ``str.find`` in the lower-cased text and trying ``_KEY`` only there gives what ``_KEY.search`` gives, without
# running the regex at every position of a long base64 payload (about 1000x faster on a job with inline media).
_KEY_ANCHORS = ("s3", "access", "secret", "passw", "token", "api", "aws_", "credential", "authorization", "x-amz-")


def _key_candidates(text: str) -> list[int]:
    """Sorted positions where a secret key may start (ASCII text: lower-casing keeps every position)."""
    lower = text.lower()
    found: set[int] = set()
    for anchor in _KEY_ANCHORS:
        i = lower.find(anchor)
        while i >= 0:
            found.add(i)
            i = lower.find(anchor, i + 1)
    return sorted(found)


def _key_search(text: str, pos: int, candidates: list[int] | None) -> re.Match | None:
    """``_KEY.search(text, pos)``; with ``candidates`` (ASCII text) only where a key can start: a match starts at
    most a run of backslashes and one quote before its key."""
    if candidates is None:
        return _KEY.search(text, pos)
    for k in candidates[bisect.bisect_left(candidates, pos) :]:
        j = k
        if j > pos and text[j - 1] in "'\"":
            j -= 1
        while j > pos and text[j - 1] == "\\":
            j -= 1
        for start in range(j, k + 1):
            if (match := _KEY.match(text, start)) is not None:
                return match
    return None


def _redact_keyed(text: str) -> str:
    """Replace the whole value of every secret-bearing key, whatever its shape."""
    # (IGNORECASE also lets a few non-ASCII letters match ASCII ones: other text takes the regex at every position)
    candidates = _key_candidates(text) if text.isascii() else None
    out, pos = [], 0
    while (match := _key_search(text, pos, candidates)) is not None:
        start = match.end()
        end = _value_end(text, start, structured=bool(match.group(1)))
        out.append(text[pos:start])
        if end > start:
            quote = text[start] if text[start] in "'\"" else ""
            out.append(f"{quote}<redacted>{quote}")
        pos = end if end > start else start
    out.append(text[pos:])
    return "".join(out)


def scrub(text: str) -> str:
    text = _redact_keyed(text)
    for needles, pattern, replacement in _PATTERNS:
        # a pattern runs only where the literal text every match of it holds occurs (a cheap exact pre-check)
        if needles is None or any(n in text for n in needles):
            text = pattern.sub(replacement, text)
    return text


class ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        _scrub_record(record)
        return True


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what there is, scrubbed
        message = f"{record.msg} {record.args}"
    cleaned = scrub(message)
    if cleaned != message:  # (args kept otherwise: some formatters read them)
        record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


def install() -> None:
    """Scrub the RunPod SDK's own printer and every Python log record (idempotent)."""
    from runpod.serverless.modules.rp_logger import LOG_LEVELS, RunPodLogger

    if not getattr(RunPodLogger.log, "_scrubbed", False):
        original = RunPodLogger.log

        def log(self, message, message_level="INFO", job_id=None):
            # a line the SDK would not print is not scrubbed (nor printed): the SDK hands whole jobs to ``debug``
            if self.level == "NOTSET" or (
                message_level in LOG_LEVELS
                and self.level in LOG_LEVELS
                and LOG_LEVELS.index(self.level) > LOG_LEVELS.index(message_level)
            ):
                return None
            return original(self, scrub(str(message)), message_level, job_id)

        log._scrubbed = True
        RunPodLogger.log = log
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "_scrubbed", False):

        def make_record(*args, **kwargs):
            record = factory(*args, **kwargs)
            _scrub_record(record)
            return record

        make_record._scrubbed = True
        logging.setLogRecordFactory(make_record)
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())
