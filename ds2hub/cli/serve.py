"""`ds2hub serve MODEL`: the recogniser behind an ASGI server (uvicorn) with Batch Dispatch."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys

from ds2hub.arguments import ArgumentParser
from ds2hub.errors import UsageError
from ds2hub.extras import require
from ds2hub.paths import missing_local
from ds2hub.serving.config import ServeConfig

logger = logging.getLogger(__name__)
SERVE_MODULES = ("starlette", "uvicorn", "prometheus_client", "soxr", "websockets")


def _url_host(host: str) -> str:
    """`host` as it is written before `:port`: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _denials_are_not_errors(record: logging.LogRecord) -> bool:
    """uvicorn's sans-I/O WebSocket protocol logs every refused handshake (an HTTP denial
    response: a client's bad sample rate, a full server) as the ERROR "ASGI callable returned
    without completing handshake"; the refusal is already logged at INFO. Downgraded so that
    ordinary client mistakes page nobody."""
    message = record.getMessage()
    if (
        record.levelno == logging.ERROR
        and message.startswith("ASGI callable returned without")
        and "handshake" in message
    ):
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """The server's listening sockets, one per address `host` resolves to, bound and listening
    before the model loads, so that a busy port or a bad host is a `UsageError` at once (uvicorn
    binds inside `Server.run` and exits on failure); uvicorn then serves on these very sockets.
    An address this machine lacks (::1 with IPv6 off) is skipped as long as another binds;
    `--port 0` picks one free port for all of them."""
    bare = host.strip("[]")  # `[::1]`, as in a URL
    where = f"{_url_host(bare)}:{port}"
    if not 0 <= port <= 65535:
        raise UsageError(f"cannot listen on {where} (--port): ports are 0-65535")
    try:
        infos = socket.getaddrinfo(
            bare, port, socket.AF_UNSPEC, socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as error:  # (a label over 63 characters: UnicodeError)
        reason = getattr(error, "strerror", None) or str(error)
        raise UsageError(f"cannot listen on {where} (--host): {reason}") from None
    # asyncio's rule: an IPv6 socket beside an IPv4 one takes IPv6 only; `::` alone, both.
    both = {info[0] for info in infos} >= {socket.AF_INET, socket.AF_INET6}
    sockets: list[socket.socket] = []
    missing: OSError | None = None
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            if port == 0 and sockets:  # the port the first socket got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = socket.socket(family, kind, proto)
            try:
                if os.name != "nt":  # on Windows it would let two servers share a port
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
                if family == socket.AF_INET6 and both:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(2048)  # uvicorn's default backlog; listening is what claims the port
            except OSError as error:
                sock.close()
                if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    missing = error  # an address this machine lacks: the others may do
                    continue
                raise
            sock.set_inheritable(True)
            sockets.append(sock)
        if not sockets:
            raise missing or OSError("no address to listen on")
    except OSError as error:
        for sock in sockets:
            sock.close()
        reason = error.strerror or str(error)
        raise UsageError(f"cannot listen on {where} (--host, --port): {reason}") from None
    return sockets


def main(argv: list[str]) -> None:
    """Loads the model and serves it on `bind_sockets` with uvicorn until interrupted."""
    defaults = ServeConfig()
    parser = ArgumentParser(
        prog="ds2hub serve",
        description="Serve a model: WebSocket streaming (/stream), whole files (POST "
        "/transcribe), Prometheus metrics (/metrics) and /health, with Batch Dispatch.",
    )
    add = parser.add_argument
    add("model", help="hub id, local folder, or .ckpt from ds2hub fit")
    add("--revision", help="hub revision (branch, tag or commit)")
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8000)
    add("--device", default="cpu", help="cpu (default), cuda, ...")
    add("--threads", type=int, help="torch intra-op threads (default: torch's)")
    # The server's limits: flag -> (its `ServeConfig` field, help); --max-upload-mb is in MiB.
    limits = {
        "--max-batch-size": ("max_batch_size", "most work items per forward pass (1: no batching)"),
        "--max-wait-ms": ("max_wait_ms", "longest an item waits for its batch to fill"),
        "--max-streams": ("max_streams", "open streams beyond this get 503 + Retry-After"),
        "--max-pending-files": ("max_pending_files", None),
        "--max-file-seconds": ("max_file_seconds", None),
        "--max-pending-audio-seconds": (
            "max_pending_audio_seconds",
            "decoded audio uploads may hold at once; beyond: 503",
        ),
        "--idle-timeout": ("idle_timeout_s", "seconds without a message before a stream is closed"),
        "--max-stream-seconds": ("max_stream_seconds", "most seconds of audio in one stream"),
        "--max-stream-wall-seconds": (
            "max_stream_wall_seconds",
            "most seconds a stream stays open",
        ),
        "--max-stream-lag": (
            "max_stream_lag_s",
            "seconds a stream's audio may fall behind real time before it is closed",
        ),
        "--max-streams-per-client": (
            "max_streams_per_client",
            "open streams one client address may hold (0: no limit); beyond: 429",
        ),
    }
    for flag, (dest, help_text) in limits.items():
        default = getattr(defaults, dest)
        add(flag, dest=dest, type=type(default), default=default, help=help_text)
    add(
        "--max-upload-mb",
        type=float,
        default=defaults.max_upload_bytes / 2**20,
        help="larger uploads get 413",
    )
    add("--log-level", default="info")
    args = parser.parse_args(argv)
    for module in SERVE_MODULES:  # before the model loads: say which extra is missing
        require(module, "serve")
    settings = {dest: getattr(args, dest) for dest, _ in limits.values()}
    config = ServeConfig(**settings, max_upload_bytes=int(args.max_upload_mb * 2**20))
    if missing_local(args.model):
        raise UsageError(f"model {args.model!r} does not exist")
    import torch
    import uvicorn

    from ds2hub.inference.recognizer import from_pretrained, usable_device
    from ds2hub.serving.app import create_app

    sockets = bind_sockets(args.host, args.port)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        device = usable_device(args.device)
        recognizer = from_pretrained(args.model, revision=args.revision).to(device)
        app = create_app(recognizer, config)
        stream_error = app.state.engine.stream_error
        if stream_error:
            logger.warning("WebSocket streaming is off for this model: %s", stream_error)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level=args.log_level,
                # Messages up to 4x the limit reach the app, which answers them with the JSON
                # error before closing (1009); larger ones the protocol layer closes unread.
                ws_max_size=4 * config.max_message_bytes,
                ws_ping_interval=20.0,
                ws_ping_timeout=20.0,
            )
        )
        logging.getLogger("uvicorn.error").addFilter(_denials_are_not_errors)
        for sock in sockets:  # uvicorn does not say where pre-bound sockets listen
            address, port = sock.getsockname()[:2]
            logger.info("ds2hub serve: listening on http://%s:%d", _url_host(address), port)
        # When the app's own startup (its lifespan: the Batch Dispatch worker) fails, uvicorn logs
        # the traceback and exits with status 3 (older versions return unstarted: see below).
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
    if not server.started:
        print("ds2hub: error: the server did not start (the log above says why)", file=sys.stderr)
        raise SystemExit(3)
