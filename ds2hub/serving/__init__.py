"""`ds2hub serve`: streaming and file recognition over HTTP/WebSocket with Batch Dispatch.

Needs the `serve` extra (starlette, uvicorn, prometheus_client, soxr); `create_app` builds the
ASGI app for any `SpeechRecognizer`, `BatchDispatcher` is the scheduler on its own.
"""

from ds2hub.serving.config import ServeConfig

__all__ = ["ServeConfig"]
