"""`ds2hub serve`: Batch Dispatch, the real Starlette app (TestClient and uvicorn on loopback),
abuse of every kind, and the console command."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from standins import STREAMING_ARCH
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from ds2hub.audio import load_audio, resample
from ds2hub.cli.main import main
from ds2hub.errors import ConfigError
from ds2hub.features import frame_statistics
from ds2hub.inference.recognizer import SpeechRecognizer, from_pretrained
from ds2hub.serving.app import create_app
from ds2hub.serving.config import ServeConfig
from ds2hub.serving.dispatcher import BatchDispatcher, QueueFull
from ds2hub.tokenizers import CharTokenizer

DIGITS = Path(__file__).resolve().parents[1] / "recipes" / "digits" / "test"
RATE = 16_000


def _random_batch_norm(model: torch.nn.Module) -> None:
    # Statistics far from identity, so that transcripts depend on every detail of the input.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _speech(n: int = 4) -> list[torch.Tensor]:
    return [load_audio(p) for p in sorted(DIGITS.glob("*.opus"))[:n]]


@pytest.fixture(scope="module")
def streaming_folder(tmp_path_factory) -> Path:
    """A forward-only model with a causal front end (random weights), saved as a hub folder."""
    torch.manual_seed(0)
    rec = SpeechRecognizer(STREAMING_ARCH, {"normalization": "global"}, CharTokenizer())
    rec.frontend.set_statistics(
        *frame_statistics([rec.frontend.unnormalized(w) for w in _speech()])
    )
    _random_batch_norm(rec)
    folder = tmp_path_factory.mktemp("streaming_model")
    rec.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def recognizer(streaming_folder) -> SpeechRecognizer:
    return from_pretrained(streaming_folder)


@pytest.fixture(scope="module")
def bidirectional(tmp_path_factory) -> SpeechRecognizer:
    torch.manual_seed(0)
    arch = {**STREAMING_ARCH, "bidirectional": True, "lookahead": 0}
    rec = SpeechRecognizer(arch, tokenizer=CharTokenizer())
    _random_batch_norm(rec)
    return rec.eval()


def _wav(wave: torch.Tensor, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave.numpy(), rate, format="WAV")
    return buffer.getvalue()


def _stream(ws, wave: np.ndarray, chunk: int = 1600, encoding: str = "pcm_s16le") -> list[dict]:
    """Sends `wave` in chunks, then the end; returns every message up to the final."""
    data = (wave * 32767).astype("<i2") if encoding == "pcm_s16le" else wave.astype("<f4")
    for i in range(0, data.size, chunk):
        ws.send_bytes(data[i : i + chunk].tobytes())
    ws.send_text(json.dumps({"type": "end"}))
    messages = []
    while not messages or messages[-1]["type"] not in ("final", "error"):
        messages.append(ws.receive_json())
    return messages


def _offline(recognizer, wave: np.ndarray, encoding: str = "pcm_s16le") -> str:
    if encoding == "pcm_s16le":  # what the server hears after int16 quantisation
        wave = (wave * 32767).astype(np.int16)
    return recognizer.transcribe(wave, sample_rate=RATE)


def _settled_health(client, seconds: float = 5.0) -> dict:
    """/health once closed streams are gone (their last step may still be running)."""
    deadline = time.time() + seconds
    while True:
        gc.collect()
        health = client.get("/health").json()
        if not (health["live_streams"] or health["sessions_in_memory"]) or time.time() > deadline:
            return health
        time.sleep(0.05)


# --- Batch Dispatch ---------------------------------------------------------------------------
def _blocking_dispatcher(max_batch_size: int, **kwargs):
    """A dispatcher whose function records batches and holds the worker on the payload "hold"."""
    release, batches = threading.Event(), []
    entered = threading.Event()

    def run(payloads: list) -> list:
        if "hold" in payloads:
            entered.set()
            release.wait(10)
        if "bad" in payloads:
            raise ValueError("bad item")
        batches.append(list(payloads))
        return [f"done {p}" for p in payloads]

    dispatcher = BatchDispatcher({"x": run, "y": run}, max_batch_size, **kwargs)
    dispatcher.entered = entered  # set once the worker is inside the held batch
    return dispatcher, release, batches


def test_dispatch_gathers_pending_items_up_to_the_batch_size():
    dispatcher, release, batches = _blocking_dispatcher(4, max_wait=0.0)
    with dispatcher:
        first = dispatcher.submit("x", "hold")
        assert dispatcher.entered.wait(10)  # the worker is inside the held batch
        futures = [dispatcher.submit("x", i) for i in range(6)]
        other = dispatcher.submit("y", "other kind")
        release.set()
        assert [f.result(5) for f in futures] == [f"done {i}" for i in range(6)]
        assert first.result(5) == "done hold" and other.result(5) == "done other kind"
    # Oldest kind first, at most 4 per batch, kinds never mixed.
    assert batches == [["hold"], [0, 1, 2, 3], [4, 5], ["other kind"]]


def test_batching_off_runs_one_item_at_a_time():
    dispatcher, release, batches = _blocking_dispatcher(1, max_wait=0.0)
    with dispatcher:
        dispatcher.submit("x", "hold")
        assert dispatcher.entered.wait(10)
        futures = [dispatcher.submit("x", i) for i in range(3)]
        release.set()
        [f.result(5) for f in futures]
    assert batches == [["hold"], [0], [1], [2]]


def test_max_wait_lets_a_batch_fill_and_bounds_the_wait():
    dispatcher, release, batches = _blocking_dispatcher(8, max_wait=0.3)
    release.set()
    with dispatcher:
        start = time.perf_counter()
        futures = [dispatcher.submit("x", i) for i in range(3)]
        [f.result(5) for f in futures]
        waited = time.perf_counter() - start
    assert batches == [[0, 1, 2]]  # not full: ran when the oldest had waited max_wait
    assert 0.25 < waited < 3


def test_a_failing_item_fails_alone_and_cancelled_items_are_dropped():
    dispatcher, release, batches = _blocking_dispatcher(8, max_wait=0.0)
    with dispatcher:
        dispatcher.submit("x", "hold")
        assert dispatcher.entered.wait(10)
        good, bad, gone = (dispatcher.submit("x", p) for p in ("good", "bad", "gone"))
        gone.cancel()  # its client disconnected
        release.set()
        assert good.result(5) == "done good"
        with pytest.raises(ValueError, match="bad item"):
            bad.result(5)
    assert ["gone"] not in batches and all("gone" not in b for b in batches)


def test_a_full_queue_refuses_more_items():
    dispatcher, release, _ = _blocking_dispatcher(8, max_wait=0.0, limits={"x": 2})
    with dispatcher:
        dispatcher.submit("x", "hold")
        assert dispatcher.entered.wait(10)
        dispatcher.submit("x", 1), dispatcher.submit("x", 2)
        with pytest.raises(QueueFull):
            dispatcher.submit("x", 3)
        dispatcher.submit("y", "other kinds have their own limit")
        release.set()


def test_serve_settings_are_checked():
    with pytest.raises(ConfigError, match="max_batch_size"):
        ServeConfig(max_batch_size=0)
    with pytest.raises(ConfigError, match="idle_timeout_s"):
        ServeConfig(idle_timeout_s=0)


# --- files --------------------------------------------------------------------------------------
def test_files_health_and_metrics(recognizer, bidirectional):
    waves = _speech(2)
    for model in (recognizer, bidirectional):
        with TestClient(create_app(model, ServeConfig(max_wait_ms=1))) as client:
            health = client.get("/health").json()
            assert health["status"] == "ok" and health["streaming"] == (model is recognizer)
            for wave in waves:
                answer = client.post("/transcribe?timestamps=true", content=_wav(wave))
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["text"] == model.transcribe(_wav(wave))
                assert body["duration"] == pytest.approx(wave.numel() / RATE, abs=1e-3)
                assert len(body["words"]) == len(body["text"].split())
                assert all(0 <= w["start"] <= w["end"] <= body["duration"] for w in body["words"])
            assert "words" not in client.post("/transcribe", content=_wav(waves[0])).json()
            text = client.get("/metrics").text
    assert 'ds2hub_batch_size_count{kind="window"}' in text  # each short file is one window
    assert 'ds2hub_queue_seconds_count{kind="window"} 3.0' in text
    assert 'ds2hub_recent_latency_seconds{kind="file",quantile="0.99"}' in text


def test_bad_uploads_get_clear_errors_and_the_server_stays_up(recognizer, tmp_path):
    wave = _speech(1)[0]
    config = ServeConfig(max_upload_bytes=200_000, max_file_seconds=5)
    with TestClient(create_app(recognizer, config)) as client:
        not_audio = client.post("/transcribe", content=b"this is not audio" * 100)
        assert not_audio.status_code == 415 and "not audio" in not_audio.json()["error"]
        assert client.post("/transcribe", content=b"").status_code == 400
        big = client.post("/transcribe", content=b"\0" * 300_000)
        assert big.status_code == 413 and "200000 bytes" in big.json()["error"]

        def chunks():  # no Content-Length: the limit holds while reading
            for _ in range(30):
                yield b"\0" * 10_000

        assert client.post("/transcribe", content=chunks()).status_code == 413
        too_long = client.post("/transcribe", content=_wav(torch.zeros(8000 * 8), 8000))
        assert too_long.status_code == 413 and "limit is 5 s" in too_long.json()["error"]
        form = client.post("/transcribe", files={"file": ("a.wav", _wav(wave))})
        assert form.status_code == 415 and "--data-binary" in form.json()["error"]
        good = client.post("/transcribe", content=_wav(wave))
        assert good.status_code == 200 and good.json()["text"] == recognizer.transcribe(
            wave, sample_rate=RATE
        )
        metrics = client.get("/metrics").text
    assert 'ds2hub_rejected_total{reason="too_large"} 2.0' in metrics
    assert 'ds2hub_rejected_total{reason="not_audio"} 3.0' in metrics


def test_files_beyond_the_queue_limit_get_503_with_retry_after(recognizer):
    app = create_app(recognizer, ServeConfig(max_pending_files=1, retry_after_s=3))
    engine = app.state.engine
    release, entered = threading.Event(), threading.Event()
    real = engine.uploads.functions["window"]

    def held(payloads):  # keeps the worker busy on the first file
        entered.set()
        release.wait(10)
        return real(payloads)

    engine.uploads.functions["window"] = held
    wav = _wav(_speech(1)[0])
    with TestClient(app) as client:
        results = []
        first = threading.Thread(
            target=lambda: results.append(client.post("/transcribe", content=wav))
        )
        first.start()
        assert entered.wait(10)  # the worker holds the first file: the budget is spent
        busy = client.post("/transcribe", content=wav)
        release.set()
        first.join(10)
        after = client.post("/transcribe", content=wav)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "3"
    assert [r.status_code for r in results] == [200] and after.status_code == 200


def test_a_restarted_app_serves_uploads_and_decoded_audio_has_a_budget(recognizer):
    """The upload threads come back with a second lifespan; an upload whose decoded audio
    would pass `max_pending_audio_seconds` beside those being recognised gets 503."""
    app = create_app(recognizer, ServeConfig(max_pending_audio_seconds=50, retry_after_s=2))
    engine = app.state.engine
    wav = _wav(_speech(1)[0])
    for _ in range(2):
        with TestClient(app) as client:
            assert client.post("/transcribe", content=wav).status_code == 200
    real, entered, release = (
        engine.uploads.functions["window"],
        threading.Event(),
        threading.Event(),
    )

    def held(windows):
        entered.set()
        release.wait(10)
        return real(windows)

    engine.uploads.functions["window"] = held
    thirty = _wav(torch.zeros(30 * RATE))
    with TestClient(app) as client:
        results = []
        first = threading.Thread(
            target=lambda: results.append(client.post("/transcribe", content=thirty))
        )
        first.start()
        assert entered.wait(10)
        over = client.post("/transcribe", content=thirty)
        release.set()
        first.join(10)
    assert over.status_code == 503 and "too much audio" in over.json()["error"]
    assert over.headers["retry-after"] == "2"
    assert [r.status_code for r in results] == [200] and engine.audio_seconds == 0


def test_an_upload_whose_client_hangs_up_is_dropped(recognizer):
    """A client that posts 200 s of audio and hangs up while its first window runs: the rest of
    its windows are not recognised and its place in the budget is freed."""
    import socket

    app = create_app(recognizer, ServeConfig(max_wait_ms=1))
    engine = app.state.engine
    real, ran = engine.uploads.functions["window"], []

    def slow(windows):
        ran.append(len(windows))
        time.sleep(0.2)
        return real(windows)

    engine.uploads.functions["window"] = slow
    engine.uploads.max_batch_size = 1
    long = torch.zeros(200 * RATE)
    body = _wav(long)
    head = f"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with _uvicorn(app) as address:
        host, port = address.split(":")
        with socket.create_connection((host, int(port))) as client:
            client.sendall(head.encode() + body)
            deadline = time.time() + 30
            while not ran and time.time() < deadline:
                time.sleep(0.01)
        deadline = time.time() + 10
        while engine.files and time.time() < deadline:
            time.sleep(0.05)
        assert engine.files == 0 and engine.audio_seconds == 0
        time.sleep(0.5)
        metrics = httpx.get(f"http://{address}/metrics").text
    assert 1 <= sum(ran) < engine.plan.num_windows(long.numel()) - 2
    assert 'ds2hub_rejected_total{reason="disconnected"} 1.0' in metrics


# --- streams --------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_f32le"])
def test_a_stream_gives_partials_and_the_offline_transcript(recognizer, encoding):
    wave = _speech(1)[0].numpy()
    with TestClient(create_app(recognizer)) as client:
        with client.websocket_connect(f"/stream?sample_rate=16000&encoding={encoding}") as ws:
            messages = _stream(ws, wave, encoding=encoding)
        metrics = client.get("/metrics").text
        health = _settled_health(client)
        assert health["live_streams"] == 0 and health["sessions_in_memory"] == 0
    partials, final = messages[:-1], messages[-1]
    assert final["type"] == "final", final
    assert final["text"] == _offline(recognizer, wave, encoding)
    assert partials and all(m["type"] == "partial" for m in partials)
    assert final["audio_seconds"] == pytest.approx(wave.size / RATE, abs=1e-3)
    assert 'ds2hub_recent_latency_seconds{kind="stream",quantile="0.5"}' in metrics
    assert 'ds2hub_batch_size_count{kind="step"}' in metrics


def test_other_sample_rates_are_resampled_and_unsupported_ones_refused(recognizer):
    wave = _speech(1)[0]
    at_8k = resample(torch.as_tensor(wave), RATE, 8000).numpy()
    with TestClient(create_app(recognizer)) as client:
        with client.websocket_connect("/stream?sample_rate=8000") as ws:
            final = _stream(ws, at_8k, chunk=800)[-1]
        assert final["type"] == "final" and final["audio_seconds"] == pytest.approx(
            at_8k.size / 8000, abs=1e-3
        )
        for query, message in [
            ("sample_rate=12345", "unsupported sample_rate"),
            ("sample_rate=abc", "unsupported sample_rate"),
            ("encoding=mp3", "unsupported encoding"),
        ]:
            with pytest.raises(WebSocketDenialResponse) as refused:
                with client.websocket_connect(f"/stream?{query}"):
                    pass
            assert refused.value.status_code == 400 and message in refused.value.text


def test_a_bidirectional_model_refuses_to_stream_with_the_reason(bidirectional):
    with TestClient(create_app(bidirectional)) as client:
        with pytest.raises(WebSocketDenialResponse) as refused:
            with client.websocket_connect("/stream"):
                pass
        assert refused.value.status_code == 400
        assert "cannot stream" in refused.value.text
        assert client.get("/health").json()["streaming"] is False


@pytest.mark.parametrize(
    "garbage,code,message",
    [
        (b"\x01\x02\x03", 1007, "whole number of 2-byte samples"),
        (np.array([0.1, np.nan], "<f4").tobytes(), 1007, "finite"),
        (np.array([1e30] * 4, "<f4").tobytes(), 1007, "full scale"),
        ("hello", 1003, "type"),
        ('{"type": "pause"}', 1003, "type"),
        (b"\0" * 5000, 1009, "limit is 4096"),
    ],
    ids=["odd-bytes", "nan", "huge", "text", "unknown-json", "too-big"],
)
def test_malformed_messages_close_the_stream_with_a_clear_error(recognizer, garbage, code, message):
    encoding = "pcm_f32le" if isinstance(garbage, bytes) and len(garbage) % 4 == 0 else "pcm_s16le"
    config = ServeConfig(max_message_bytes=4096)
    with TestClient(create_app(recognizer, config)) as client:
        with client.websocket_connect(f"/stream?encoding={encoding}") as ws:
            ws.send_bytes(np.zeros(160, "<f4" if encoding == "pcm_f32le" else "<i2").tobytes())
            ws.send_bytes(garbage) if isinstance(garbage, bytes) else ws.send_text(garbage)
            error = ws.receive_json()
            while error["type"] == "partial":
                error = ws.receive_json()
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert error["type"] == "error" and message in error["error"]
        assert closed.value.code == code
        health = _settled_health(client)
    assert health["status"] == "ok" and health["live_streams"] == 0
    assert health["sessions_in_memory"] == 0


def test_idle_clients_are_closed_and_their_state_freed(recognizer):
    with TestClient(create_app(recognizer, ServeConfig(idle_timeout_s=0.3))) as client:
        with client.websocket_connect("/stream") as ws:
            ws.send_bytes(np.zeros(1600, "<i2").tobytes())
            messages = [ws.receive_json()]
            while messages[-1]["type"] == "partial":
                messages.append(ws.receive_json())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert "no audio for 0.3 s" in messages[-1]["error"] and closed.value.code == 1008
        health = _settled_health(client)
        assert health["live_streams"] == 0 and health["sessions_in_memory"] == 0


def test_streams_beyond_capacity_get_503_with_retry_after(recognizer):
    wave = _speech(1)[0].numpy()
    with TestClient(create_app(recognizer, ServeConfig(max_streams=1, retry_after_s=2))) as client:
        with client.websocket_connect("/stream") as first:
            with pytest.raises(WebSocketDenialResponse) as refused:
                with client.websocket_connect("/stream"):
                    pass
            assert refused.value.status_code == 503
            assert refused.value.headers["retry-after"] == "2"
            assert _stream(first, wave)[-1]["text"] == _offline(recognizer, wave)
        with client.websocket_connect("/stream") as again:  # the slot is free again
            assert _stream(again, wave)[-1]["type"] == "final"


# --- a real server on loopback ------------------------------------------------------------------
@contextlib.contextmanager
def _uvicorn(app):
    """uvicorn serving `app` on a free loopback port, in a thread: yields "127.0.0.1:PORT"."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws_max_size=2**20)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not (server.started and server.servers) and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_server(recognizer):
    app = create_app(recognizer, ServeConfig(max_wait_ms=20, idle_timeout_s=5))
    with _uvicorn(app) as address:
        yield app, address


def test_garbage_and_disconnects_do_not_change_other_streams(recognizer, live_server):
    """Three clients stream speech while others send garbage, go silent or disconnect midway;
    the three get exactly their offline transcripts and the server frees every stream."""
    import websockets

    app, address = live_server
    waves = [w.numpy() for w in _speech(3)]
    expected = [_offline(recognizer, w) for w in waves]

    async def good(wave):
        async with websockets.connect(f"ws://{address}/stream?encoding=pcm_s16le") as ws:
            data = (wave * 32767).astype("<i2")
            for i in range(0, data.size, 1600):
                await ws.send(data[i : i + 1600].tobytes())
                await asyncio.sleep(0.01)
            await ws.send(json.dumps({"type": "end"}))
            async for message in ws:
                reply = json.loads(message)
                if reply["type"] != "partial":
                    return reply

    async def garbage(payload):
        async with websockets.connect(f"ws://{address}/stream?encoding=pcm_f32le") as ws:
            await ws.send(np.full(800, 0.01, "<f4").tobytes())
            await ws.send(payload)
            replies = []
            try:
                async for message in ws:
                    replies.append(json.loads(message))
            except websockets.ConnectionClosedError:  # closed with an error code, as expected
                pass
            return replies[-1], ws.close_code

    async def vanish():
        ws = await websockets.connect(f"ws://{address}/stream")
        await ws.send(np.zeros(3200, "<i2").tobytes())
        await asyncio.sleep(0.05)
        ws.transport.abort()  # no close handshake: the connection just drops

    async def everyone():
        return await asyncio.gather(
            *(good(w) for w in waves),
            garbage(np.array([np.inf] * 8, "<f4").tobytes()),
            garbage(b"\xff" * 7),
            garbage("not json"),
            vanish(),
        )

    results = asyncio.run(everyone())
    assert [r["type"] for r in results[:3]] == ["final"] * 3
    assert [r["text"] for r in results[:3]] == expected
    assert [r[1] for r in results[3:6]] == [1007, 1007, 1003]
    assert all(r[0]["type"] == "error" for r in results[3:6])
    deadline = time.time() + 10
    while app.state.engine.live_streams and time.time() < deadline:
        time.sleep(0.05)  # the vanished client's connection is noticed and dropped
    gc.collect()
    health = httpx.get(f"http://{address}/health").json()
    assert health["live_streams"] == 0 and health["queued"] == 0
    assert health["sessions_in_memory"] == 0  # every stream's state is freed
    # and the server still serves
    answer = httpx.post(f"http://{address}/transcribe", content=_wav(torch.from_numpy(waves[0])))
    assert answer.json()["text"] == recognizer.transcribe(_wav(torch.from_numpy(waves[0])))


def test_a_long_upload_is_recognised_in_windows_while_a_live_stream_keeps_its_pace(recognizer):
    """A 100 s upload is six 20 s windows, each made to hold the uploads' worker for 0.3 s; a
    stream that starts while the first window runs gets its final before the upload's answer
    (uploads have a worker of their own, at the lowest CPU priority on Linux), and the upload's
    transcript is `ds2hub transcribe`'s."""
    import websockets

    app = create_app(recognizer, ServeConfig(max_wait_ms=1))
    engine = app.state.engine
    real, entered, nice = engine.uploads.functions["window"], threading.Event(), []

    def slow(windows):
        entered.set()
        if sys.platform == "linux":
            nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        time.sleep(0.3)
        return real(windows)

    engine.uploads.functions["window"] = slow
    engine.uploads.max_batch_size = 1  # one window per pass: six passes of 0.3 s
    speech = torch.cat(_speech(4))
    long = torch.cat([speech] * math.ceil(100 * RATE / speech.numel()))[: 100 * RATE]
    assert engine.plan.num_windows(long.numel()) == 6
    wave = _speech(1)[0].numpy()
    finished: list[tuple[str, float]] = []

    async def stream(address: str) -> dict:
        while not entered.is_set():
            await asyncio.sleep(0.01)
        async with websockets.connect(f"ws://{address}/stream") as ws:
            data = (wave * 32767).astype("<i2")
            for i in range(0, data.size, 1600):
                await ws.send(data[i : i + 1600].tobytes())
            await ws.send(json.dumps({"type": "end"}))
            async for message in ws:
                reply = json.loads(message)
                if reply["type"] != "partial":
                    finished.append(("stream", time.perf_counter()))
                    return reply

    async def upload(address: str) -> dict:
        async with httpx.AsyncClient(timeout=60) as client:
            answer = await client.post(f"http://{address}/transcribe", content=_wav(long))
        finished.append(("file", time.perf_counter()))
        return answer.json()

    async def both(address: str):
        return await asyncio.gather(stream(address), upload(address))

    with _uvicorn(app) as address:
        final, transcript = asyncio.run(both(address))
    assert [name for name, _ in finished] == ["stream", "file"]
    assert finished[1][1] - finished[0][1] > 0.3  # at least one window still to run
    assert final["text"] == _offline(recognizer, wave)
    assert transcript["text"] == recognizer.transcribe(_wav(long))
    assert transcript["duration"] == pytest.approx(100.0)
    if sys.platform == "linux":
        assert nice and set(nice) == {19}


def test_slow_long_and_greedy_clients_are_closed_with_their_own_reason(recognizer):
    """A stream trickling 2 bytes at a time falls behind real time and is closed; a real-time
    stream is closed at the wall-clock limit; a client's third stream is refused with 429; each
    gets its JSON error and its own label in /metrics."""
    import websockets

    config = ServeConfig(
        max_stream_lag_s=1.0, max_stream_wall_seconds=2.5, max_streams_per_client=2,
        idle_timeout_s=5, max_wait_ms=1,
    )  # fmt: skip
    app = create_app(recognizer, config)

    async def until_closed(ws, send) -> tuple[float, dict, int]:
        sender = asyncio.ensure_future(send(ws))
        replies = []
        try:
            async for message in ws:
                replies.append(json.loads(message))
        except websockets.ConnectionClosedError:
            pass
        sender.cancel()
        return time.perf_counter() - opened, replies[-1], ws.close_code

    async def trickle(ws) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await ws.send(b"\0\0")
                await asyncio.sleep(0.2)

    async def real_time(ws) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:  # 0.1 s of audio every 0.08 s: a little ahead of real time
                await ws.send(np.zeros(1600, "<i2").tobytes())
                await asyncio.sleep(0.08)

    opened = 0.0  # before the handshakes: the server's clocks start later

    async def clients(address: str):
        nonlocal opened
        url = f"ws://{address}/stream"
        opened = time.perf_counter()
        async with websockets.connect(url) as slow, websockets.connect(url) as steady:
            try:
                async with websockets.connect(url):
                    third = None
            except websockets.InvalidHandshake as refused:
                response = getattr(refused, "response", None)
                third = getattr(response, "status_code", getattr(refused, "status_code", None))
            closed = await asyncio.gather(
                until_closed(slow, trickle), until_closed(steady, real_time)
            )
        async with websockets.connect(url) as again:  # the client's count went back down
            await again.send(json.dumps({"type": "end"}))
            assert json.loads(await again.recv())["type"] == "final"
        return third, closed

    with _uvicorn(app) as address:
        third, ((slow_s, slow_error, slow_code), (steady_s, steady_error, steady_code)) = (
            asyncio.run(clients(address))
        )
        metrics = httpx.get(f"http://{address}/metrics").text
    assert third == 429
    assert slow_code == 1008 and "behind real time" in slow_error["error"] and slow_s < 2.5
    assert steady_code == 1008 and "at most 2.5 s" in steady_error["error"]
    assert 2.4 < steady_s < 4.0
    for reason in ("too_slow", "time_limit", "client_limit"):
        assert f'ds2hub_rejected_total{{reason="{reason}"}} 1.0' in metrics


# --- the console command ----------------------------------------------------------------------
def test_serve_command_runs_uvicorn_with_the_model(streaming_folder, tmp_path):
    """`ds2hub serve FOLDER` in a subprocess answers /health, a file and a stream."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "ds2hub", "serve", str(streaming_folder), "--port", str(port),
               "--max-batch-size", "4", "--max-wait-ms", "5", "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.2)
        assert health["max_batch_size"] == 4 and health["streaming"] is True
        wave = _speech(1)[0]
        answer = httpx.post(f"http://127.0.0.1:{port}/transcribe", content=_wav(wave), timeout=30)
        assert answer.status_code == 200 and "text" in answer.json()
        assert "ds2hub_batch_size_bucket" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        # A second server on the same port: one line and status 2, before any model loads.
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("ds2hub: error: cannot listen on 127.0.0.1:")
        assert second.stderr.count("\n") == 1 and "in use" in second.stderr
    finally:
        server.terminate()
        server.wait(20)


def _peak_rss_mb(pid: int) -> float:
    """The peak resident memory of a process (Linux: VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _bomb(path: Path, seconds: float, rate: int = 48000, channels: int = 6) -> Path:
    """A small FLAC that decodes to long multichannel audio (silence compresses to nothing)."""
    block = np.zeros((rate, channels), dtype=np.float32)
    with sf.SoundFile(path, "w", rate, channels, format="FLAC") as out:
        for _ in range(int(seconds)):
            out.write(block)
    return path


@contextlib.contextmanager
def _real_server(folder: Path, *options: str):
    """`ds2hub serve FOLDER` in a subprocess on a free loopback port: yields (process, port);
    its output (stdout and stderr) is in `process.output` once the block ends."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "ds2hub", "serve", str(folder), "--port", str(port), *options]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.2)
        yield server, port
    finally:
        server.terminate()
        server.output = server.communicate(timeout=30)[0]


def test_client_mistakes_on_a_real_server_log_no_error_and_oversized_messages_get_json(
    streaming_folder,
):
    """Through uvicorn: a refused handshake (bad rate) is no ERROR line; a message over the
    1 MiB limit gets the JSON error, then 1009; one over 4x the limit, which the protocol layer
    closes unread, is counted as `message_too_big`, not as a disconnect."""
    import websockets

    async def client(port: int) -> list:
        seen = []
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/stream?sample_rate=123"):
                pass
        except websockets.InvalidHandshake as refused:  # (InvalidStatus; InvalidStatusCode < 14)
            response = getattr(refused, "response", None)
            seen.append(getattr(response, "status_code", getattr(refused, "status_code", None)))
        for size in (2**20 + 2, 4 * 2**20 + 2):
            async with websockets.connect(f"ws://127.0.0.1:{port}/stream", max_size=None) as ws:
                await ws.send(b"\0" * size)
                try:
                    seen.append(json.loads(await ws.recv()))
                    await ws.recv()
                except websockets.ConnectionClosed as closed:
                    seen.append(closed.rcvd.code if closed.rcvd else None)
        return seen

    with _real_server(streaming_folder, "--threads", "1") as (server, port):
        seen = asyncio.run(client(port))
        time.sleep(0.5)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert seen[0] == 400
    assert seen[1]["type"] == "error" and "the limit is 1048576" in seen[1]["error"]
    assert seen[2:] == [1009, 1009]
    import importlib.util

    if importlib.util.find_spec("uvicorn.protocols.websockets.websockets_sansio_impl"):
        assert 'ds2hub_rejected_total{reason="message_too_big"} 2.0' in metrics
        assert 'reason="disconnected"' not in metrics
    else:  # older uvicorn: its protocol reports the unread message as a plain disconnect
        assert 'ds2hub_rejected_total{reason="message_too_big"} 1.0' in metrics
    assert "ERROR" not in server.output, server.output


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_decompression_bomb_decodes_in_bounded_memory_and_a_cut_wav_is_refused(
    streaming_folder, tmp_path
):
    """A FLAC of a few hundred KB that decodes to 400 s of 48 kHz 5.1 audio (4 x 10^8 bytes of
    float32 samples) is decoded block by block into 16 kHz mono: the server's peak memory grows
    by a fraction of the decoded input; one over the limit is refused before it is decoded."""
    bomb = _bomb(tmp_path / "bomb.flac", 400)
    assert bomb.stat().st_size < 3_000_000
    options = ["--threads", "1", "--max-file-seconds", "450", "--log-level", "warning"]
    with _real_server(streaming_folder, *options) as (server, port):
        url = f"http://127.0.0.1:{port}/transcribe"
        small = httpx.post(url, content=_wav(_speech(1)[0]), timeout=30)
        assert small.status_code == 200
        before = _peak_rss_mb(server.pid)
        answer = httpx.post(url, content=bomb.read_bytes(), timeout=300)
        assert answer.status_code == 200 and answer.json()["duration"] == pytest.approx(400)
        decoded_input_mb = 400 * 48000 * 6 * 4 / 2**20  # 439 MB as float32
        assert _peak_rss_mb(server.pid) - before < 0.4 * decoded_input_mb
        longer = _bomb(tmp_path / "longer.flac", 460)  # over the limit: its header says so
        refused = httpx.post(url, content=longer.read_bytes(), timeout=60)
        assert refused.status_code == 413 and "limit is 450 s" in refused.json()["error"]
        # A WAV cut to a third of its length is refused, not answered with a partial transcript.
        wav = _wav(_speech(1)[0])
        cut = httpx.post(url, content=wav[: len(wav) // 3], timeout=30)
        assert cut.status_code == 415 and "cut short" in cut.json()["error"]


def test_serve_command_errors_are_one_line(tmp_path, monkeypatch, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-batch-size", "0"]) == 2
    assert "max_batch_size=0" in capsys.readouterr().err
    import socket

    import ds2hub.inference.recognizer

    loads = []
    monkeypatch.setattr(
        ds2hub.inference.recognizer, "from_pretrained", lambda *a, **k: loads.append(a)
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)]) == 2
    assert "in use" in capsys.readouterr().err and not loads  # refused before the model loads
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "0-65535" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`serve` extra" in err and "uvicorn" in err


def test_a_failed_server_startup_is_one_traceback_and_status_3(tmp_path):
    """The app's startup (its lifespan) fails: uvicorn logs one traceback and `ds2hub serve` exits
    with uvicorn's status 3, as docs/guide/streaming-and-serving.md says; no second traceback from ds2hub."""
    script = textwrap.dedent(f"""
        import contextlib, sys
        from starlette.applications import Starlette
        import ds2hub.inference.recognizer, ds2hub.serving.app
        from ds2hub.cli.main import main

        class Model:
            def to(self, device):
                return self

        @contextlib.asynccontextmanager
        async def lifespan(app):
            raise OSError("no worker thread for Batch Dispatch")
            yield

        def create_app(recognizer, config):
            app = Starlette(lifespan=lifespan)
            app.state.engine = type("Engine", (), {{"stream_error": None}})()
            return app

        ds2hub.inference.recognizer.from_pretrained = lambda *args, **kwargs: Model()
        ds2hub.serving.app.create_app = create_app
        sys.exit(main(["serve", {str(tmp_path)!r}, "--port", "0"]))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("Traceback") == 1 and "no worker thread" in done.stderr
    assert "Application startup failed" in done.stderr


def test_serve_listens_on_every_address_it_can_and_leaks_no_socket(monkeypatch):
    """A name resolving to several addresses: one the machine lacks is skipped; one in use fails
    the start and closes the sockets already bound; port 0 is one port for all."""
    import socket

    from ds2hub.cli import serve as serving_main
    from ds2hub.errors import UsageError

    def resolves_to(*hosts):
        def getaddrinfo(host, port, *args, **kwargs):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (h, port)) for h in hosts]

        monkeypatch.setattr(serving_main.socket, "getaddrinfo", getaddrinfo)

    resolves_to("127.0.0.1", "192.0.2.1", "127.0.0.2")  # 192.0.2.1: a documentation address
    sockets = serving_main.bind_sockets("name", 0)
    try:
        assert [s.getsockname()[0] for s in sockets] == ["127.0.0.1", "127.0.0.2"]
        assert len({s.getsockname()[1] for s in sockets}) == 1
    finally:
        for s in sockets:
            s.close()
    with socket.socket() as busy:
        busy.bind(("127.0.0.2", 0))
        busy.listen()
        port = busy.getsockname()[1]
        resolves_to("127.0.0.1", "127.0.0.2")
        with pytest.raises(UsageError, match="in use"):
            serving_main.bind_sockets("name", port)
    with socket.socket() as again:  # the first address's socket was closed
        again.bind(("127.0.0.1", port))
    resolves_to("192.0.2.1")
    with pytest.raises(UsageError, match="cannot listen on name"):
        serving_main.bind_sockets("name", 0)
    monkeypatch.undo()
    with pytest.raises(UsageError, match="--host"):
        serving_main.bind_sockets("a" * 64, 0)  # a label too long for a host name


def test_the_serving_modules_are_not_imported_by_ds2hub():
    code = "import sys, ds2hub.cli.main; print(any(m.startswith(('starlette', 'uvicorn')) for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert out.stdout.strip() == "False", out.stderr
