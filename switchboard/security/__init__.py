"""Channels' import path ``channels.security``: origin checks."""
