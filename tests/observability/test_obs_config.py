"""``SWITCHBOARD["METRICS"]`` and the per-process ``--metrics-bind``: validated before start-up."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from switchboard.gateway.cli import build_parser, metrics_bind
from switchboard.gateway.config import ConfigError, MetricsOptions, from_mapping, from_toml


def test_metrics_defaults_serve_nothing_but_answer_status() -> None:
    options = from_mapping({}).metrics
    assert options == MetricsOptions(bind=None, worker_bind=None, interval=1.0, status=True)


def test_metrics_from_settings_and_toml(tmp_path: Path) -> None:
    config = from_mapping({"metrics": {"bind": "127.0.0.1:9100", "worker_bind": ":9101", "interval": 2}})
    assert (config.metrics.bind, config.metrics.worker_bind, config.metrics.interval) == ("127.0.0.1:9100", ":9101", 2.0)
    path = tmp_path / "switchboard.toml"
    path.write_text('[metrics]\nbind = "0.0.0.0:9100"\nstatus = false\n')
    assert from_toml(path).metrics == MetricsOptions(bind="0.0.0.0:9100", status=False)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"bind": "nowhere"}, r"METRICS: bind: bind 'nowhere' must be host:port"),
        ({"worker_bind": "h:99999"}, r"port out of range"),
        ({"interval": 0}, r"interval must be > 0"),
        ({"bnd": "h:1"}, r"METRICS: unknown option\(s\) bnd"),
        ({"status": "yes"}, r"METRICS.status: expected true or false"),
    ],
)
def test_bad_metrics_options_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping({"METRICS": raw})


def test_metrics_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"SWITCHBOARD\['METRICS'\] must be a mapping"):
        from_mapping({"METRICS": "127.0.0.1:9100"})


def test_each_process_kind_has_its_bind_and_the_flag_wins() -> None:
    options = MetricsOptions(bind="127.0.0.1:9100", worker_bind="127.0.0.1:9101")
    none = argparse.Namespace(metrics_bind=None)
    assert metrics_bind(none, options, "gateway") == "127.0.0.1:9100"
    assert metrics_bind(none, options, "run") == "127.0.0.1:9100"
    assert metrics_bind(none, options, "worker") == "127.0.0.1:9101"
    assert metrics_bind(argparse.Namespace(metrics_bind="127.0.0.1:9202"), options, "worker") == "127.0.0.1:9202"
    assert metrics_bind(argparse.Namespace(metrics_bind="off"), options, "gateway") is None
    with pytest.raises(ConfigError, match="--metrics-bind"):
        metrics_bind(argparse.Namespace(metrics_bind="9100"), options, "worker")


def test_cli_options() -> None:
    args = build_parser().parse_args(["worker", "--metrics-bind", ":9102", "--log-format", "json", "--settings", "s"])
    assert (args.metrics_bind, args.log_format) == (":9102", "json")
    status = build_parser().parse_args(["status", "--once", "--json", "--wait", "0.5", "--settings", "s"])
    assert (status.once, status.json, status.wait) == (True, True, 0.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gateway", "--log-format", "xml"])
