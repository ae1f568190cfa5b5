"""Soak test of `ds2hub serve` under hostile input: does the server keep its memory bounded and its
good clients' latency and answers while some clients misbehave and decompression bombs arrive?

    uv run --frozen python experiments/soak/soak.py --model MODEL --minutes 3

Two runs against a fresh `ds2hub serve MODEL --threads 2` (default limits) on a loopback port:
"clean" (only good clients) and "hostile" (the same good clients; 10 % of their requests replaced
by malformed ones; a client that holds a stream open with a trickle of bytes; and a FLAC that
decodes to 1,790 s of 48 kHz 5.1 audio posted every minute, `--bombs` of them at once, from the
first minute's 10th second). Good clients: `--streams` stream loops (10 s of digit speech each, 16 kHz int16 in
100 ms chunks paced in real time, over and over) and `--posts` upload loops (a digits test
recording, then a 0.5 s pause). Every good answer is compared with what the same model gives
offline (`SpeechRecognizer.transcribe`): a difference is a wrong answer. Every malformed request
must get its documented refusal (HTTP status or WebSocket close code). The server's resident
memory is sampled every 0.2 s from /proc (Linux).

`MODEL` is what `ds2hub serve` takes (a folder or a `.ckpt`) and must be able to stream; without
it, the `recipes/digits_streaming.yaml` architecture with random weights is used (speed does not
depend on the weights, but its transcripts are close to empty, which makes "wrong answers" a
weak check).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "serve_load"))
from serve_load import build_model, free_port, one_stream, serve, stream_audio  # noqa: E402

RATE = 16_000
T0 = [0.0]
STREAM_SECONDS = 10.0
MALFORMED_SHARE = 0.1
BOMB_SECONDS = 1790  # under the default 1,800 s limit: it must be decoded and recognised
BOMB_EVERY = 60.0
BOMB_FIRST = 10.0


@dataclass
class Tally:
    stream_latency: list[float] = field(default_factory=list)  # seconds, per chunk
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (chunk sent, latency)
    post_latency: list[float] = field(default_factory=list)
    good: int = 0  # good requests answered
    wrong: int = 0  # good requests answered with another transcript than offline
    failed: list[str] = field(default_factory=list)  # good requests without an answer
    malformed: int = 0
    refused_as_documented: int = 0
    surprises: list[str] = field(default_factory=list)  # malformed requests answered otherwise
    bombs: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds)
    hog_closes: list[str] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)


def make_bomb(path: Path) -> Path:
    """A FLAC of under 1 MB that decodes to `BOMB_SECONDS` of 48 kHz 5.1 silence (2 GB of float32)."""
    if not path.exists():
        block = np.zeros((48000, 6), dtype=np.float32)
        with sf.SoundFile(path, "w", 48000, 6, format="FLAC") as out:
            for _ in range(BOMB_SECONDS):
                out.write(block)
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


async def bad_post(client, url: str, rng: random.Random, wav: bytes) -> tuple[str, bool]:
    kind = rng.choice(["garbage", "empty", "cut_wav", "multipart"])
    if kind == "multipart":
        answer = await client.post(url, files={"file": ("a.wav", wav)})
    else:
        body = {"garbage": b"not audio " * 50, "empty": b"", "cut_wav": wav[: len(wav) // 3]}[kind]
        answer = await client.post(url, content=body)
    expected = 400 if kind == "empty" else 415
    return f"POST {kind}: {answer.status_code}", answer.status_code == expected


async def bad_stream(address: str, rng: random.Random) -> tuple[str, bool]:
    import websockets

    kind = rng.choice(["bad_rate", "not_finite", "odd_bytes", "text", "vanish"])
    if kind == "bad_rate":
        try:
            async with websockets.connect(f"ws://{address}/stream?sample_rate=123"):
                return "stream bad_rate: accepted", False
        except websockets.InvalidHandshake as refused:
            status = getattr(getattr(refused, "response", None), "status_code", None)
            return f"stream bad_rate: {status}", status == 400
    encoding = "pcm_f32le" if kind == "not_finite" else "pcm_s16le"
    ws = await websockets.connect(f"ws://{address}/stream?encoding={encoding}")
    await ws.send(np.zeros(1600, "<i2" if encoding == "pcm_s16le" else "<f4").tobytes())
    if kind == "vanish":
        await asyncio.sleep(0.2)
        ws.transport.abort()  # no close handshake
        return "stream vanish", True
    payload = {
        "not_finite": np.array([np.inf] * 8, "<f4").tobytes(),
        "odd_bytes": b"\xff" * 7,
        "text": "not json",
    }[kind]
    await ws.send(payload)
    replies = []
    try:
        async for message in ws:
            replies.append(json.loads(message))
    except websockets.ConnectionClosed:
        pass
    expected = 1003 if kind == "text" else 1007
    ok = ws.close_code == expected and bool(replies) and replies[-1]["type"] == "error"
    return f"stream {kind}: {ws.close_code}", ok


async def stream_loop(address, end, rng, audios, expected, tally, hostile) -> None:
    url = f"ws://{address}/stream?sample_rate=16000&encoding=pcm_s16le"
    while time.monotonic() < end:
        if hostile and rng.random() < MALFORMED_SHARE:
            what, ok = await bad_stream(address, rng)
            tally.malformed += 1
            tally.refused_as_documented += ok
            if not ok:
                tally.surprises.append(what)
            continue
        k = rng.randrange(len(audios))
        loop = asyncio.get_running_loop()
        result = await one_stream(url, audios[k], rng.uniform(0, 0.1), loop.time() + 60)
        if result["final"] is None:
            tally.failed.append("stream without a final")
            continue
        tally.good += 1
        tally.stream_latency += result["latencies"]
        tally.timeline += [
            (result["first_send"] + 0.1 * i - T0[0], x) for i, x in enumerate(result["latencies"])
        ]
        tally.wrong += result["final"].get("text") != expected[k]


async def post_loop(address, end, rng, files, expected, tally, hostile) -> None:
    import httpx

    url = f"http://{address}/transcribe"
    async with httpx.AsyncClient(timeout=300) as client:
        while time.monotonic() < end:
            k = rng.randrange(len(files))
            if hostile and rng.random() < MALFORMED_SHARE:
                what, ok = await bad_post(client, url, rng, files[k])
                tally.malformed += 1
                tally.refused_as_documented += ok
                if not ok:
                    tally.surprises.append(what)
                continue
            start = time.perf_counter()
            answer = await client.post(url, content=files[k])
            if answer.status_code != 200:
                tally.failed.append(f"POST {answer.status_code}: {answer.text[:100]}")
            else:
                tally.good += 1
                tally.post_latency.append(time.perf_counter() - start)
                tally.wrong += answer.json()["text"] != expected[k]
            await asyncio.sleep(0.5)


async def hog_loop(address, end, tally) -> None:
    """One client that holds a stream open with 2 bytes every 4 s (under the idle timeout)."""
    import websockets

    while time.monotonic() < end - 5:
        async with websockets.connect(f"ws://{address}/stream") as ws:

            async def trickle() -> None:
                while True:
                    await ws.send(b"\0\0")
                    await asyncio.sleep(4)

            sender = asyncio.ensure_future(trickle())
            opened = time.monotonic()
            try:
                async for message in ws:
                    reply = json.loads(message)
                    if reply["type"] == "error":
                        tally.hog_closes.append(
                            f"{time.monotonic() - opened:.0f} s: {reply['error'][:60]}"
                        )
            except websockets.ConnectionClosed:
                pass
            sender.cancel()


async def bomb_loop(address, start, end, bomb: bytes, bombs: int, tally) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=600) as client:
        at = start + BOMB_FIRST
        while at < end:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            sent = time.perf_counter()

            async def one(sent: float = sent) -> None:
                answer = await client.post(f"http://{address}/transcribe", content=bomb)
                tally.bombs.append((answer.status_code, time.perf_counter() - sent))

            await asyncio.gather(*(one() for _ in range(bombs)))
            at += BOMB_EVERY


async def memory_loop(pid: int, end: float, tally: Tally) -> None:
    while time.monotonic() < end:
        tally.rss_mb.append(rss_mb(pid))
        await asyncio.sleep(0.2)


async def soak(address, pid, seconds, args, material, hostile: bool) -> Tally:
    audios, stream_expected, files, file_expected, bomb = material
    tally = Tally()
    T0[0] = asyncio.get_running_loop().time()
    start = time.monotonic()
    end = start + seconds
    rng = random.Random(1 if hostile else 0)
    tasks = [
        stream_loop(
            address, end, random.Random(rng.random()), audios, stream_expected, tally, hostile
        )
        for _ in range(args.streams)
    ]
    tasks += [
        post_loop(address, end, random.Random(rng.random()), files, file_expected, tally, hostile)
        for _ in range(args.posts)
    ]
    if hostile:
        tasks += [
            hog_loop(address, end, tally),
            bomb_loop(address, start, end, bomb, args.bombs, tally),
        ]
    # The memory sampler runs until every client is done (a bomb may still be recognised).
    clients = asyncio.gather(*tasks)
    memory = asyncio.ensure_future(memory_loop(pid, float("inf"), tally))
    await clients
    memory.cancel()
    return tally


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="folder or .ckpt (default: random weights)")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of each run")
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--posts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bombs", type=int, default=1, help="bombs posted at once, every minute")
    args = parser.parse_args()

    from ds2hub.inference.recognizer import from_pretrained

    work = Path(tempfile.mkdtemp(prefix="ds2hub-soak-"))
    model = args.model or str(build_model(work / "model"))
    recognizer = from_pretrained(model)
    audios = [stream_audio(STREAM_SECONDS, seed) for seed in range(8)]
    stream_expected = [recognizer.transcribe(a, sample_rate=RATE) for a in audios]
    paths = sorted((REPO / "recipes" / "digits" / "test").glob("*.opus"))[:8]
    files = [p.read_bytes() for p in paths]
    file_expected = [recognizer.transcribe(p) for p in paths]
    del recognizer
    bomb = make_bomb(Path(tempfile.gettempdir()) / "ds2hub-soak-bomb.flac").read_bytes()
    material = (audios, stream_expected, files, file_expected, bomb)
    print(f"model {model}; bomb {len(bomb) / 2**20:.1f} MB -> {BOMB_SECONDS} s of 48 kHz 5.1")

    rows = []
    for name, hostile in (("clean", False), ("hostile", True)):
        port = free_port()
        server = serve(Path(model), port, 16, 10.0, args.threads)
        try:
            tally = asyncio.run(
                soak(f"127.0.0.1:{port}", server.pid, args.minutes * 60, args, material, hostile)
            )
        finally:
            server.terminate()
            server.wait(30)
        rows.append((name, tally))
        print(f"{name}: failed good requests {tally.failed[:5]}; surprises {tally.surprises[:5]}")
        print(f"{name}: bombs {tally.bombs}; hog closed {tally.hog_closes}")
        bins: dict[int, list[float]] = {}
        for at, x in tally.timeline:
            bins.setdefault(int(at // 5) * 5, []).append(x)
        print(
            name, "p95 ms per 5 s:", {k: round(percentile(v, 95)) for k, v in sorted(bins.items())}
        )

    clean_p95 = percentile(rows[0][1].stream_latency, 95)
    print()
    print(
        "| run | good answered | wrong | failed | malformed (refused as documented) | bombs "
        "(status, s) | stream p50 ms | stream p95 ms | p95 / clean | POST p50 ms | POST p95 ms "
        "| peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, t in rows:
        bombs = ", ".join(f"{s} in {d:.0f}" for s, d in t.bombs) or "-"
        p95 = percentile(t.stream_latency, 95)
        print(
            f"| {name} | {t.good} | {t.wrong} | {len(t.failed)} | {t.malformed} "
            f"({t.refused_as_documented}) | {bombs} | {percentile(t.stream_latency, 50):.0f} | "
            f"{p95:.0f} | {p95 / clean_p95:.2f} | {percentile(t.post_latency, 50):.0f} | "
            f"{percentile(t.post_latency, 95):.0f} | {max(t.rss_mb):.0f} |"
        )


if __name__ == "__main__":
    main()
