"""Switchboard benchmark harness: ``python -m bench`` from the repository root.

Compares Switchboard (split mode over Redis, one-process mode) with Django Channels 4
(daphne and uvicorn, channels-redis) on one machine in one run. Channels lives only in
the separate venv ``bench/.env`` that the harness creates; see docs/benchmarks.md.
"""
