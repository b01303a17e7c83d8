"""The Django Channels 4 side of the benchmark; imported only inside bench/.env."""
