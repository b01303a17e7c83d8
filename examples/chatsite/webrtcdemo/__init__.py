"""WebRTC data channels in the example chat: a browser peer chats with WebSocket clients."""
