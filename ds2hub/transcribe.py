"""Transcription of files and arrays of any length: decode, split long audio, batch, stitch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ds2hub.audio import SAMPLE_RATE, AudioSource, load_audio
from ds2hub.data.dataset import collate_features
from ds2hub.decoding import BeamSearchConfig

if TYPE_CHECKING:
    from ds2hub.hub import SpeechRecognizer


def split_long_audio(
    waveform: torch.Tensor, chunk_seconds: float = 20.0, search_seconds: float = 3.0
) -> list[torch.Tensor]:
    """Splits 16 kHz audio into pieces of at most `chunk_seconds`, cutting each at the quietest
    20 ms within the last `search_seconds` of the window, so cuts fall between words.

    A bidirectional model sees a whole utterance at once; chunking bounds memory and keeps
    utterances near the lengths it was trained on.
    """
    max_len = int(chunk_seconds * SAMPLE_RATE)
    frame = SAMPLE_RATE // 50  # 20 ms
    pieces, start, total = [], 0, waveform.numel()
    while total - start > max_len:
        lo = start + max_len - int(search_seconds * SAMPLE_RATE)
        window = waveform[lo : start + max_len]
        n = window.numel() // frame
        energy = window[: n * frame].view(n, frame).pow(2).mean(dim=1)  # (n,)
        cut = lo + int(energy.argmin()) * frame + frame // 2
        pieces.append(waveform[start:cut])
        start = cut
    pieces.append(waveform[start:])
    return pieces


@torch.inference_mode()
def transcribe(
    recognizer: SpeechRecognizer,
    sources: Sequence[AudioSource],
    batch_size: int = 8,
    sample_rate: int | None = None,
    chunk_seconds: float = 20.0,
    progress: bool = False,
    beam_search: BeamSearchConfig | None = None,
) -> list[str]:
    """Transcribes each source (path, bytes, or array with `sample_rate`); returns one text each.

    Greedy decoding unless `beam_search` is given (then the tokenizer's lexicon and word LM).
    """
    tokenizer = recognizer.tokenizer
    decode = recognizer.text_decoder(beam_search)
    device = next(recognizer.parameters()).device
    chunks: list[tuple[int, torch.Tensor]] = []  # (source index, features (F, T))
    iterator = sources
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(sources, desc="decoding audio", unit="file")
    for i, source in enumerate(iterator):
        for piece in split_long_audio(load_audio(source, sample_rate), chunk_seconds):
            if piece.numel() >= recognizer.frontend.config.n_fft:
                chunks.append((i, recognizer.frontend(piece)))
    # Longest first, so batches hold similar lengths and little padding.
    order = sorted(range(len(chunks)), key=lambda k: -chunks[k][1].size(1))
    texts: list[list[str]] = [[] for _ in range(len(chunks))]
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="transcribing", unit="batch")
    for b in batches:
        idx = order[b : b + batch_size]
        features, lengths = collate_features([chunks[k][1] for k in idx])
        logits, out_lengths = recognizer.model(features.to(device), lengths.to(device))
        for k, text in zip(idx, decode(logits, out_lengths)):
            texts[k] = text
    stitched: list[list[str]] = [[] for _ in sources]
    for (i, _), text in zip(chunks, texts):
        if text:
            stitched[i].append(text)
    return [tokenizer.word_joiner.join(parts) for parts in stitched]
