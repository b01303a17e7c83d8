"""The console tokens the tests configure (shared by the in-process stack and the OS processes)."""

READ_TOKEN = "viewer-token-0123456789abcdef"
WRITE_TOKEN = "ops-token-fedcba9876543210"
