"""The ASGI app of `ds2hub serve` (Starlette): `WS /stream`, `POST /transcribe`, `GET /metrics`
and `GET /health` in front of one Batch Dispatch scheduler (protocol, status and close codes:
docs/guide/streaming-and-serving.md).

The model runs only on the dispatcher's worker thread; the event loop awaits futures and never
blocks on it (decoding uploads runs in the thread pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
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

from ds2hub.audio import (
    SAMPLE_RATE,
    AudioTooLong,
    header_seconds,
    load_audio,
    preload_decoders,
)
from ds2hub.decoding import GREEDY, text_decoder
from ds2hub.inference.streaming import check_stream_ready, finish_batch, step_batch
from ds2hub.inference.transcribe import (
    DEFAULT_CHUNK_SECONDS,
    Window,
    plan_windows,
    stitch,
    window_logits,
)
from ds2hub.serving.config import ServeConfig
from ds2hub.serving.dispatcher import BatchDispatcher, lower_cpu_priority
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


BACKGROUND_NICE = 19  # uploads' CPU priority (Unix nice value): they use what streams leave
WINDOWS_IN_FLIGHT = 2  # an upload's windows queued at once: uploads take turns
DECODE_THREADS = 2  # uploads decoded at once


class Engine:
    """The model side of the server: the recogniser behind two `BatchDispatcher`s, one for live
    streams (steps and ends) and one for windows of uploads, so that a long upload never holds the
    streams' worker. The uploads' worker and the threads that decode uploads and find their text
    run at the lowest CPU priority (Linux), so that streams get the CPU first when it is
    contended (`experiments/soak/`). Both workers only read the model."""

    def __init__(self, recognizer: SpeechRecognizer, config: ServeConfig) -> None:
        self.recognizer = recognizer.eval()
        self.config = config
        self.metrics = ServerMetrics(config.max_batch_size)
        self.stream_error = _stream_error(recognizer)
        self.live_streams = 0
        self.client_streams: Counter[str] = Counter()  # open streams per client address
        self.files = 0  # uploads being decoded or recognised: at most max_pending_files
        # Streaming sessions still in memory: a stream's state must go when its connection does.
        self.sessions: weakref.WeakSet = weakref.WeakSet()
        self.dispatcher = BatchDispatcher(
            {"step": self._steps, "finish": self._finishes},
            max_batch_size=config.max_batch_size,
            max_wait=config.max_wait_ms / 1000,
            observer=self.metrics.observe_batch,
        )
        # Uploads: windows as `ds2hub transcribe` cuts them, so the server's transcript is the
        # command's; their text is decoded one upload at a time with a decoder of its own (a beam
        # search's state is not shared with the streams' decoders).
        self.plan = plan_windows(recognizer, DEFAULT_CHUNK_SECONDS)
        self.file_decoder = text_decoder(recognizer.tokenizer, recognizer.decoding or GREEDY)
        self.uploads = BatchDispatcher(
            {"window": self._windows},
            max_batch_size=config.max_batch_size,
            max_wait=config.max_wait_ms / 1000,
            observer=self.metrics.observe_batch,
            nice=BACKGROUND_NICE,
        )
        self.audio_seconds = 0.0  # decoded audio held by uploads: at most max_pending_audio_seconds
        self.audio_pool: ThreadPoolExecutor | None = None  # made when the server starts (`open`)
        self.text_pool: ThreadPoolExecutor | None = None

    # --- batched functions (worker thread only) ----------------------------------------------
    def _windows(self, windows: list[Window]) -> list[torch.Tensor]:
        with torch.inference_mode():
            return window_logits(self.recognizer, self.plan, windows)

    def _steps(self, payloads: list[tuple[Any, np.ndarray]]) -> list[str]:
        with torch.inference_mode():
            return step_batch(self.recognizer, [s for s, _ in payloads], [c for _, c in payloads])

    def _finishes(self, sessions: list[Any]) -> list[str]:
        with torch.inference_mode():
            return finish_batch(self.recognizer, sessions)

    def _file_text(self, logits: list[torch.Tensor], samples: int, timestamps: bool) -> dict:
        with torch.inference_mode():
            result = stitch(
                self.recognizer, self.plan, logits, samples, self.file_decoder, timestamps
            )
        return {k: v for k, v in result.to_dict().items() if timestamps or k != "words"}

    async def transcribe(self, wave: torch.Tensor, timestamps: bool) -> dict:
        """The transcript dict of one 16 kHz recording (with `words` if `timestamps`): its
        windows go to the uploads' dispatcher `WINDOWS_IN_FLIGHT` at a time (so that uploads take
        turns and batch together), then its text is decoded."""
        count = self.plan.num_windows(wave.numel())
        windows = [Window(0, k, count, piece) for k, piece in enumerate(self.plan.windows(wave))]
        logits: list[torch.Tensor] = []
        for start in range(0, count, WINDOWS_IN_FLIGHT):
            group = windows[start : start + WINDOWS_IN_FLIGHT]
            logits += await asyncio.gather(*(self.run("window", w, self.uploads) for w in group))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.text_pool, self._file_text, logits, wave.numel(), timestamps
        )

    async def load(self, body: bytes) -> torch.Tensor:
        """An upload decoded into 16 kHz mono (`load_audio`), on a low-priority thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.audio_pool, load_audio, body, None, self.config.max_file_seconds
        )

    def open(self) -> None:
        """Starts the upload threads (the app's lifespan calls it; a restarted app gets new
        ones). Decoding is the memory peak of an upload (a few times its 16 kHz output), so
        `DECODE_THREADS` uploads at most are decoded at once; the others wait their turn."""
        background = functools.partial(lower_cpu_priority, BACKGROUND_NICE)
        self.audio_pool = ThreadPoolExecutor(
            DECODE_THREADS, "ds2hub-upload-audio", initializer=background
        )
        self.text_pool = ThreadPoolExecutor(1, "ds2hub-upload-text", initializer=background)

    def close(self) -> None:
        for pool in (self.audio_pool, self.text_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    # --- event-loop side ----------------------------------------------------------------------
    def refuse(self, reason: str, status: int, message: str) -> JSONResponse:
        """Counts a refused request under `reason` and answers it with HTTP `status` (503, the
        server is busy: with Retry-After)."""
        self.metrics.rejected.labels(reason).inc()
        busy = status in (429, 503)
        headers = {"Retry-After": str(self.config.retry_after_s)} if busy else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def run(self, kind: str, payload: Any, dispatcher: BatchDispatcher | None = None) -> Any:
        """`payload`'s result from `dispatcher` (default: the streams'); cancelled, it drops the
        item if it has not started."""
        future = (dispatcher or self.dispatcher).submit(kind, payload)
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
            "queued": self.dispatcher.pending() + self.uploads.pending(),
            "uploads": self.files,
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
    # One budget for files being decoded or recognised, checked before decoding starts: each
    # holds up to max_file_seconds of 16 kHz audio (`load_audio` decodes block by block).
    if engine.files >= config.max_pending_files:
        return engine.refuse("busy", 503, "too many files are waiting; retry later")
    timestamps = request.query_params.get("timestamps", "").lower() in ("1", "true", "yes")
    engine.files += 1
    try:
        # A client that hangs up takes its upload with it: nothing else would stop the work.
        work = asyncio.ensure_future(_recognise_upload(engine, body, timestamps))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            engine.metrics.rejected.labels("disconnected").inc()
            return Response(status_code=499)  # (nobody is there to read it)
        gone.cancel()
        result = work.result()
    finally:
        engine.files -= 1
    if isinstance(result, Response):
        return result
    engine.metrics.observe_latency("file", time.perf_counter() - start)
    return JSONResponse(result)


async def _disconnected(request: Request) -> None:
    """Returns once the client of a request whose body was read has disconnected."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _recognise_upload(engine: Engine, body: bytes, timestamps: bool) -> dict | Response:
    """An upload's transcript dict, or the refusal to send: decoded (at most `DECODE_THREADS`
    at once), its 16 kHz audio counted against `max_pending_audio_seconds`, recognised."""
    config = engine.config
    budget = "too much audio is waiting to be recognised; retry later"
    # Reserved from the header before decoding where the format has one (then a refusal costs
    # no decoding), else once decoded.
    seconds = min(await run_in_threadpool(header_seconds, body) or 0.0, config.max_file_seconds)
    if engine.audio_seconds + seconds > config.max_pending_audio_seconds:
        return engine.refuse("busy", 503, budget)
    engine.audio_seconds += seconds
    try:
        try:
            wave = await engine.load(body)
        except AudioTooLong as error:
            return engine.refuse("too_long", 413, str(error))
        except (ValueError, OSError, RuntimeError) as error:  # the decoders' words for non-audio
            message = f"not audio ds2hub can read: {' '.join(str(error).split())[:300]}"
            return engine.refuse("not_audio", 415, message)
        decoded = wave.numel() / SAMPLE_RATE
        if engine.audio_seconds - seconds + decoded > config.max_pending_audio_seconds:
            return engine.refuse("busy", 503, budget)
        engine.audio_seconds += decoded - seconds
        seconds = decoded
        return await engine.transcribe(wave, timestamps)
    finally:
        engine.audio_seconds -= seconds


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


class _StreamClock:
    """The time limits of one stream (`ServeConfig`): idle time, connection time, and lag behind
    real time. Lag counts only the time the server was reading: while it holds back because the
    model is behind (`max_buffered_seconds`), the client is not to blame."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.opened = self.last_message = self.since = time.perf_counter()
        self.waited = 0.0  # seconds the server was reading, up to `since`
        self.is_reading = True

    def message(self) -> float:
        self.last_message = time.perf_counter()
        return self.last_message

    def reading(self, now_reading: bool) -> None:
        """Tells whether the server is reading the client from now on."""
        now = time.perf_counter()
        if self.is_reading:
            self.waited += now - self.since
        self.since, self.is_reading = now, now_reading

    def check(self, audio_seconds: float, reading: bool, busy: object) -> float:
        """Raises StreamError once a limit is passed; otherwise the seconds until the next one
        could be (the wait's timeout). An idle stream whose step is still running is not idle."""
        config, now = self.config, time.perf_counter()
        self.reading(reading)
        wall_left = self.opened + config.max_stream_wall_seconds - now
        if wall_left <= 0:
            message = f"streams may stay open at most {config.max_stream_wall_seconds:g} s"
            raise StreamError(message, POLICY, "time limit")
        lag = self.waited - audio_seconds
        if lag > config.max_stream_lag_s:
            message = (
                f"the audio is {lag:.0f} s behind real time (the limit is "
                f"{config.max_stream_lag_s:g} s); send audio at least as fast as it is spoken"
            )
            raise StreamError(message, POLICY, "too slow")
        idle_left = self.last_message + config.idle_timeout_s - now
        if idle_left <= 0 and busy is None:
            message = f"no audio for {config.idle_timeout_s:g} s; closing"
            raise StreamError(message, POLICY, "idle timeout")
        lag_left = config.max_stream_lag_s - lag if reading else math.inf
        return max(min(wall_left, lag_left, max(idle_left, 0.0) or math.inf), 0.001)


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
    client = ws.client.host if ws.client else "unknown"
    cap = config.max_streams_per_client
    if cap and engine.client_streams[client] >= cap:
        message = f"a client may hold {cap} streams at once; close one first"
        await _deny(ws, engine, "client_limit", 429, message, TRY_AGAIN)
        return
    engine.live_streams += 1
    engine.client_streams[client] += 1
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
        engine.client_streams[client] -= 1
        if not engine.client_streams[client]:
            del engine.client_streams[client]
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
    clock = _StreamClock(config)
    try:
        while True:
            waiting = {f for f in (receive, step) if f is not None}
            timeout = None
            if not ending:  # once the client has ended, only the model's work remains
                timeout = clock.check(state.seconds(), reading=receive is not None, busy=step)
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
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
                last_message = clock.message()
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
            clock.reading(receive is not None)
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
        preload_decoders()
        engine.open()
        try:
            with engine.dispatcher, engine.uploads:
                yield
        finally:
            engine.close()

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
