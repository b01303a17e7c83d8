"""UDP demo app: an uppercase echo server (see ``docs/udp.md``)."""
