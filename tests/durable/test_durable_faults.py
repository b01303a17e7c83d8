"""Nothing accepted is lost: at-least-once delivery through real faults (issue 13).

Every test sends through the real protocol while processes are killed, then checks in
PostgreSQL that every event whose source was told "accepted" (SMTP 250, MQTT PUBACK from
the broker to the publisher, HTTP 200 to Twilio's webhook, a returned ``send``) was
handled at least once. Duplicates are counted and reported (``record_property`` and the
test's output); the task consumer is ``idempotent``, so its effects must be exactly once.
"""

from __future__ import annotations

import json
import random
import secrets
import smtplib
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from support.mosquitto import MosquittoServer
from support.processes import free_tcp_port
from support.redis_server import RedisServer
from support.waiting import deadline, wait_until_sync

from .conftest import Deployment, Records

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(600)]

WAIT = 180  # seconds (scaled): a safety net for the slowest machine, never a speed check


def report(record_property: Callable[[str, Any], None], name: str, sent: int, handled: list[tuple[str, str, int]]) -> int:
    """Count and report duplicates (handler runs beyond the first per key); returns them."""
    keys = [key for key, _event_id, _count in handled]
    duplicates = len(keys) - len(set(keys))
    redelivered = sum(1 for _key, _event_id, count in handled if count > 1)
    record_property(f"{name}_sent", sent)
    record_property(f"{name}_handled_runs", len(keys))
    record_property(f"{name}_duplicates", duplicates)
    print(f"{name}: {sent} accepted, {len(set(keys))} handled, {duplicates} duplicate run(s), "
          f"{redelivered} run(s) of a redelivery")
    return duplicates


def wait_handled(records: Records, kind: str, wanted: set[str], deployment: Deployment, timeout: float = WAIT) -> None:
    def done() -> bool:
        deployment.check_alive()
        return wanted <= records.distinct_keys(kind)

    try:
        wait_until_sync(done, timeout, f"all {len(wanted)} {kind} events handled", interval=0.25)
    except AssertionError:
        missing = sorted(wanted - records.distinct_keys(kind))
        raise AssertionError(f"{len(missing)} {kind} event(s) never handled, e.g. {missing[:5]}\n{deployment.logs()}") from None


def mail(key: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "alice@example.org"
    message["To"] = "bob@example.com"
    message["Subject"] = f"mail {key}"
    message["Message-ID"] = key
    message.set_content(f"body of {key}\n")
    return message


def send_mails(port: int, keys: list[str], between: Callable[[int], None]) -> list[str]:
    """Send each mail as an MTA would (451: retried later); ``between(n)`` runs before mail n.

    Returns the Message-IDs the server accepted with 250, in order.
    """
    accepted: list[str] = []
    pending = list(keys)
    number = 0
    end = time.monotonic() + deadline(WAIT)
    while pending and time.monotonic() < end:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as client:
            for key in pending:
                between(number)
                number += 1
                try:
                    client.send_message(mail(key))
                except smtplib.SMTPResponseException as exc:
                    if exc.smtp_code != 451:
                        raise
                    continue  # deferred: an MTA tries again later
                except (smtplib.SMTPServerDisconnected, ConnectionError):
                    break
                accepted.append(key)
        done = set(accepted)
        pending = [key for key in keys if key not in done]
        if pending:
            time.sleep(0.2)
    return accepted


# -- SMTP -----------------------------------------------------------------------------------


def test_smtp_every_250_is_handled_through_two_worker_kills(
    deployment: Callable[..., Deployment], records: Records, record_property: Any
) -> None:
    port = free_tcp_port()
    deploy = deployment("smtp", DURABLE_SMTP_BIND=f"127.0.0.1:{port}")
    deploy.start("gateway", "gateway")
    deploy.start("worker", "worker")
    deploy.wait_port(port, b"220 ")
    kills = set(random.sample(range(40, 270), 2))

    def between(number: int) -> None:
        if number in kills:
            deploy.kill("worker")  # at a random point mid-stream
            deploy.start("worker", "worker")

    keys = [f"<{n}.{secrets.token_hex(3)}@durable.test>" for n in range(300)]
    accepted = send_mails(port, keys, between)
    assert len(accepted) == 300
    wait_handled(records, "email", set(accepted), deploy)
    report(record_property, "smtp", len(accepted), records.handled("email"))


def test_smtp_survives_redis_killed_with_appendfsync_always(
    deployment: Callable[..., Deployment], records: Records, record_property: Any, tmp_path: Path, redis_binary: str
) -> None:
    server = RedisServer(redis_binary, tmp_path / "redis", ["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    try:
        port = free_tcp_port()
        deploy = deployment("smtp", redis_url=server.url, DURABLE_SMTP_BIND=f"127.0.0.1:{port}")
        deploy.start("gateway", "gateway")
        deploy.start("worker", "worker")
        deploy.wait_port(port, b"220 ")

        def between(number: int) -> None:
            if number == 100:
                server.kill()  # SIGKILL: only what was fsynced survives
                time.sleep(0.5)
                server.start()

        keys = [f"<redis-{n}.{secrets.token_hex(3)}@durable.test>" for n in range(200)]
        accepted = send_mails(port, keys, between)
        assert len(accepted) == 200
        wait_handled(records, "email", set(accepted), deploy)
        report(record_property, "smtp_redis_restart", len(accepted), records.handled("email"))
    finally:
        server.stop()


@pytest.fixture
def redis_binary() -> str:
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("the redis-server binary is not installed")
    return binary


# -- MQTT -----------------------------------------------------------------------------------


class Publisher:
    """A paho publisher: QoS 1, each publish counted once the broker acknowledged it."""

    def __init__(self, broker: MosquittoServer) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"durable-pub-{secrets.token_hex(3)}")
        self.client.max_inflight_messages_set(100)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def publish_all(self, topic: str, keys: list[str], between: Callable[[int], None]) -> None:
        infos = []
        for number, key in enumerate(keys):
            between(number)
            infos.append(self.client.publish(f"{topic}/{number % 7}", key.encode(), qos=1))
        for info in infos:
            info.wait_for_publish(deadline(60))
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_deployment(deployment: Callable[..., Deployment], broker: MosquittoServer) -> tuple[Deployment, str]:
    topic = f"durable/{secrets.token_hex(3)}"
    deploy = deployment(
        "mqtt", DURABLE_MQTT_BROKER=broker.url, DURABLE_MQTT_CLIENT_ID=f"sb-durable-{secrets.token_hex(4)}",
        DURABLE_MQTT_TOPIC=topic,
    )  # fmt: skip
    deploy.start("gateway", "gateway")
    deploy.start("worker", "worker")
    return deploy, topic


def wait_mqtt_ready(deploy: Deployment, records: Records, publisher: Publisher, topic: str) -> None:
    """Publish probes until one is handled: the gateway is subscribed and a worker serves."""
    end = time.monotonic() + deadline(60)
    number = 0
    while time.monotonic() < end:
        deploy.check_alive()
        publisher.client.publish(f"{topic}/probe", f"probe-{number}".encode(), qos=1)
        number += 1
        time.sleep(0.3)
        if any(key.startswith("probe-") for key in records.distinct_keys("mqtt")):
            return
    raise RuntimeError(f"no probe handled\n{deploy.logs()}")


def test_mqtt_qos1_through_a_worker_kill(
    deployment: Callable[..., Deployment], records: Records, broker: MosquittoServer, record_property: Any
) -> None:
    deploy, topic = mqtt_deployment(deployment, broker)
    publisher = Publisher(broker)
    try:
        wait_mqtt_ready(deploy, records, publisher, topic)
        keys = [f"m{n}" for n in range(1000)]
        killed = threading.Event()

        def kill_mid_way() -> None:
            wait_until_sync(lambda: len(records.distinct_keys("mqtt")) >= 300, WAIT, "300 handled", interval=0.1)
            deploy.kill("worker")
            deploy.start("worker", "worker")
            killed.set()

        killer = threading.Thread(target=kill_mid_way)
        killer.start()
        publisher.publish_all(topic, keys, lambda number: None)
        killer.join(deadline(WAIT))
        assert killed.is_set()
        wait_handled(records, "mqtt", set(keys), deploy)
        report(record_property, "mqtt_worker_kill", len(keys), [h for h in records.handled("mqtt") if h[0] in set(keys)])
    finally:
        publisher.close()


def test_mqtt_qos1_through_a_gateway_kill(
    deployment: Callable[..., Deployment], records: Records, broker: MosquittoServer, record_property: Any
) -> None:
    deploy, topic = mqtt_deployment(deployment, broker)
    publisher = Publisher(broker)
    try:
        wait_mqtt_ready(deploy, records, publisher, topic)
        keys = [f"g{n}" for n in range(1000)]

        def between(number: int) -> None:
            if number == 400:
                # Killed with messages stored-but-unacknowledged, received-but-unstored and
                # in flight; the broker queues the rest for the persistent session.
                deploy.kill("gateway")
                deploy.start("gateway", "gateway")

        publisher.publish_all(topic, keys, between)
        wait_handled(records, "mqtt", set(keys), deploy)
        report(record_property, "mqtt_gateway_kill", len(keys), [h for h in records.handled("mqtt") if h[0] in set(keys)])
    finally:
        publisher.close()


# -- SMS ------------------------------------------------------------------------------------


def post_webhook(port: int, sid: str, body: str) -> int:
    """One incoming-SMS webhook, signed as Twilio signs it; the HTTP status."""
    from twilio.request_validator import RequestValidator

    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+15557654321",
              "To": "+15551234567", "Body": body, "NumMedia": "0"}
    url = "https://sms.durable.test/sms/inbound"
    signature = RequestValidator("durable-auth-token").compute_signature(url, params)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/sms/inbound", data=urllib.parse.urlencode(params).encode(),
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_sms_webhooks_through_a_worker_kill(
    deployment: Callable[..., Deployment], records: Records, record_property: Any
) -> None:
    port = free_tcp_port()
    deploy = deployment("sms", DURABLE_HTTP_BIND=f"127.0.0.1:{port}")
    deploy.start("gateway", "gateway")
    deploy.start("worker", "worker")
    deploy.wait_port(port)
    sids = [f"SM{secrets.token_hex(16)}" for _ in range(200)]
    killed = threading.Event()

    def kill_mid_way() -> None:
        wait_until_sync(lambda: len(records.distinct_keys("sms")) >= 60, WAIT, "60 handled", interval=0.1)
        deploy.kill("worker")
        deploy.start("worker", "worker")
        killed.set()

    killer = threading.Thread(target=kill_mid_way)
    killer.start()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda sid: post_webhook(port, sid, f"hello {sid[-4:]}"), sids))
    killer.join(deadline(WAIT))
    assert killed.is_set()
    assert statuses == [200] * len(sids)  # each answered only once stored
    wait_handled(records, "sms", set(sids), deploy)
    report(record_property, "sms", len(sids), records.handled("sms"))


# -- Task channels -----------------------------------------------------------------------


def dead_letters(deploy: Deployment) -> list[dict[str, Any]]:
    result = deploy.switchboard("deadletters", "list", "tasks", "--json")
    assert result.returncode == 0, result.stderr
    letters: list[dict[str, Any]] = json.loads(result.stdout)["dead_letters"]
    return letters


def test_tasks_through_a_worker_kill_and_a_poison_task_dead_lettered_then_replayed(
    deployment: Callable[..., Deployment], records: Records, record_property: Any, tmp_path: Path
) -> None:
    deploy = deployment("")
    (tmp_path / "poison").write_text("on")
    deploy.start("worker", "worker")
    output = deploy.command("send_tasks", "--count", "1000", "--poison")  # each send returns once stored
    assert "done 1000" in output
    wait_until_sync(lambda: len(records.effects()) >= 300, WAIT, "300 tasks done", interval=0.1)
    deploy.kill("worker")
    deploy.start("worker", "worker")
    wanted = {str(n) for n in range(1000)}
    wait_handled(records, "task", wanted, deploy)
    effects = records.effects()
    assert sorted(effects, key=int) == sorted(wanted, key=int)  # idempotent: exactly once each
    report(record_property, "tasks", 1000, records.handled("task"))

    # The poison task failed max_deliveries (3) times, then moved to the dead letters.
    wait_until_sync(lambda: len(dead_letters(deploy)) == 1, WAIT, "the poison task dead-lettered", interval=0.5)
    (letter,) = dead_letters(deploy)
    assert letter["deliveries"] == 3 and "RuntimeError: poisoned task poison" in letter["error"]
    assert letter["message"] == {"type": "task.run", "n": "poison", "poison": True}

    # Fixed (the flag is gone): replayed from the CLI, handled under its event id.
    (tmp_path / "poison").unlink()
    replay = deploy.switchboard("deadletters", "replay", "tasks", "--all")
    assert replay.returncode == 0 and "replayed 1" in replay.stdout, replay.stdout + replay.stderr
    wait_handled(records, "task", {"poison"}, deploy)
    assert [event_id for key, event_id, _c in records.handled("task") if key == "poison"] == [letter["event_id"]]
    assert dead_letters(deploy) == []


def test_a_deploy_loses_and_duplicates_nothing(
    deployment: Callable[..., Deployment], records: Records, record_property: Any
) -> None:
    deploy = deployment("")
    deploy.start("old", "worker")
    sender = threading.Thread(target=deploy.command, args=("send_tasks", "--count", "1000"))
    sender.start()
    wait_until_sync(lambda: len(records.effects()) >= 200, WAIT, "200 tasks done", interval=0.1)
    deploy.start("new", "worker")
    assert deploy.stop("old") == 0  # SIGTERM: finishes what it read, then exits cleanly
    sender.join(deadline(WAIT))
    wanted = {str(n) for n in range(1000)}
    wait_handled(records, "task", wanted, deploy)
    handled = records.handled("task")
    duplicates = report(record_property, "deploy", 1000, handled)
    assert duplicates == 0 and len(handled) == 1000
    assert all(count == 1 for _key, _event_id, count in handled)
