"""Log output for gateway and worker processes: plain text or one JSON object per line, redacted.

Why JSON: log shippers (Loki, Elasticsearch, CloudWatch) index fields, and a line-oriented
JSON object survives multi-line messages and tracebacks as one record. The stdlib
``logging`` module does all of the work; a 40-line formatter is less to trust than another
dependency (python-json-logger would add a package for the same dict-to-json step, and
redaction would still be ours to write).

Why redaction lives here and not at call sites: secrets reach logs by accident — a Redis
URL with its password inside a connection error, a settings dict printed while debugging,
a query string with ``?token=``. A filter on every output handler catches what a reviewer
misses. It works in three layers, in this order:

1. credentials in URLs (``redis://:pw@host``) and ``Bearer``/``Basic`` tokens are masked;
2. ``key=value`` / ``"key": "value"`` pairs whose key names a secret are masked;
3. the *values* of secrets found in configuration and in the environment (``auth_token``,
   ``password``, Redis URLs with a password, ``SECRET_KEY``) are replaced wherever they
   appear, even with no key name nearby (:func:`register_secrets`, :func:`secrets_in`).

Structured ``extra`` fields are masked by key name, recursively, before they are written.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import IO, Any, Final
from urllib.parse import unquote, urlsplit

MASK: Final = "***"
FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"

# Key names whose values are secrets (matched anywhere in the name, case-insensitively).
_SECRET_WORDS: Final = (
    r"password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|authori[sz]ation|credential|cookie|session[_-]?id|signature|(?<![a-z])(?:pass|pwd)(?![a-z])"
)
_SECRET_NAME: Final = re.compile(_SECRET_WORDS, re.IGNORECASE)

# Every pattern is linear in the text: a key or scheme starts only at a token boundary (the
# look-behinds) and is bounded in length, so a 100 kB blob cannot make redaction quadratic.
_URL_CREDENTIALS: Final = re.compile(r"((?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]{0,30}://[^:/?#@\s'\"]{0,200}):([^@/?#\s'\"]+)@")
_KEY_VALUE: Final = re.compile(
    r"(?P<key>[\"']?(?<![\w.-])[\w.-]{0,40}(?:" + _SECRET_WORDS + r")[\w.-]{0,40}[\"']?)"
    r"(?P<sep>\s*[:=]\s*)"
    r"(?P<value>b?\"(?:[^\"\\]|\\.)*\"|b?'(?:[^'\\]|\\.)*'|[^\s,;&)}\]]+)",
    re.IGNORECASE,
)
_AUTH_SCHEME: Final = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)

# Secrets shorter than this are not replaced by value: masking every "abc" would garble logs.
MIN_SECRET_LENGTH: Final = 4

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "_switchboard_redacted",
}


def is_secret_name(name: str) -> bool:
    """Whether a config key, header or field name holds a secret (``auth_token``, ``password``)."""
    return bool(_SECRET_NAME.search(name))


class Redactor:
    """Masks secrets in text and in structured values; shared by every handler's filter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self._pattern: re.Pattern[str] | None = None

    def register(self, values: Iterable[str]) -> None:
        """Mask these literal values wherever they appear (longest first, so no prefix leaks)."""
        with self._lock:
            known = set(self._secrets)
            known.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH)
            self._secrets = tuple(sorted(known, key=len, reverse=True))
            self._pattern = re.compile("|".join(re.escape(s) for s in self._secrets)) if self._secrets else None

    def redact_text(self, text: str) -> str:
        # Patterns first: a literal secret that happens to equal a key name ("sessionid")
        # must not hide that key from the key=value rule.
        text = _URL_CREDENTIALS.sub(rf"\1:{MASK}@", text)
        text = _AUTH_SCHEME.sub(rf"\1 {MASK}", text)
        text = _KEY_VALUE.sub(_mask_value, text)
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text

    def redact_value(self, value: Any, key: str | None = None) -> Any:
        """A JSON-ready copy of ``value`` with secrets masked (by key name, then by text)."""
        if key is not None and is_secret_name(key):
            return MASK
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            return {str(k): self.redact_value(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.redact_value(item) for item in value]
        if isinstance(value, (bytes, bytearray)):
            return self.redact_text(bytes(value).decode("utf-8", "backslashreplace"))
        return self.redact_text(repr(value))


def _mask_value(match: re.Match[str]) -> str:
    value = match["value"]
    prefix = "b" if value[:1] == "b" and value[1:2] in "'\"" and len(value) > 1 else ""
    quote = value[len(prefix) : len(prefix) + 1]
    masked = f"{prefix}{quote}{MASK}{quote}" if quote in ("'", '"') else MASK
    return f"{match['key']}{match['sep']}{masked}"


#: The process-wide redactor: one set of known secrets for every handler.
REDACTOR: Final = Redactor()

#: Fields added to every JSON line (``kind``, ``gateway_id``, ``worker_id``), so log lines
#: can be joined with ``switchboard status`` rows and metrics.
CONTEXT: dict[str, Any] = {}


def register_secrets(values: Iterable[str]) -> None:
    REDACTOR.register(values)


def secrets_in(value: Any, key: str | None = None) -> set[str]:
    """Secret values inside a config structure: values under secret-named keys and URL passwords."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        for k, v in value.items():
            found |= secrets_in(v, str(k))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found |= secrets_in(item, key)
    elif isinstance(value, str):
        if key is not None and is_secret_name(key):
            found.add(value)
        if "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.update({password, unquote(password)})
    return found


# Named like secrets ("pwd") but the shell's working directories: masking them masked every
# path under the project in log lines and tracebacks.
_NOT_SECRET_VARIABLES: Final = frozenset({"PWD", "OLDPWD"})


def environment_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of environment variables named like secrets (``TWILIO_AUTH_TOKEN``, ``REDIS_PASSWORD``)."""
    environ = os.environ if environ is None else environ
    named = {value for name, value in environ.items() if value and name not in _NOT_SECRET_VARIABLES and is_secret_name(name)}
    return named | secrets_in([value for value in environ.values() if "://" in value])


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, traceback and extra fields, once per record.

    Installed on handlers (not loggers), so it sees every record the handler writes,
    whichever logger emitted it — including uvicorn's and Django's.
    """

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_switchboard_redacted", False):
            return True
        redact = self.redactor.redact_text
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must still leave a (redacted) trace
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in extra_fields(record).items():
            setattr(record, key, self.redactor.redact_value(value, key))
        record._switchboard_redacted = True
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the caller passed as ``extra=``: every non-standard attribute of the record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, then extra fields.

    ``time`` is UTC ISO 8601 with milliseconds. An extra field named like a fixed one is
    written as ``extra.<name>`` rather than overwriting it. Tracebacks go in ``exception``.
    Newlines inside values are escaped by JSON, so a record never spans lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        data: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        for key, value in {**CONTEXT, **extra_fields(record)}.items():
            data["extra." + key if key in data else key] = value
        return json.dumps(data, default=repr, ensure_ascii=False)


def make_handler(log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler writing ``log_format`` ("text" or "json"), with redaction installed."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    return handler


def setup_logging(level: str | int = "INFO", log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Configure the root logger for a gateway/worker process (replacing its handlers).

    The CLI owns its process, so earlier handlers are replaced rather than doubled.
    """
    handler = make_handler(log_format, stream)
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler], force=True)
    # Python warnings become records too, so a JSON log holds nothing but JSON lines.
    logging.captureWarnings(True)
    return handler


def protect_root_handlers() -> None:
    """Add redaction to every root handler that lacks it (Django's ``LOGGING`` may add some)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class _DropClientErrors(logging.Filter):
    """Drops ``django.request``'s "Not Found: /x" warnings (4xx): the access log has that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        return not (record.levelno == logging.WARNING and isinstance(status, int) and 400 <= status < 500)


def quiet_django_duplicates(*, access_log: bool) -> None:
    """One line per event: drop what Django's default logging would write a second time.

    Django's default ``LOGGING`` gives the ``django`` logger a console handler of its own
    (with DEBUG on), and the record then also propagates to the root handler this
    process writes with: every "Not Found" came out twice, once unformatted. That default
    handler goes (records still reach the root handler, formatted and redacted); a
    ``LOGGING`` setting that configured its own handlers, or stopped propagation, is left
    alone. When this process writes the access log too, ``django.request``'s 4xx warnings
    say nothing the access line does not (``"GET /x HTTP/1.1" 404``), so they go as well;
    5xx errors, with their tracebacks, stay.
    """
    from django.utils.log import RequireDebugTrue

    django_logger = logging.getLogger("django")
    if django_logger.propagate:
        for handler in list(django_logger.handlers):
            default_console = (
                handler.get_name() == "console"
                and type(handler) is logging.StreamHandler
                and any(isinstance(f, RequireDebugTrue) for f in handler.filters)
            )
            if default_console:
                django_logger.removeHandler(handler)
    request_logger = logging.getLogger("django.request")
    for existing in [f for f in request_logger.filters if isinstance(f, _DropClientErrors)]:
        request_logger.removeFilter(existing)
    if access_log:
        request_logger.addFilter(_DropClientErrors())
