"""Built-in protocol plugins: translation between native protocols and channel layer messages."""
