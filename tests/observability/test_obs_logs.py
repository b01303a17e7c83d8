"""Structured logs: one JSON object per line, and no secret in any line, in either format.

Unit tests drive the formatter and the redaction filter directly; process tests run
``switchboard run`` / ``gateway`` / ``worker`` with configuration full of secrets (a Redis
URL with a password, an auth token, Django's SECRET_KEY, all logged carelessly by the
settings module and the consumer) and read every line they wrote.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator

import pytest
from obs_helpers import SECRET_KEY, SECRETS, Deployment, http_get, json_lines

from switchboard.gateway import logs

# -- the formatter and the filter -------------------------------------------------------


@pytest.fixture(params=["json", "text"])
def output(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO, str]]:
    """A logger writing through a real handler of each format into a buffer."""
    stream = io.StringIO()
    logger = logging.getLogger(f"obs.test.{request.param}")
    logger.handlers[:] = [logs.make_handler(request.param, stream)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream, request.param
    finally:
        logger.handlers.clear()


def test_json_lines_have_the_fields() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("obs.test.json")
    logger.handlers[:] = [logs.make_handler("json", stream)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logs.CONTEXT["kind"] = "test"
    try:
        logger.info("hello %s\nsecond line", "world", extra={"connection": "gateway.x!y", "count": 3, "level": "clash"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    finally:
        logs.CONTEXT.pop("kind")
        logger.handlers.clear()
    first, second = json_lines(stream.getvalue())  # two records, two lines: the newline is escaped
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["level"] == "INFO" and first["logger"] == "obs.test.json" and first["process"] == os.getpid()
    assert first["message"] == "hello world\nsecond line"
    assert first["connection"] == "gateway.x!y" and first["count"] == 3 and first["kind"] == "test"
    assert first["extra.level"] == "clash"  # an extra never overwrites a fixed field
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


LEAKS = {
    "url password": ("connecting to redis://:hunter2-url@127.0.0.1:6379/0 failed", "hunter2-url"),
    "url user and password": ("hosts: ['rediss://app:p%40ss-w0rd@redis.internal:6380/1']", "p%40ss-w0rd"),
    "dict repr": ("options {'password': 'pass with spaces', 'db': 0}", "pass with spaces"),
    "json": ('body {"api_key": "k-1234567", "x": 1}', "k-1234567"),
    "assignment": ("auth_token=tw-abcdef123 sent", "tw-abcdef123"),
    "query string": ("GET /hook?signature=sig-998877&x=1", "sig-998877"),
    "header": ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
    "django setting": ("SECRET_KEY = 'django-insecure-abc123'", "django-insecure-abc123"),
}


@pytest.mark.parametrize("case", sorted(LEAKS))
def test_secrets_in_messages_are_masked(output: tuple[logging.Logger, io.StringIO, str], case: str) -> None:
    logger, stream, _format = output
    text, secret = LEAKS[case]
    logger.warning("%s", text)
    written = stream.getvalue()
    assert secret not in written
    assert logs.MASK in written


def test_secrets_in_extras_args_and_tracebacks_are_masked(output: tuple[logging.Logger, io.StringIO, str]) -> None:
    logger, stream, log_format = output
    logs.register_secrets(["literal-secret-4242"])
    logger.info(
        "upstream answered for %s",
        "literal-secret-4242",  # a configured value, with no key name nearby
        extra={"password": "extra-pw-1", "request": {"headers": {"cookie": "sessionid=cookie-val"}, "url": "redis://:url-pw-2@h"}},
    )
    try:
        raise ConnectionError("cannot reach redis://default:tb-pw-3@10.0.0.1:6379")
    except ConnectionError:
        logger.exception("layer down")
    written = stream.getvalue()
    for secret in ("literal-secret-4242", "extra-pw-1", "cookie-val", "url-pw-2", "tb-pw-3"):
        assert secret not in written, secret
    assert "upstream answered for ***" in written
    if log_format == "json":
        first = json_lines(written)[0]
        assert first["password"] == logs.MASK
        assert first["request"]["headers"]["cookie"] == logs.MASK
        assert first["request"]["url"] == "redis://:***@h"


def test_harmless_text_is_left_alone(output: tuple[logging.Logger, io.StringIO, str]) -> None:
    logger, stream, _format = output
    for text in ("http listening on 127.0.0.1:8000", "worker 3f2a listening on switchboard.http", "sessions=4 closed"):
        logger.info(text)
        assert text in stream.getvalue()


def test_redaction_of_huge_tokens_stays_linear() -> None:
    # A quadratic pattern would spend hours on these (minutes at a tenth of the size);
    # the suite's per-test timeout turns that into a failure, no clock needed here.
    for blob in ("a" * 300_000, "a." * 150_000, "password" * 40_000, "redis://" * 40_000):
        assert len(logs.REDACTOR.redact_text(blob)) > 0
    assert logs.REDACTOR.redact_text("x" * 100_000 + " token=abc123").endswith("token=***")


def test_secrets_are_found_in_configuration_and_environment() -> None:
    config = {
        "layer": {"CONFIG": {"hosts": ["redis://:pw-from-url@h:6379/0", "redis://h2"], "prefix": "p:"}},
        "protocols": {"sms": {"auth_token": "tok-sms-1", "account_sid": "AC123"}, "smtp": {"users": {"password": "pw-2"}}},
    }
    assert logs.secrets_in(config) == {"pw-from-url", "tok-sms-1", "pw-2"}
    environ = {"TWILIO_AUTH_TOKEN": "tok-env", "DATABASE_URL": "postgres://u:db-pw@h/db", "HOME": "/root"}
    assert logs.environment_secrets(environ) == {"tok-env", "db-pw"}


# -- real processes ---------------------------------------------------------------------


def assert_no_secrets(text: str) -> None:
    for secret in (*SECRETS.values(), SECRET_KEY):
        assert secret not in text, f"{secret!r} leaked into the log"


@pytest.mark.e2e
def test_run_process_writes_only_redacted_json(deployment: object) -> None:
    """``switchboard run --log-format json``: every line is JSON, none holds a secret."""
    running: Deployment = deployment(redis=False)  # type: ignore[operator]
    running.start("run", "run", "--log-format", "json")
    running.wait_ready()
    assert http_get(running.base_url + "/upstream")[0] == 200
    assert running.stop("run") == 0
    text = running.log("run")
    assert_no_secrets(text)
    records = json_lines(text)
    by_logger = {record["logger"]: record for record in records}
    assert by_logger["obs.settings"]["level"] == "WARNING"  # the careless config dump, masked
    assert "'auth_token': '***'" in by_logger["obs.settings"]["message"]
    upstream = [r for r in records if r["logger"] == "obs.routing" and "/upstream" in r["message"]]
    assert upstream and upstream[0]["message"].endswith("calling upstream with ***")
    assert upstream[0]["password"] == logs.MASK
    assert {r["kind"] for r in records} == {"run"}
    assert all(isinstance(r["process"], int) for r in records)
    assert any(r["logger"] == "switchboard.gateway" and "stopping" in r["message"] for r in records)


@pytest.mark.e2e
@pytest.mark.redis
def test_split_processes_mask_the_redis_password(deployment: object) -> None:
    """Gateway (``--log-format json``) and worker (``SWITCHBOARD_LOG_FORMAT=json``) over Redis."""
    split: Deployment = deployment(redis=True)  # type: ignore[operator]
    split.start("gateway", "gateway", "--log-format", "json")
    split.start("worker", "worker", env={"SWITCHBOARD_LOG_FORMAT": "json"})
    split.wait_ready()
    assert http_get(split.base_url + "/upstream")[0] == 200
    split.stop_all()
    for name in ("gateway", "worker"):
        text = split.log(name)
        assert_no_secrets(text)
        records = json_lines(text)
        dump = next(r for r in records if r["logger"] == "obs.settings")
        assert "redis://default:***@127.0.0.1:6379/0" in dump["message"]
        assert {r["kind"] for r in records} == {name}
    worker_records = json_lines(split.log("worker"))
    assert any(r["logger"] == "obs.routing" and r.get("worker_id") for r in worker_records)


def test_bad_log_format_in_the_environment_is_refused(deployment: object) -> None:
    env: Deployment = deployment(redis=False)  # type: ignore[operator]
    result = env.command("run", env={"SWITCHBOARD_LOG_FORMAT": "xml"}, timeout=30)
    assert result.returncode == 2 and "SWITCHBOARD_LOG_FORMAT" in result.stderr
