"""Switchboard's process side: gateway server, worker, channel layers, config and CLI."""
