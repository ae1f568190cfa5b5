"""Load test of `ds2hub serve`: Batch Dispatch on and off, 1 / 10 / 50 concurrent real-time streams.

    uv run --frozen python experiments/serve_load/serve_load.py

Each simulated client streams digit recordings (recipes/digits) as 16 kHz int16 PCM in 100 ms
chunks, paced in real time (streams start at random offsets within one chunk), to a real server
(`ds2hub serve` in a subprocess on a loopback port). For every chunk the client measures the time
from sending it to receiving the first partial that covers it. The server's `/metrics` gives the
share of work done in batches of two or more. The same load runs against the same server with
batching off (`--max-batch-size 1`). Last, the single-stream real-time factor: compute time of
`StreamSession.accept` over 100 ms chunks / audio duration, with torch on `--threads` cores.

The model is the `recipes/digits_streaming.yaml` architecture (forward-only GRUs + row
convolution, causal front end) with random weights unless `--model` names a folder: speed does
not depend on what the weights learned. The client runs in this process and shares the CPU with
the server, as a real co-located load generator would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "recipes" / "digits"
RATE = 16_000
CHUNK_SECONDS = 0.1


def build_model(folder: Path, arch: dict | None = None) -> Path:
    """A random-weight streaming model with front-end statistics from digit training audio."""
    from ds2hub.audio import load_audio
    from ds2hub.features import frame_statistics
    from ds2hub.inference.recognizer import SpeechRecognizer
    from ds2hub.tokenizers import CharTokenizer

    if arch is None:
        arch = yaml.safe_load((REPO / "recipes" / "digits_streaming.yaml").read_text())["model"][
            "arch"
        ]
    torch.manual_seed(0)
    rec = SpeechRecognizer(arch, {"normalization": "global"}, CharTokenizer())
    waves = [load_audio(p) for p in sorted((DIGITS / "train").glob("*.opus"))[:40]]
    rec.frontend.set_statistics(*frame_statistics([rec.frontend.unnormalized(w) for w in waves]))
    rec.save_pretrained(folder)
    return folder


def stream_audio(seconds: float, seed: int) -> np.ndarray:
    """`seconds` of digit speech as int16, different for each stream."""
    from ds2hub.audio import load_audio

    files = sorted((DIGITS / "test").glob("*.opus"))
    rng = random.Random(seed)
    pieces, total = [], 0
    while total < seconds * RATE:
        wave = load_audio(rng.choice(files)).numpy()
        pieces.append(wave)
        total += wave.size
    audio = np.concatenate(pieces)[: int(seconds * RATE)]
    return (np.clip(audio, -1, 1) * 32767).astype("<i2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(address: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"http://{address}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        m = re.match(r'(ds2hub_\w+)\{kind="step"\} ([0-9.e+-]+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


async def one_stream(url: str, audio: np.ndarray, offset: float, deadline: float) -> dict:
    import websockets

    chunk = int(CHUNK_SECONDS * RATE)
    sends: list[tuple[float, float]] = []  # (audio seconds at the chunk's end, send time)
    latencies: list[float] = []
    result: dict = {"final": None}
    async with websockets.connect(url, max_size=None) as ws:
        loop = asyncio.get_running_loop()

        async def receive() -> None:
            acked = 0
            async for message in ws:
                reply = json.loads(message)
                now = loop.time()
                if reply["type"] == "partial":
                    while acked < len(sends) and sends[acked][0] <= reply["audio_seconds"] + 1e-6:
                        latencies.append(now - sends[acked][1])
                        acked += 1
                else:
                    result["final"] = reply
                    result["final_at"] = now
                    return

        receiver = asyncio.ensure_future(receive())
        start = loop.time() + offset
        for k in range(0, audio.size, chunk):
            await asyncio.sleep(max(0.0, start + k / RATE - loop.time()))
            piece = audio[k : k + chunk]
            await ws.send(piece.tobytes())
            sends.append(((k + piece.size) / RATE, loop.time()))
        result["sent_at"] = loop.time()
        await ws.send(json.dumps({"type": "end"}))
        try:
            await asyncio.wait_for(receiver, max(1.0, deadline - loop.time()))
        except TimeoutError:
            receiver.cancel()
    result["latencies"] = latencies
    result["first_send"] = start
    return result


async def run_load(address: str, streams: int, seconds: float, timeout: float) -> dict:
    audios = [stream_audio(seconds, seed) for seed in range(streams)]
    rng = random.Random(0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds + timeout
    url = f"ws://{address}/stream?sample_rate=16000&encoding=pcm_s16le"
    begin = loop.time()
    results = await asyncio.gather(
        *(one_stream(url, a, rng.uniform(0, CHUNK_SECONDS), deadline) for a in audios)
    )
    end = max(r.get("final_at", loop.time()) for r in results)
    latencies = np.array([x for r in results for x in r["latencies"]])
    finished = sum(r["final"] is not None for r in results)
    lags = [r["final_at"] - r["sent_at"] for r in results if r["final"] is not None]
    return {
        "streams": streams,
        "finished": finished,
        "p50": float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
        "p95": float(np.percentile(latencies, 95)) if latencies.size else float("nan"),
        "p99": float(np.percentile(latencies, 99)) if latencies.size else float("nan"),
        "chunks": int(latencies.size),
        "audio_per_second": finished * seconds / (end - begin),
        "final_lag": float(np.median(lags)) if lags else float("nan"),
    }


def serve(
    folder: Path, port: int, max_batch: int, max_wait_ms: float, threads: int, device: str = "cpu"
):
    command = [
        sys.executable, "-m", "ds2hub", "serve", str(folder), "--port", str(port),
        "--max-batch-size", str(max_batch), "--max-wait-ms", str(max_wait_ms),
        "--threads", str(threads), "--max-streams", "1000", "--log-level", "warning",
        "--device", device,
    ]  # fmt: skip
    server = subprocess.Popen(command)
    import httpx

    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except httpx.HTTPError:
            if server.poll() is not None:
                raise RuntimeError("the server exited") from None
            time.sleep(0.3)
    server.terminate()
    raise RuntimeError("the server did not start")


def real_time_factor(folder: Path, seconds: float, threads: int) -> float:
    from ds2hub.inference.recognizer import from_pretrained

    torch.set_num_threads(threads)
    rec = from_pretrained(folder)
    audio = stream_audio(seconds, 0).astype(np.float32) / 32768
    chunk = int(CHUNK_SECONDS * RATE)
    with torch.inference_mode():
        rec.stream().accept(audio[:chunk])  # warm-up
        session = rec.stream()
        start = time.perf_counter()
        for k in range(0, audio.size, chunk):
            session.accept(audio[k : k + chunk])
        session.finish()
        elapsed = time.perf_counter() - start
    return elapsed / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a streaming model folder")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per stream")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument(
        "--max-wait-ms", type=float, nargs="+", default=[0.0, 10.0],
        help="max wait settings to measure with batching on",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--device", default="cpu", help="the server's device (cuda on a GPU)")
    parser.add_argument("--timeout", type=float, default=60.0, help="wait for finals after sending")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or build_model(Path(tmp) / "model")
        rows = []
        configs = [(f"on, wait {w:g} ms", args.max_batch_size, w) for w in args.max_wait_ms]
        for label, max_batch, wait in [*configs, ("off", 1, 0.0)]:
            port = free_port()
            server = serve(folder, port, max_batch, wait, args.threads, args.device)
            address = f"127.0.0.1:{port}"
            try:
                for n in args.streams:
                    before = scrape(address)
                    row = asyncio.run(run_load(address, n, args.seconds, args.timeout))
                    after = scrape(address)
                    items = after.get("ds2hub_items_total", 0) - before.get("ds2hub_items_total", 0)
                    batched = after.get("ds2hub_batched_items_total", 0) - before.get(
                        "ds2hub_batched_items_total", 0
                    )
                    batches = after.get("ds2hub_batch_size_count", 0) - before.get(
                        "ds2hub_batch_size_count", 0
                    )
                    row.update(
                        batching=label,
                        batched_share=batched / items if items else float("nan"),
                        mean_batch=items / batches if batches else float("nan"),
                    )
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                server.terminate()
                server.wait(30)

        print(
            f"\nServe load: {args.seconds:g} s of audio per stream in {CHUNK_SECONDS * 1000:.0f} ms "
            f"chunks, real time; server torch threads {args.threads}; batching on = max batch "
            f"{args.max_batch_size}, off = max batch 1"
        )
        header = (
            "| streams | batching | finished | work in batches >= 2 | mean batch | "
            "p50 ms | p95 ms | p99 ms | audio s / s | final lag s |"
        )
        print(header)
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(rows, key=lambda r: r["streams"]):
            print(
                f"| {r['streams']} | {r['batching']} | {r['finished']}/{r['streams']} | "
                f"{100 * r['batched_share']:.0f}% | {r['mean_batch']:.2f} | {1000 * r['p50']:.0f} | "
                f"{1000 * r['p95']:.0f} | {1000 * r['p99']:.0f} | {r['audio_per_second']:.2f} | "
                f"{r['final_lag']:.2f} |"
            )

        print(f"\nSingle-stream real-time factor ({args.threads} torch threads, 100 ms chunks)")
        print("| model | parameters | RTF |")
        print("|---|---:|---:|")
        from ds2hub.inference.recognizer import from_pretrained
        from ds2hub.model import get_preset

        rtf = real_time_factor(folder, args.seconds, args.threads)
        params = from_pretrained(folder).num_parameters
        print(f"| digits_streaming (recipe arch) | {params / 1e6:.2f}M | {rtf:.3f} |")
        paper = build_model(Path(tmp) / "paper", get_preset("paper-streaming").to_dict())
        rtf = real_time_factor(paper, min(args.seconds, 4.0), args.threads)
        params = from_pretrained(paper).num_parameters
        print(f"| paper-streaming preset | {params / 1e6:.1f}M | {rtf:.3f} |")


if __name__ == "__main__":
    main()
