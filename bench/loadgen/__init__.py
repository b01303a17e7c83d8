"""Load generators: each runs as its own process, so the client's CPU is not the server's.

They speak a tiny line protocol on stdout (see :mod:`bench.loadgen.common`) so the harness
can read server CPU exactly at the start and end of the measured window.
"""
