"""`ServeConfig`: every limit and scheduling setting of `ds2hub serve`, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from ds2hub.errors import ConfigError


@dataclass(frozen=True)
class ServeConfig:
    """Batch Dispatch settings and the limits that keep one client from hurting the others."""

    # Batch Dispatch: a batch runs when it holds `max_batch_size` items of one kind, or when its
    # oldest item has waited `max_wait_ms` (0: run whatever is pending as soon as the model is free,
    # as the paper's scheduler does). `max_batch_size=1` switches batching off.
    max_batch_size: int = 16
    max_wait_ms: float = 10.0
    # Capacity: streams beyond `max_streams` and files beyond `max_pending_files` (being decoded
    # or recognised) are refused with 503 and Retry-After (back-pressure, not an unbounded queue);
    # with `max_streams_per_client` > 0, one client address's streams beyond it get 429.
    max_streams: int = 64
    max_pending_files: int = 32
    # Decoded audio that uploads may hold at once (16 kHz float32: 3,600 s is 230 MB); an upload
    # that would pass it gets 503 once it is decoded (its length is known then).
    max_pending_audio_seconds: float = 3600.0
    max_streams_per_client: int = 0
    retry_after_s: int = 1
    # Uploads: larger bodies get 413; longer recordings too (compressed audio can be small).
    max_upload_bytes: int = 25 * 2**20
    max_file_seconds: float = 1800.0
    # Streams: a client that sends nothing for `idle_timeout_s` is closed (its state freed); one
    # message may hold at most `max_message_bytes`; a stream at most `max_stream_seconds` of audio
    # and `max_stream_wall_seconds` of connection time; a stream whose audio falls more than
    # `max_stream_lag_s` behind real time (time the server waited for it minus audio received)
    # is closed, so a trickle of bytes cannot hold a slot.
    idle_timeout_s: float = 10.0
    max_message_bytes: int = 2**20
    max_stream_seconds: float = 3600.0
    max_stream_wall_seconds: float = 7200.0
    max_stream_lag_s: float = 30.0
    # Audio the client sent but the model has not consumed yet; beyond it the server stops reading
    # (TCP back-pressure) until the model catches up.
    max_buffered_seconds: float = 10.0
    # Rates a client may declare for raw PCM on the streaming endpoint (resampled to 16 kHz).
    sample_rates: tuple[int, ...] = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)

    def __post_init__(self) -> None:
        checks = {
            "max_batch_size": self.max_batch_size >= 1,
            "max_wait_ms": self.max_wait_ms >= 0,
            "max_streams": self.max_streams >= 0,
            "max_pending_files": self.max_pending_files >= 1,
            "max_pending_audio_seconds": self.max_pending_audio_seconds > 0,
            "max_streams_per_client": self.max_streams_per_client >= 0,
            "retry_after_s": self.retry_after_s >= 0,
            "max_upload_bytes": self.max_upload_bytes >= 1,
            "max_file_seconds": self.max_file_seconds > 0,
            "idle_timeout_s": self.idle_timeout_s > 0,
            "max_message_bytes": self.max_message_bytes >= 4,
            "max_stream_seconds": self.max_stream_seconds > 0,
            "max_stream_wall_seconds": self.max_stream_wall_seconds > 0,
            "max_stream_lag_s": self.max_stream_lag_s > 0,
            "max_buffered_seconds": self.max_buffered_seconds > 0,
            "sample_rates": bool(self.sample_rates) and all(r > 0 for r in self.sample_rates),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                "invalid serve settings: " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
            )
