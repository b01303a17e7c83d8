"""Channels' import path ``channels.generic``: the generic consumers, by protocol."""
