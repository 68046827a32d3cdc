"""The app's OpenAI-compatible HTTP API under /v1 (server.py: the routes; protocol.py: OpenAI's request and reply
bodies, checked; stop.py: stop strings over streamed text), served by the Chat tab's own engine."""
from api.server import OpenAIServer

__all__ = ["OpenAIServer"]
