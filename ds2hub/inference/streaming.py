"""Streaming recognition: audio in chunks of any size, partial transcripts as it arrives
(`recognizer.stream()`; usage: docs/guide/streaming-and-serving.md).

A session keeps everything that crosses a chunk boundary: the samples of an unfinished STFT
window, the feature frames short of a whole output frame (the model's time stride), and the state
of the model's incremental pass (`ds2hub.model.streaming.stream_step`). Its logits equal the
whole-utterance forward pass of the same audio, so the final transcript does too. `step_batch`
advances many sessions in one batched forward pass (Batch Dispatch, Deep Speech 2 section 7.1).
Only forward-only models with a causal front end (`features.normalization: global`) stream.

Memory: a greedily decoded stream keeps only its best path; a beam search needs every frame's
logits at `finish` (4 bytes per output class and frame, bounded on the server by
`ServeConfig.max_stream_seconds`).
"""

from __future__ import annotations

import copy
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ds2hub.decoding.config import GREEDY
from ds2hub.model.deepspeech2 import DeepSpeech2
from ds2hub.model.streaming import (
    UNKNOWN_LENGTH,
    StreamingError,
    batch_dims,
    check_streamable,
    flush_frames,
    initial_state,
    stream_step,
)

if TYPE_CHECKING:
    from ds2hub.inference.recognizer import SpeechRecognizer


def check_stream_ready(recognizer: SpeechRecognizer) -> None:
    """Raises `StreamingError` unless `recognizer` can stream exactly."""
    check_streamable(recognizer.model)
    features = recognizer.features
    if not features.causal:
        raise StreamingError(
            "this model's front end normalises each utterance with statistics of the whole "
            f"utterance (features.normalization: {features.normalization}), so a frame's features "
            "depend on audio that has not arrived yet; streaming needs a model trained with "
            "features.normalization: global"
        )
    if not recognizer.frontend.has_statistics:
        raise StreamingError(
            "this model's front end has no feature statistics (features.normalization: global "
            "estimates them when training starts); it was never trained"
        )


class _SampleFramer:
    """Cuts a sample stream into the STFT windows of the whole-utterance front end.

    The whole pass centres its windows and reflects the signal at both ends
    (`ds2hub.features.power_spectrogram`): the left reflection needs the first `n_fft // 2 + 1`
    samples, the right one the last, so the first frame waits for them and `finish` builds the
    right end.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        self.n_fft, self.hop, self.pad = n_fft, hop, n_fft // 2
        self.head = torch.zeros(0)  # samples before the left reflection can be built
        self.buffer: torch.Tensor | None = None  # padded signal from the next window's start
        self.tail = torch.zeros(0)  # the last pad + 1 samples, for the right reflection

    def push(self, samples: torch.Tensor, final: bool = False) -> torch.Tensor | None:
        """Adds samples; returns the padded signal (L,) whose windows are now complete (their
        count is 1 + (L - n_fft) // hop), or None if none is."""
        self.tail = torch.cat([self.tail, samples])[-(self.pad + 1) :]
        if self.buffer is None:
            self.head = torch.cat([self.head, samples])
            if self.head.numel() <= self.pad:
                return None  # too short to reflect (the whole pass refuses such audio too)
            left = self.head[1 : self.pad + 1].flip(0)
            self.buffer, self.head = torch.cat([left, self.head]), torch.zeros(0)
        else:
            self.buffer = torch.cat([self.buffer, samples])
        if final:
            right = self.tail[:-1].flip(0)  # reflection without repeating the last sample
            self.buffer = torch.cat([self.buffer, right])
        if self.buffer.numel() < self.n_fft:
            return None
        n = 1 + (self.buffer.numel() - self.n_fft) // self.hop
        ready = self.buffer[: (n - 1) * self.hop + self.n_fft]
        self.buffer = self.buffer[n * self.hop :]
        return ready


def _as_samples(chunk: Any) -> torch.Tensor:
    """A 1-D float chunk (numpy array, tensor or sequence) as a float32 CPU tensor."""
    tensor = torch.as_tensor(np.asarray(chunk) if not isinstance(chunk, torch.Tensor) else chunk)
    if tensor.dim() != 1:
        raise ValueError(
            f"stream chunks must be 1-D sample arrays, got shape {tuple(tensor.shape)}"
        )
    if not tensor.is_floating_point():
        raise ValueError(f"stream chunks must hold float samples, got {tensor.dtype}")
    tensor = tensor.detach().to("cpu", torch.float32)
    if not torch.isfinite(tensor).all():
        raise ValueError("stream chunk holds NaN or infinite samples")
    return tensor


@dataclass(frozen=True)
class _NetworkStream:
    """One stream's side of the incremental pass: `stream_step`'s states (a batch of one), the
    (F, r) feature frames short of a whole time stride that wait for the next chunk, and the
    frames fed so far. A step makes a new one."""

    state: list[torch.Tensor]
    pending: torch.Tensor
    frames_in: int = 0
    done: bool = False  # the final step ran


class StreamSession:
    """One audio stream being transcribed (see the module docstring). Not thread-safe: a server
    feeds a session from one task at a time."""

    def __init__(self, recognizer: SpeechRecognizer, keep_logits: bool | None = None) -> None:
        """Args:
        recognizer: a streamable model (`check_stream_ready`).
        keep_logits: keep every frame's logits (the `logits` property). None: only when the
            recognizer's default decoder is a beam search, which needs them at `finish`.
        The session finishes with the recognizer's default decoding as it is when the session
        opens (`recognizer.decoding`; changing it later does not reach open sessions).
        """
        check_stream_ready(recognizer)
        self.recognizer = recognizer
        self._decoding = recognizer.decoding
        self._greedy = self._decoding is None or self._decoding == GREEDY
        if keep_logits is False and not self._greedy:
            raise ValueError(
                "this model decodes with a beam search, which needs every frame's logits when "
                "the stream finishes; keep_logits=False is for greedily decoded models"
            )
        self._keep_logits = not self._greedy if keep_logits is None else keep_logits
        config = recognizer.features
        self._framer = _SampleFramer(config.n_fft, config.hop_length)
        state = initial_state(recognizer.model)
        self._net = _NetworkStream(state, state[0].new_zeros(config.n_bins, 0))
        # (n, V) logits per step, on the CPU
        self._logits = [torch.zeros(0, recognizer.tokenizer.vocab_size)]
        # Greedy best path so far, repeats and blanks collapsed: 4 bytes a token, not a list's 8+.
        self._ids = array("I")
        self._last = -1  # best token of the last frame (a repeat across chunks is merged)
        self._text = ""
        self._final: str | None = None

    @property
    def text(self) -> str:
        """The current transcript: partial (greedy) while open, final after `finish`."""
        return self._final if self._final is not None else self._text

    @property
    def finished(self) -> bool:
        return self._final is not None

    @property
    def logits(self) -> torch.Tensor:
        """(T', V) logits of every output frame emitted so far (sessions that keep them)."""
        if not self._keep_logits:
            raise StreamingError(
                "this session keeps no logits (its greedy decoding needs none); open it with "
                "recognizer.stream(keep_logits=True) to read them"
            )
        return torch.cat(self._logits)

    def accept(self, samples: Any) -> str:
        """Feeds a 1-D float chunk (any size, even empty) at the model's sample rate; returns the
        partial transcript so far."""
        return step_batch(self.recognizer, [self], [samples])[0]

    def finish(self) -> str:
        """Flushes the lookahead and the last frames; returns the final transcript. The session
        then refuses more audio."""
        return finish_batch(self.recognizer, [self])[0]

    # --- used by step_batch ---------------------------------------------------------------------
    def _frames(self, samples: torch.Tensor, final: bool) -> torch.Tensor:
        padded = self._framer.push(samples, final)
        if padded is None:
            return torch.zeros(self.recognizer.features.n_bins, 0)
        with torch.no_grad():
            frontend = self.recognizer.frontend
            return frontend.frames(padded.to(frontend.window.device))

    def _update(self, net: _NetworkStream, logits: torch.Tensor) -> Callable[[], None]:
        """Computes what a step's new (n, V) output frames change without changing the session
        (so that a failure anywhere in a batch leaves every session of it as it was); returns the
        function that commits it, which cannot fail."""
        logits = logits.detach().float().cpu()
        new, last, blank = [], self._last, self.recognizer.tokenizer.blank_id
        for token in logits.argmax(dim=-1).tolist():
            if token != last and token != blank:
                new.append(token)
            last = token
        text = self.recognizer.tokenizer.decode(self._ids.tolist() + new) if new else self._text

        def commit() -> None:
            self._net, self._last, self._text = net, last, text
            self._ids.extend(new)
            if self._keep_logits and len(logits):
                self._logits.append(logits)

        return commit


def _check_batch(recognizer: SpeechRecognizer, sessions: Sequence[StreamSession]) -> None:
    if len({id(s) for s in sessions}) != len(sessions):
        raise ValueError("a session appears twice in one batch")
    for s in sessions:
        if s.recognizer is not recognizer:
            raise ValueError("a session belongs to another recognizer")
        if s.finished:
            raise StreamingError("this stream has finished; start a new one with .stream()")


def _network_step(
    model: DeepSpeech2, streams: Sequence[_NetworkStream], frames: list[torch.Tensor], final: bool
) -> tuple[list[torch.Tensor], list[_NetworkStream]]:
    """Feeds each stream its new (F, n_b) feature frames in one batched `stream_step`; frames
    short of a whole time stride wait for the next chunk, and the final step flushes them.

    Returns:
        per stream, its new (n_b', V) logits and its next `_NetworkStream` (the given ones are
        left as they are, so a failed batch can be retried).
    """
    stride = model.config.time_stride
    chunks = [torch.cat([n.pending, new], dim=1) for n, new in zip(streams, frames)]  # (F, r + n_b)
    totals = [n.frames_in + c.size(1) if final else UNKNOWN_LENGTH for n, c in zip(streams, chunks)]
    if final:  # zeros that complete the last stride (counts round down), then `flush_frames` more
        chunks = [F.pad(c, (0, stride - 1 + flush_frames(model))) for c in chunks]
    counts = [c.size(1) // stride * stride for c in chunks]
    longest = max(counts)
    if longest == 0:  # no whole stride yet: nothing to run
        nexts = [_NetworkStream(n.state, c, n.frames_in) for n, c in zip(streams, chunks)]
        return [c.new_zeros(0, model.vocab_size) for c in chunks], nexts
    features = torch.stack([F.pad(c[:, :n], (0, longest - n)) for c, n in zip(chunks, counts)])
    device = features.device  # (B, F, K)
    dims = batch_dims(model)
    states = [torch.cat([n.state[i] for n in streams], dim=d) for i, d in enumerate(dims)]
    logits, _, valid, states = stream_step(
        model,
        features,
        torch.tensor([n.frames_in for n in streams], device=device),
        torch.tensor(totals, device=device),
        states,
        None if min(counts) == longest else torch.tensor(counts, device=device),
    )
    nexts = [
        _NetworkStream(
            [state.narrow(d, b, 1) for state, d in zip(states, dims)],
            chunks[b][:, counts[b] :],
            streams[b].frames_in + counts[b],
            final,
        )
        for b in range(len(streams))
    ]
    return [logits[b][valid[b]] for b in range(len(streams))], nexts


def _advance(
    recognizer: SpeechRecognizer,
    sessions: Sequence[StreamSession],
    chunks: Sequence[Any],
    final: bool,
) -> None:
    if len(sessions) != len(chunks):
        raise ValueError(f"{len(sessions)} sessions but {len(chunks)} chunks")
    _check_batch(recognizer, sessions)
    samples = [_as_samples(c) for c in chunks]
    model = recognizer.model
    check_streamable(model)  # still in eval mode
    device = next(model.parameters()).device
    # A failed step (out of memory in a large batch, a tokenizer that raises, say) leaves every
    # session as it was: the server's dispatcher then retries each one alone with the same chunk,
    # which must not be framed twice. A framer rebinds its tensors, never writes into them, so a
    # shallow copy keeps it; the rest of a session changes only once every update is computed.
    saved = [copy.copy(s._framer) for s in sessions]
    try:
        frames = [s._frames(x, final).to(device) for s, x in zip(sessions, samples)]
        with torch.no_grad():
            logits, nets = _network_step(model, [s._net for s in sessions], frames, final)
        commits = [s._update(net, out) for s, net, out in zip(sessions, nets, logits)]
    except BaseException:
        for s, framer in zip(sessions, saved):
            s._framer = framer
        raise
    for commit in commits:
        commit()


def step_batch(
    recognizer: SpeechRecognizer, sessions: Sequence[StreamSession], chunks: Sequence[Any]
) -> list[str]:
    """Feeds one new chunk to each of several sessions in ONE batched forward pass (chunks of
    different lengths) and returns each session's partial transcript."""
    if not sessions:
        return []
    _advance(recognizer, sessions, chunks, final=False)
    return [s.text for s in sessions]


def finish_batch(recognizer: SpeechRecognizer, sessions: Sequence[StreamSession]) -> list[str]:
    """Finishes several sessions in one batched pass; returns their final transcripts, each
    decoded with its session's decoding (greedy ones from the best path kept as they went).

    Retrying is safe: the decoders (an LM, a pinyin model's word list) are built before any
    session moves, and a session whose last step ran but whose decoding failed is only decoded
    again on the next call."""
    if not sessions:
        return []
    _check_batch(recognizer, sessions)
    to_text = recognizer.best_path_text() if any(s._greedy for s in sessions) else None
    decoders = {id(s): recognizer.text_decoder(s._decoding) for s in sessions if not s._greedy}
    pending = [s for s in sessions if not s._net.done]
    if pending:
        _advance(recognizer, pending, [torch.zeros(0)] * len(pending), final=True)

    def final_text(s: StreamSession) -> str:
        if s._greedy:
            return to_text(s._ids.tolist()) if s._ids else ""
        logits = s.logits  # (T', V)
        if len(logits) == 0:
            return ""
        return decoders[id(s)](logits[None], torch.tensor([len(logits)]))[0]

    texts = [final_text(s) for s in sessions]
    for s, text in zip(sessions, texts):  # all or none: a failed batch can be retried whole
        s._final = text
    return texts


__all__ = ["StreamSession", "StreamingError", "check_stream_ready", "finish_batch", "step_batch"]
