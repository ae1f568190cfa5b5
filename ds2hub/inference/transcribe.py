"""Transcription of files and arrays of any length and number: sources are decoded lazily by a
`DataLoader` (optionally in worker processes), cut into overlapping windows, recognised in
batched forward passes, stitched per recording and decoded (with word timestamps from the CTC
alignment). Memory stays bounded: at most `4 * batch_size` windows wait to be batched, and only
the recordings in progress keep their logits.

Long recordings are cut into windows of `chunk_seconds` that overlap by `overlap_seconds`; each
window is recognised on its own (memory stays bounded and utterances stay near the lengths the
model was trained on) and the logits of neighbouring windows are joined at the middle of their
overlap, so every kept frame has at least half the overlap of context on both sides.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from ds2hub.audio import SAMPLE_RATE, AudioSource, load_audio
from ds2hub.decoding.alignment import WordTiming, word_timestamps
from ds2hub.errors import ConfigError

if TYPE_CHECKING:
    from ds2hub.inference.recognizer import SpeechRecognizer

logger = logging.getLogger(__name__)

MIN_CHUNK_SECONDS = 1.0  # below this, windows hold too little context to recognise words
DEFAULT_CHUNK_SECONDS = 20.0  # near the utterance lengths models are trained on
DEFAULT_OVERLAP_SECONDS = 2.0  # capped at a quarter of the window


@dataclass(frozen=True)
class WindowPlan:
    """How a long recording is cut: all lengths are whole output frames of the model, so a
    window's logit frame j is the recording's frame `start_frame + j` exactly."""

    frame_samples: int  # input samples per output frame (feature hop x the model's time stride)
    window_frames: int
    overlap_frames: int

    @property
    def hop_frames(self) -> int:
        return self.window_frames - self.overlap_frames

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.frame_samples

    @property
    def hop_samples(self) -> int:
        return self.hop_frames * self.frame_samples

    def num_windows(self, num_samples: int) -> int:
        if num_samples <= self.window_samples:
            return 1
        return 1 + math.ceil((num_samples - self.window_samples) / self.hop_samples)

    def windows(self, waveform: torch.Tensor) -> list[torch.Tensor]:
        """(T,) -> views of the overlapping windows, in order."""
        hop, n = self.hop_samples, self.num_windows(waveform.numel())
        return [waveform[k * hop : k * hop + self.window_samples] for k in range(n)]

    def keep(self, index: int, count: int, frames: int) -> slice:
        """Which of window `index`'s `frames` logit frames the stitched recording keeps: from the
        midpoint of its overlap with the previous window to the midpoint with the next."""
        half = self.overlap_frames // 2
        start = 0 if index == 0 else half
        end = frames if index == count - 1 else self.hop_frames + half
        return slice(start, end)


def plan_windows(
    recognizer: SpeechRecognizer, chunk_seconds: float, overlap_seconds: float | None = None
) -> WindowPlan:
    """Checks `chunk_seconds` / `overlap_seconds` and turns them into whole model frames.

    Raises:
        ConfigError: for a window below `MIN_CHUNK_SECONDS`, or an overlap that is negative or
            half the window or more.
    """
    if not math.isfinite(chunk_seconds) or chunk_seconds < MIN_CHUNK_SECONDS:
        raise ConfigError(
            f"chunk_seconds must be at least {MIN_CHUNK_SECONDS:g} s (got {chunk_seconds!r}): "
            "shorter windows hold too little context to recognise words"
        )
    if overlap_seconds is None:
        overlap_seconds = min(DEFAULT_OVERLAP_SECONDS, chunk_seconds / 4)
    if not math.isfinite(overlap_seconds) or not 0 <= overlap_seconds < chunk_seconds / 2:
        raise ConfigError(
            f"overlap_seconds must be >= 0 and below half of chunk_seconds ({chunk_seconds:g} s); "
            f"got {overlap_seconds!r}"
        )
    frame_samples = recognizer.features.hop_length * recognizer.arch.time_stride
    per_second = SAMPLE_RATE / frame_samples
    window = max(1, round(chunk_seconds * per_second))
    overlap = round(overlap_seconds * per_second)
    return WindowPlan(frame_samples, window, min(overlap, window - 1))


@dataclass
class Transcript:
    """What one source was recognised as."""

    text: str
    duration: float  # seconds of audio
    words: list[WordTiming] | None = None  # with `timestamps=True` (None: could not be aligned)
    error: str | None = None  # the source could not be read (then `text` is empty)

    def to_dict(self) -> dict:
        out: dict = {"text": self.text, "duration": round(self.duration, 3)}
        if self.words is not None:
            out["words"] = [w.to_dict() for w in self.words]
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Window:
    """Window `index` of the `count` windows of recording `source` (`WindowPlan.windows`)."""

    source: int
    index: int
    count: int
    samples: torch.Tensor  # (T,) 16 kHz, CPU


@dataclass
class _Failure:
    source: int
    error: str


@dataclass
class AudioWindows(IterableDataset):
    """Sources -> their overlapping windows, decoded lazily (one source at a time per worker).

    Workers take every `num_workers`-th source, so each source is read once.
    """

    sources: Sequence[AudioSource]
    plan: WindowPlan
    sample_rate: int | None
    skip_errors: bool

    def __iter__(self) -> Iterator[Window | _Failure]:
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(start, len(self.sources), step):
            try:
                waveform = load_audio(self.sources[i], self.sample_rate)
            except (ValueError, OSError) as error:  # AudioDecodeError is a ValueError
                if not self.skip_errors:
                    raise
                yield _Failure(i, " ".join(str(error).split()))
                continue
            windows = self.plan.windows(waveform)
            for k, piece in enumerate(windows):
                # A copy: a view would keep (and send between processes) the whole recording.
                yield Window(i, k, len(windows), piece.clone())


def window_logits(
    recognizer: SpeechRecognizer, plan: WindowPlan, windows: Sequence[Window]
) -> list[torch.Tensor]:
    """The logits (T_k, V) each window keeps for its recording (`WindowPlan.keep`), from one
    batched forward pass on the model's device; a window shorter than one analysis window keeps
    no frames. Call under `torch.inference_mode()`."""
    device = next(recognizer.parameters()).device
    kept = [torch.empty(0, recognizer.tokenizer.vocab_size) for _ in windows]
    long = [k for k, w in enumerate(windows) if w.samples.numel() >= recognizer.features.n_fft]
    if not long:
        return kept
    features = [recognizer.frontend(windows[k].samples.to(device)) for k in long]  # (F, T_k)
    lengths = torch.tensor([f.size(1) for f in features], device=device)
    padded = pad_sequence([f.T for f in features], batch_first=True).transpose(1, 2)
    logits, out_lengths = recognizer.model(padded, lengths)  # (B, T', V)
    for k, row, n in zip(long, logits.float().cpu(), out_lengths.tolist()):
        kept[k] = row[plan.keep(windows[k].index, windows[k].count, n)]
    return kept


def stitch(
    recognizer: SpeechRecognizer,
    plan: WindowPlan,
    logits: Sequence[torch.Tensor],
    num_samples: int,
    decode: Callable[[torch.Tensor, torch.Tensor], list[str]],
    timestamps: bool = False,
) -> Transcript:
    """One recording's `Transcript` from the kept logits of its windows, in order: decoded with
    `decode` (`SpeechRecognizer.text_decoder`), with word timings if `timestamps`."""
    duration = num_samples / SAMPLE_RATE
    joined = torch.cat(list(logits))  # (T, V)
    length = torch.tensor([joined.size(0)])
    (text,) = decode(joined.log_softmax(-1)[None], length)  # decoders take log-probs
    words = None
    if timestamps:
        words = word_timestamps(
            joined, text, recognizer.tokenizer, plan.frame_samples / SAMPLE_RATE
        )
        # The last frame's window reaches past the end of the audio.
        words = words and [replace(w, end=min(w.end, round(duration, 3))) for w in words]
    return Transcript(text, duration, words)


@dataclass
class _Recording:
    count: int
    samples: int = 0
    logits: dict[int, torch.Tensor] = field(default_factory=dict)  # window -> kept (T_k, V)


@torch.inference_mode()
def iter_transcripts(
    recognizer: SpeechRecognizer,
    sources: Sequence[AudioSource],
    batch_size: int = 8,
    sample_rate: int | None = None,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    overlap_seconds: float | None = None,
    decoding: Any = None,
    timestamps: bool = False,
    num_workers: int = 0,
    skip_errors: bool = False,
    progress: bool = False,
) -> Iterator[Transcript]:
    """Transcribes `sources` lazily, yielding one `Transcript` per source in input order.

    Args:
        recognizer: the model; it runs on the device its parameters are on.
        sources: file paths, encoded bytes, or raw arrays (then give `sample_rate`).
        batch_size: windows per forward pass.
        sample_rate: the rate of raw arrays; files carry their own.
        chunk_seconds: window length for long recordings (at least `MIN_CHUNK_SECONDS`).
        overlap_seconds: overlap of neighbouring windows (default: 2 s, at most a quarter window).
        decoding: passed to `recognizer.text_decoder` (None: the model's default decoding; or a
            beam-search setting).
        timestamps: add word timings from the CTC alignment.
        num_workers: processes that decode audio ahead of the model (0: in this process).
        skip_errors: give a `Transcript` with `error` for unreadable sources instead of raising.
        progress: show a progress bar.
    Raises:
        ConfigError: for an unusable `chunk_seconds`, `overlap_seconds` or `batch_size`.
        AudioDecodeError: for an unreadable source (unless `skip_errors`).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    plan = plan_windows(recognizer, chunk_seconds, overlap_seconds)
    decode = recognizer.text_decoder(decoding)
    windows = AudioWindows(sources, plan, sample_rate, skip_errors)
    # batch_size=None: one item at a time, passed through unchanged (no collation)
    loader = DataLoader(windows, batch_size=None, num_workers=num_workers)
    bar = tqdm(total=len(sources), desc="transcribing", unit="file", disable=not progress)
    pool_size = 4 * batch_size  # windows gathered before sorting them by length into batches
    pool: list[Window] = []
    open_: dict[int, _Recording] = {}
    done: dict[int, Transcript] = {}
    next_out = 0

    def finish(i: int) -> None:
        rec = open_.pop(i)
        logits = [rec.logits[k] for k in range(rec.count)]
        done[i] = stitch(recognizer, plan, logits, rec.samples, decode, timestamps)

    def run_pool() -> None:
        pool.sort(key=lambda w: -w.samples.numel())  # similar lengths together: little padding
        for b in range(0, len(pool), batch_size):
            batch = pool[b : b + batch_size]
            kept = window_logits(recognizer, plan, batch)
            for w, rows in zip(batch, kept):
                open_[w.source].logits[w.index] = rows
        for i in sorted({w.source for w in pool}):
            if len(open_[i].logits) == open_[i].count:
                finish(i)
        pool.clear()

    def ready() -> Iterator[Transcript]:
        nonlocal next_out
        while next_out in done:
            bar.update(1)
            yield done.pop(next_out)
            next_out += 1

    for item in loader:
        if isinstance(item, _Failure):
            logger.warning("skipped source %d: %s", item.source, item.error)
            done[item.source] = Transcript("", 0.0, None, item.error)
        else:
            rec = open_.setdefault(item.source, _Recording(item.count))
            if item.index == item.count - 1:
                rec.samples = item.index * plan.hop_samples + item.samples.numel()
            pool.append(item)
            if len(pool) >= pool_size:
                run_pool()
        yield from ready()
    run_pool()
    yield from ready()
    bar.close()


def transcribe(
    recognizer: SpeechRecognizer,
    sources: Sequence[AudioSource],
    batch_size: int = 8,
    sample_rate: int | None = None,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    progress: bool = False,
    decoding: Any = None,
) -> list[str]:
    """Transcribes each source (path, bytes, or array with `sample_rate`); returns one text each.

    See `iter_transcripts` for the pipeline and the arguments.
    """
    return [
        t.text
        for t in iter_transcripts(
            recognizer,
            sources,
            batch_size=batch_size,
            sample_rate=sample_rate,
            chunk_seconds=chunk_seconds,
            decoding=decoding,
            progress=progress,
        )
    ]
