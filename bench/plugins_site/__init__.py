"""Sites and bare servers of the protocol-plugin benchmarks (bench/plugins.py).

- ``settings`` / ``routing`` / ``consumers``: the Switchboard side, one plugin per run
  (``BENCH_PLUGIN`` = ``udp``, ``mqtt``, ``webrtc`` or ``sms``), started as ``switchboard
  gateway`` + ``switchboard worker`` (split mode, Redis layer) or ``switchboard run``.
- ``bare_udp``, ``bare_mqtt``, ``bare_webrtc``, ``bare_sms_*``: the baselines, the least
  code that answers the same requests with the same library (asyncio, paho, aiortc,
  Django on uvicorn), each in its own process.
- ``common``: what both sides and the load generators must agree on.

Servers import this package as ``plugins_site`` (``PYTHONPATH=bench``), load generators as
``bench.plugins_site`` (``PYTHONPATH=.``).
"""
