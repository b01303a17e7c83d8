"""Start-up as a user sees it: the banner, the access log, static files, split mode.

Real ``python -m switchboard`` processes on the test project, real clients (urllib, a
websockets client, a UDP socket); nothing is asserted about timing.
"""

from __future__ import annotations

import re
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.processes import redis_reachable
from support.waiting import deadline, wait_until_sync
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .conftest import REDIS_URL, CliDeployment, cli_env

BANNER_END = "Quit with CONTROL-C."
# uvicorn's access line, plus the duration: client - "request" status phrase time.
ACCESS = r'127\.0\.0\.1:\d+ - "{request}" {outcome} \d+\.\dms'


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=deadline(15)) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def banner_of(log: str) -> list[str]:
    """The banner block's lines: from the "running:" line to "Quit with CONTROL-C."."""
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if " running: " in line)
    end = next(i for i, line in enumerate(lines) if line.strip() == BANNER_END)
    return [line.strip() for line in lines[start : end + 1]]


def start_and_wait(deployment: CliDeployment, name: str, *args: str) -> list[str]:
    deployment.start(name, *args)

    def ready() -> bool:
        deployment.check_alive()
        return BANNER_END in deployment.log(name)

    wait_until_sync(ready, 60, f"{name}'s banner")
    return banner_of(deployment.log(name))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliDeployment]:
    """One ``switchboard run`` with DEBUG on, every listener, metrics, and two plugins enabled by ``--set``."""
    deployment = CliDeployment(cli_env(CLI_DEBUG="1"), tmp_path_factory.mktemp("cli-run"))
    try:
        start_and_wait(
            deployment, "run", "run", "--metrics-bind", "127.0.0.1:0",
            "--set", "protocols.sms.auth_token=not-a-real-token",
            "--set", "protocols.sms.public_base_url=https://sms.example.com/hooks",
            "--set", 'protocols.webrtc.ice_host_addresses=["127.0.0.1"]',
        )
        yield deployment
    finally:
        deployment.stop_all()
        print(deployment.logs())


def test_run_banner_names_every_address_the_layer_the_worker_and_metrics(running: CliDeployment) -> None:
    env = running.env
    lines = banner_of(running.log("run"))
    assert re.search(r"switchboard \S+ running: gateway and worker in one process$", lines[0])
    body = "\n".join(lines[1:])
    http = env["CLI_HTTP_BIND"]
    assert f"http     http://{http}/  (WebSocket ws://{http}/)" in body
    assert f"udp      udp://{env['CLI_UDP_BIND']}" in body
    assert f"smtp     smtp://{env['CLI_SMTP_BIND']}  (mail for cli.example.com)" in body
    assert "sms      https://sms.example.com/hooks/sms/inbound  (Twilio" in body
    assert "https://sms.example.com/hooks/sms/status  (status callbacks)" in body
    assert f"webrtc   http://{http}/webrtc/offer/...  (signaling: POST an SDP offer)" in body
    assert "layer    in-memory (this process only)" in body
    assert "worker   protocols http, websocket, udp, email" in body
    metrics = re.search(r"metrics  (http://127\.0\.0\.1:\d+/metrics)", body)
    assert metrics is not None, body
    status, text = fetch(metrics[1])
    assert status == 200 and b"switchboard_" in text  # the URL printed is the live one
    assert "static   /static/ served from the staticfiles finders (DEBUG is on" in body


def test_access_log_has_one_line_per_request_and_handshake(running: CliDeployment) -> None:
    base = running.base_url
    assert fetch(base + "/?q=1") == (200, b"hello")
    assert fetch(base + "/no-such-page/")[0] == 404
    with connect(f"ws://127.0.0.1:{running.http_port}/ws/echo/", open_timeout=deadline(15)) as websocket:
        websocket.send("hi")
        assert websocket.recv(timeout=deadline(15)) == "echo:hi"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{running.http_port}/ws/refused/", open_timeout=deadline(15))
    assert refused.value.response.status_code == 403
    expected = [
        ACCESS.format(request=re.escape("GET /?q=1 HTTP/1.1"), outcome="200 OK"),
        ACCESS.format(request=re.escape("GET /no-such-page/ HTTP/1.1"), outcome="404 Not Found"),
        ACCESS.format(request=re.escape("WebSocket /ws/echo/"), outcome="101 accepted"),
        ACCESS.format(request=re.escape("WebSocket /ws/refused/"), outcome="403 Forbidden"),
    ]
    wait_until_sync(lambda: all(re.search(line, running.log("run")) for line in expected), 30, "the access lines")
    log = running.log("run")
    # One line per 404: the access line only (Django's "Not Found" warning, and its copy
    # from Django's own console handler, said the same thing twice more).
    assert [line for line in log.splitlines() if "/no-such-page/" in line] == [
        line for line in log.splitlines() if re.search(expected[1], line)
    ]
    assert len([line for line in log.splitlines() if "/no-such-page/" in line]) == 1


def test_static_files_are_served_in_run_with_debug(running: CliDeployment) -> None:
    status, body = fetch(running.base_url + "/static/cli/hello.css")
    assert (status, body) == (200, Path(__file__).with_name("static").joinpath("cli", "hello.css").read_bytes())
    assert fetch(running.base_url + "/static/cli/missing.css")[0] == 404


def test_udp_and_smtp_listen_where_the_banner_says(running: CliDeployment) -> None:
    host, port = running.env["CLI_UDP_BIND"].rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(deadline(15))
        client.sendto(b"ping", (host, int(port)))
        assert client.recvfrom(100)[0] == b"ping"
    host, port = running.env["CLI_SMTP_BIND"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=deadline(15)) as smtp:
        assert smtp.recv(100).startswith(b"220 ")


@pytest.mark.parametrize(
    ("debug", "flags", "served"),
    [("1", ["--nostatic"], False), ("0", [], False), ("0", ["--insecure"], True)],
)
def test_static_files_follow_debug_like_runserver(deployment: CliDeployment, debug: str, flags: list[str], served: bool) -> None:
    deployment.env["CLI_DEBUG"] = debug
    banner = start_and_wait(deployment, "run", "run", "--no-access-log", *flags)
    status, _ = fetch(deployment.base_url + "/static/cli/hello.css")
    assert status == (200 if served else 404)
    assert any(line.startswith("static ") for line in banner) == served
    assert fetch(deployment.base_url + "/")[0] == 200
    assert " - \"GET " not in deployment.log("run")  # --no-access-log
    assert deployment.stop("run", signal.SIGINT) == 0  # Control-C: a clean stop, exit 0
    assert "Traceback" not in deployment.log("run")


@pytest.mark.redis
@pytest.mark.skipif(not redis_reachable(), reason="Redis is not reachable on 127.0.0.1:6379")
def test_split_banners_show_the_shared_layer_with_its_password_masked(deployment: CliDeployment) -> None:
    # Redis's password-less default user accepts any password: the URL carries one, as a
    # production URL would, and it must not reach the output.
    password = "banner-pw-4c1d9e"
    deployment.env["CLI_REDIS_URL"] = REDIS_URL.replace("redis://", f"redis://default:{password}@", 1)
    gateway = start_and_wait(deployment, "gateway", "gateway", "--metrics-bind", "off")
    worker = start_and_wait(deployment, "worker", "worker", "--metrics-bind", "off")
    named = start_and_wait(deployment, "named", "worker", "thumbnails", "--metrics-bind", "off")
    masked = REDIS_URL.replace("redis://", "redis://default:***@", 1)
    prefix = deployment.env["CLI_REDIS_PREFIX"]
    for banner in (gateway, worker, named):
        assert f"layer    redis {masked} (key prefix {prefix!r})" in banner
    assert gateway[0].endswith("running: gateway") and "worker" not in "\n".join(gateway[1:])
    assert f"http     http://{deployment.env['CLI_HTTP_BIND']}/  (WebSocket ws://{deployment.env['CLI_HTTP_BIND']}/)" in gateway
    assert worker[0].endswith("running: worker") and "worker   protocols http, websocket, udp, email" in worker
    assert "worker   channels thumbnails" in named
    assert fetch(deployment.base_url + "/") == (200, b"hello")  # and they do reach each other
    assert all(password not in deployment.log(name) for name in ("gateway", "worker", "named"))
