"""The Switchboard side of the benchmark: the same consumers as channels_site."""
