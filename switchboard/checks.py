"""``manage.py check``: Switchboard's settings validated as the gateway will validate them.

A typo in ``SWITCHBOARD`` used to surface only when ``rungateway`` started (or, for a
plugin's options, when that plugin loaded). These checks run the same parsers at
``manage.py check`` time (and so before ``runserver``, ``migrate`` and every test run),
and report each problem with a stable id:

========================  ====================================================================
``switchboard.E001``      ``SWITCHBOARD`` itself is malformed (unknown key, wrong type...).
``switchboard.E002``      A protocol plugin is unknown, its extra is not installed, or its own spec is broken.
``switchboard.E003``      A protocol plugin's options are invalid (the message names the key).
``switchboard.E004``      The layer (``SWITCHBOARD["LAYER"]`` or ``CHANNEL_LAYERS``) cannot be built.
``switchboard.E005``      The application (``SWITCHBOARD["APPLICATION"]`` / ``ASGI_APPLICATION``)
                          cannot be imported.
``switchboard.W001``      Both ``SWITCHBOARD["LAYER"]`` and ``CHANNEL_LAYERS["default"]`` are set;
                          Switchboard uses the former.
========================  ====================================================================
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .gateway.config import ConfigError, SwitchboardConfig, from_django_settings, parse_options


@register(Tags.compatibility)
def check_switchboard_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every problem the gateway and worker would refuse to start with, as check messages."""
    from django.conf import settings

    try:
        config = from_django_settings()
    except ConfigError as exc:
        return [Error(str(exc), hint="See docs/architecture.md and the protocol docs for the keys.", id="switchboard.E001")]
    messages: list[CheckMessage] = []
    messages.extend(_check_protocols(config))
    messages.extend(_check_layer(config))
    messages.extend(_check_application(config))
    switchboard = {str(key).upper(): value for key, value in (getattr(settings, "SWITCHBOARD", None) or {}).items()}
    if switchboard.get("LAYER") and (getattr(settings, "CHANNEL_LAYERS", None) or {}).get("default"):
        messages.append(
            Warning(
                "Both SWITCHBOARD['LAYER'] and CHANNEL_LAYERS['default'] are set; Switchboard uses SWITCHBOARD['LAYER'].",
                hint="Remove one of them so the layer in use is the one you read.",
                id="switchboard.W001",
            )
        )
    return messages


def _check_protocols(config: SwitchboardConfig) -> list[CheckMessage]:
    from .gateway.plugins import load_plugin_class

    messages: list[CheckMessage] = []
    for name, raw in config.protocols.items():
        try:
            plugin_class = load_plugin_class(name)
        except ConfigError as exc:
            messages.append(Error(str(exc), obj=f"SWITCHBOARD['PROTOCOLS'][{name!r}]", id="switchboard.E002"))
            continue
        try:
            parse_options(plugin_class.Options, raw, where=f"PROTOCOLS.{name}")
        except ConfigError as exc:
            messages.append(Error(str(exc), obj=f"SWITCHBOARD['PROTOCOLS'][{name!r}]", id="switchboard.E003"))
    return messages


def _check_layer(config: SwitchboardConfig) -> list[CheckMessage]:
    from .gateway.layers import build_layer

    try:
        # Building connects to nothing: Redis connections open on first use.
        build_layer(config.layer)
    except Exception as exc:
        return [Error(f"The channel layer cannot be built: {exc}", obj=str(config.layer.get("BACKEND")), id="switchboard.E004")]
    return []


def _check_application(config: SwitchboardConfig) -> list[CheckMessage]:
    from .gateway.cli import load_application

    if not config.application:
        return []
    try:
        load_application(config)
    except ConfigError as exc:
        return [Error(str(exc), hint="APPLICATION or ASGI_APPLICATION must name module.attribute", id="switchboard.E005")]
    return []
