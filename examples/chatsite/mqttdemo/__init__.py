"""MQTT demo app: sensor readings to the chat, and a request/response service (see ``docs/mqtt.md``)."""
