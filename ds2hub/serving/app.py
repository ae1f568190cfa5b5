"""The ASGI app of `ds2hub serve` (Starlette): `WS /stream`, `POST /transcribe`, `GET /metrics`
and `GET /health` in front of one Batch Dispatch scheduler (protocol, status and close codes:
docs/guide/streaming-and-serving.md).

The model runs only on the dispatcher's worker thread; the event loop awaits futures and never
blocks on it (decoding uploads runs in the thread pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import soxr
import torch
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ds2hub.audio import SAMPLE_RATE, AudioTooLong, load_audio
from ds2hub.inference.streaming import check_stream_ready, finish_batch, step_batch
from ds2hub.inference.transcribe import iter_transcripts
from ds2hub.serving.config import ServeConfig
from ds2hub.serving.dispatcher import BatchDispatcher, QueueFull
from ds2hub.serving.metrics import ServerMetrics

if TYPE_CHECKING:
    from ds2hub.inference.recognizer import SpeechRecognizer

logger = logging.getLogger(__name__)

ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "pcm_f32le": np.dtype("<f4")}
MAX_FLOAT_SAMPLE = 1000.0  # float PCM has full scale 1.0; far beyond it is not audio

# WebSocket close codes (RFC 6455 section 7.4.1)
NORMAL, UNSUPPORTED, INVALID, POLICY, TOO_BIG, SERVER_ERROR, TRY_AGAIN = (
    1000, 1003, 1007, 1008, 1009, 1011, 1013,
)  # fmt: skip


class StreamError(Exception):
    """A client mistake on a stream: sent to it, then the connection is closed with `code`."""

    def __init__(self, message: str, code: int, reason: str) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


class Engine:
    """The model side of the server: the recogniser behind a `BatchDispatcher` whose batched
    functions are whole files, streaming steps and stream ends."""

    def __init__(self, recognizer: SpeechRecognizer, config: ServeConfig) -> None:
        self.recognizer = recognizer.eval()
        self.config = config
        self.metrics = ServerMetrics(config.max_batch_size)
        self.stream_error = _stream_error(recognizer)
        self.live_streams = 0
        self.decoding = 0  # uploads being decoded: they count against max_pending_files
        # Streaming sessions still in memory: a stream's state must go when its connection does.
        self.sessions: weakref.WeakSet = weakref.WeakSet()
        self.dispatcher = BatchDispatcher(
            {"file": self._files, "step": self._steps, "finish": self._finishes},
            max_batch_size=config.max_batch_size,
            max_wait=config.max_wait_ms / 1000,
            limits={"file": config.max_pending_files},
            observer=self.metrics.observe_batch,
        )

    # --- batched functions (worker thread only) ----------------------------------------------
    def _files(self, payloads: list[tuple[torch.Tensor, bool]]) -> list[dict]:
        """Transcript dicts, with `words` only for the files that asked for timestamps."""
        waves = [wave for wave, _ in payloads]
        results = iter_transcripts(
            self.recognizer,
            waves,
            batch_size=len(waves),
            sample_rate=SAMPLE_RATE,
            timestamps=any(t for _, t in payloads),
        )
        return [
            {k: v for k, v in r.to_dict().items() if t or k != "words"}
            for r, (_, t) in zip(results, payloads)
        ]

    def _steps(self, payloads: list[tuple[Any, np.ndarray]]) -> list[str]:
        with torch.inference_mode():
            return step_batch(self.recognizer, [s for s, _ in payloads], [c for _, c in payloads])

    def _finishes(self, sessions: list[Any]) -> list[str]:
        with torch.inference_mode():
            return finish_batch(self.recognizer, sessions)

    # --- event-loop side ----------------------------------------------------------------------
    def refuse(self, reason: str, status: int, message: str) -> JSONResponse:
        """Counts a refused request under `reason` and answers it with HTTP `status` (503, the
        server is busy: with Retry-After)."""
        self.metrics.rejected.labels(reason).inc()
        headers = {"Retry-After": str(self.config.retry_after_s)} if status == 503 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def run(self, kind: str, payload: Any) -> Any:
        future = self.dispatcher.submit(kind, payload)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # the client left: drop the item if it has not started
            raise

    def health(self) -> dict:
        return {
            "status": "ok",
            "streaming": self.stream_error is None,
            "streaming_error": self.stream_error,
            "live_streams": self.live_streams,
            "sessions_in_memory": len(self.sessions),
            "max_streams": self.config.max_streams,
            "queued": self.dispatcher.pending(),
            "max_batch_size": self.config.max_batch_size,
            "max_wait_ms": self.config.max_wait_ms,
            "model": {
                "bidirectional": self.recognizer.arch.bidirectional,
                "parameters": self.recognizer.num_parameters,
                "tokenizer": self.recognizer.tokenizer.kind,
                "device": str(next(self.recognizer.parameters()).device),
            },
        }


def _stream_error(recognizer: SpeechRecognizer) -> str | None:
    """Why this model cannot stream, or None if it can."""
    try:
        check_stream_ready(recognizer)
    except Exception as error:  # noqa: BLE001 - StreamingError and friends: report the reason
        return " ".join(str(error).split())
    return None


# --- HTTP endpoints ---------------------------------------------------------------------------
async def health(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.engine.health())


async def metrics(request: Request) -> Response:
    return Response(request.app.state.engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds `limit` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def transcribe_file(request: Request) -> JSONResponse:
    engine: Engine = request.app.state.engine
    config = engine.config
    start = time.perf_counter()
    if request.headers.get("content-type", "").startswith("multipart/"):
        message = "send the audio file itself as the body (curl --data-binary @a.wav)"
        return engine.refuse("not_audio", 415, message)
    body = await _read_body(request, config.max_upload_bytes)
    if body is None:
        message = f"uploads are limited to {config.max_upload_bytes} bytes"
        return engine.refuse("too_large", 413, message)
    if not body:
        return engine.refuse("not_audio", 400, "the request body is empty; send an audio file")
    # Decodes and queued files share one budget, checked before decoding starts: each decode
    # holds up to max_file_seconds of 16 kHz audio (`load_audio` decodes block by block).
    if engine.decoding + engine.dispatcher.pending("file") >= config.max_pending_files:
        return engine.refuse("busy", 503, "too many files are waiting; retry later")
    engine.decoding += 1
    try:
        wave = await run_in_threadpool(load_audio, body, None, config.max_file_seconds)
    except AudioTooLong as error:
        return engine.refuse("too_long", 413, str(error))
    except Exception as error:  # noqa: BLE001 - whatever the decoders say: not audio we can read
        message = f"not audio ds2hub can read: {' '.join(str(error).split())[:300]}"
        return engine.refuse("not_audio", 415, message)
    finally:
        engine.decoding -= 1
    timestamps = request.query_params.get("timestamps", "").lower() in ("1", "true", "yes")
    try:
        result = await engine.run("file", (wave, timestamps))
    except QueueFull:
        return engine.refuse("busy", 503, "too many files are waiting; retry later")
    engine.metrics.observe_latency("file", time.perf_counter() - start)
    return JSONResponse(result)


# --- the streaming endpoint -----------------------------------------------------------------------
@dataclass
class _Chunk:
    arrived: float  # perf_counter when the message arrived
    samples: np.ndarray  # 16 kHz float32


@dataclass
class _StreamState:
    rate: int
    dtype: np.dtype
    resampler: Any = None
    received: int = 0  # samples at the client's rate
    buffered: list[_Chunk] = field(default_factory=list)

    def buffered_seconds(self) -> float:
        return sum(c.samples.size for c in self.buffered) / SAMPLE_RATE

    def seconds(self) -> float:
        """Audio received so far, in seconds."""
        return round(self.received / self.rate, 3)


def _stream_params(ws: WebSocket, config: ServeConfig) -> tuple[int, np.dtype]:
    rate_text = ws.query_params.get("sample_rate", str(SAMPLE_RATE))
    encoding = ws.query_params.get("encoding", "pcm_s16le")
    if not rate_text.isdigit() or int(rate_text) not in config.sample_rates:
        message = f"unsupported sample_rate {rate_text!r}; supported: {list(config.sample_rates)}"
        raise StreamError(message, UNSUPPORTED, "unsupported sample rate")
    if encoding not in ENCODINGS:
        message = f"unsupported encoding {encoding!r}; use one of {sorted(ENCODINGS)}"
        raise StreamError(message, UNSUPPORTED, "unsupported encoding")
    return int(rate_text), ENCODINGS[encoding]


def _decode_pcm(data: bytes, state: _StreamState, config: ServeConfig) -> np.ndarray:
    """One binary message -> 16 kHz float32 samples, or StreamError."""
    if len(data) > config.max_message_bytes:
        message = f"a message of {len(data)} bytes; the limit is {config.max_message_bytes}"
        raise StreamError(message, TOO_BIG, "message too big")
    width = state.dtype.itemsize
    if len(data) % width:
        message = (
            f"a binary message of {len(data)} bytes is not a whole number of {width}-byte samples"
        )
        raise StreamError(message, INVALID, "malformed PCM")
    samples = np.frombuffer(data, dtype=state.dtype).astype(np.float32)
    if state.dtype.kind == "i":
        samples /= 32768.0
    elif not (np.abs(samples) <= MAX_FLOAT_SAMPLE).all():  # NaN and infinities fail it too
        message = "float samples must be finite and near full scale 1.0 (is this float PCM?)"
        raise StreamError(message, INVALID, "invalid samples")
    state.received += samples.size
    if state.received > config.max_stream_seconds * state.rate:
        message = f"streams are limited to {config.max_stream_seconds:g} s of audio"
        raise StreamError(message, TOO_BIG, "too long")
    if state.resampler is not None:
        samples = state.resampler.resample_chunk(samples)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _check_end(text: str) -> None:
    """A text message must be the end of the stream: StreamError otherwise."""
    try:
        message = json.loads(text)
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get("type") != "end":
        error = 'text messages must be the JSON {"type": "end"}; audio goes in binary messages'
        raise StreamError(error, UNSUPPORTED, "unknown message")


async def _deny(
    ws: WebSocket, engine: Engine, reason: str, status: int, message: str, code: int
) -> None:
    """Refuses a connection before accepting it (`Engine.refuse`): HTTP `status` where the server
    supports denial responses (uvicorn does), otherwise accept, send the error and close with
    `code`."""
    try:
        await ws.send_denial_response(engine.refuse(reason, status, message))
    except RuntimeError:
        await ws.accept()
        await ws.send_json({"type": "error", "error": message})
        await ws.close(code, message[:100])


async def stream(ws: WebSocket) -> None:
    engine: Engine = ws.app.state.engine
    config = engine.config
    if engine.stream_error is not None:
        message = f"this model cannot stream: {engine.stream_error}"
        await _deny(ws, engine, "not_streamable", 400, message, UNSUPPORTED)
        return
    try:
        rate, dtype = _stream_params(ws, config)
    except StreamError as error:
        await _deny(ws, engine, "bad_request", 400, str(error), error.code)
        return
    if engine.live_streams >= config.max_streams:
        message = f"the server is at capacity ({config.max_streams} streams); retry later"
        await _deny(ws, engine, "busy", 503, message, TRY_AGAIN)
        return
    engine.live_streams += 1
    engine.metrics.live_streams.set(engine.live_streams)
    try:
        await ws.accept()
        await _serve_stream(ws, engine, rate, dtype)
    except WebSocketDisconnect as gone:
        # 1009: the protocol layer closed a message over 4x the limit (see `ds2hub serve`).
        reason = "message_too_big" if gone.code == TOO_BIG else "disconnected"
        engine.metrics.rejected.labels(reason).inc()
    except OSError:  # the client left (uvicorn's ClientDisconnected)
        engine.metrics.rejected.labels("disconnected").inc()
    except Exception as error:  # noqa: BLE001 - one stream's failure must not reach the others
        if not isinstance(error, StreamError):
            logger.exception("stream failed")
            error = StreamError(f"server error: {error}", SERVER_ERROR, "server error")
        engine.metrics.rejected.labels(error.reason.replace(" ", "_")).inc()
        with contextlib.suppress(Exception):
            await ws.send_json({"type": "error", "error": str(error)})
            await ws.close(error.code, error.reason)
    finally:
        engine.live_streams -= 1
        engine.metrics.live_streams.set(engine.live_streams)


async def _serve_stream(ws: WebSocket, engine: Engine, rate: int, dtype: np.dtype) -> None:
    """One connection: read messages while the previous step runs; each step takes all audio
    that arrived meanwhile, so a stream has at most one item in the dispatcher at a time."""
    config = engine.config
    state = _StreamState(rate, dtype)
    if rate != SAMPLE_RATE:
        state.resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
    session = engine.recognizer.stream()
    engine.sessions.add(session)
    receive: asyncio.Future | None = asyncio.ensure_future(ws.receive())
    step: asyncio.Future | None = None
    in_step: list[_Chunk] = []
    ending = False
    last_message = time.perf_counter()
    try:
        while True:
            waiting = {f for f in (receive, step) if f is not None}
            timeout = None if ending else last_message + config.idle_timeout_s - time.perf_counter()
            if timeout is not None and timeout <= 0 and step is None:
                idle = f"no audio for {config.idle_timeout_s:g} s; closing"
                raise StreamError(idle, POLICY, "idle timeout")
            done, _ = await asyncio.wait(
                waiting,
                timeout=None if timeout is None else max(timeout, 0.001),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if step is not None and step in done:
                text = step.result()
                step = None
                sent = time.perf_counter()
                for chunk in in_step:
                    engine.metrics.observe_latency("stream", sent - chunk.arrived)
                in_step = []
                await ws.send_json(
                    {"type": "partial", "text": text, "audio_seconds": state.seconds()}
                )
            if receive is not None and receive in done:
                message = receive.result()
                receive = None
                last_message = time.perf_counter()
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message.get("code", 1000))
                if message.get("bytes") is not None:
                    samples = _decode_pcm(message["bytes"], state, config)
                    state.buffered.append(_Chunk(last_message, samples))
                elif message.get("text") is not None:
                    _check_end(message["text"])
                    ending = True
            if step is None and state.buffered:
                in_step, state.buffered = state.buffered, []
                audio = np.concatenate([c.samples for c in in_step])
                step = asyncio.ensure_future(engine.run("step", (session, audio)))
            if ending and step is None:
                break
            if (
                receive is None
                and not ending
                and state.buffered_seconds() < config.max_buffered_seconds
            ):
                receive = asyncio.ensure_future(ws.receive())
        if state.resampler is not None:  # the resampler's last samples
            tail = state.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                await engine.run("step", (session, np.ascontiguousarray(tail, np.float32)))
        final = await engine.run("finish", session)
        await ws.send_json({"type": "final", "text": final, "audio_seconds": state.seconds()})
        await ws.close(NORMAL)
    finally:
        for future in (receive, step):
            if future is not None and not future.done():
                future.cancel()


# --- the app ------------------------------------------------------------------------------------
def create_app(recognizer: SpeechRecognizer, config: ServeConfig | None = None) -> Starlette:
    """The server's ASGI app for `recognizer` (see the module docstring for the endpoints).

    The Batch Dispatch worker starts and stops with the app's lifespan (uvicorn, or
    `with TestClient(app)`).
    """
    engine = Engine(recognizer, config or ServeConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with engine.dispatcher:
            yield

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/transcribe", transcribe_file, methods=["POST"]),
            WebSocketRoute("/stream", stream),
        ],
        lifespan=lifespan,
    )
    app.state.engine = engine
    return app
