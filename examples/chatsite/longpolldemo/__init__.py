"""Long-poll demo: read a chat room over plain HTTP requests held open until a message comes."""
