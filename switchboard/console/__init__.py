"""The operator's console: one live page of every gateway, worker, protocol and channel.

``switchboard console`` serves it from its own process; a gateway serves it on its HTTP
port when ``CONSOLE.mount`` is set. Either way the numbers come from the same place as
``switchboard status`` (the ``switchboard.status`` answers every process gives through the
layer, specs/layer.md) and are kept for the charts in the serving process. docs/console.md.

- ``history``: the time series behind the charts (the last ``CONSOLE.history`` seconds);
- ``frames``: one refresh's answers turned into what the page shows (rates, quantiles);
- ``collector``: asks the processes every interval and keeps frames and history;
- ``access``: who may look and who may act (loopback, bearer tokens, Django staff);
- ``app``: the ASGI application (the page, its JSON and server-sent events);
- ``deadletters``: the durable channels' dead letters, when the layer has them;
- ``serve``: ``switchboard console`` and the gateway mount.
"""
