"""Streaming recognition: chunked logits and transcripts equal the whole-utterance pass."""

import random

import numpy as np
import pytest
import torch

from ds2hub.features import frame_statistics
from ds2hub.hub import SpeechRecognizer
from ds2hub.model.streaming import StreamingError
from ds2hub.streaming import finish_batch, step_batch
from ds2hub.tokenizers import CharTokenizer

RATE = 16_000
ARCH = dict(
    conv_channels=[4, 4],
    conv_kernel_freq=[21, 11],
    conv_kernel_time=[11, 5],
    conv_stride_time=[2, 1],
    rnn_layers=2,
    rnn_hidden=24,
    bidirectional=False,
    lookahead=5,
)


def _randomise_batch_norm(module: torch.nn.Module, seed: int = 0) -> None:
    """Running statistics and affine maps far from identity, so a misaligned frame shows."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def _audio(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * torch.sin(2 * torch.pi * (300 + 200 * t) * t)
    return tone + 0.05 * torch.randn(t.numel(), generator=g)


def make_recognizer(rnn_type: str = "gru", seed: int = 0, **arch) -> SpeechRecognizer:
    torch.manual_seed(seed)
    rec = SpeechRecognizer({**ARCH, "rnn_type": rnn_type, **arch}, {"normalization": "global"},
                           CharTokenizer())  # fmt: skip
    rec.frontend.set_statistics(*frame_statistics([rec.frontend.unnormalized(_audio(1.0, 9))]))
    _randomise_batch_norm(rec, seed)
    return rec.eval()


def whole_logits(rec: SpeechRecognizer, audio: torch.Tensor) -> torch.Tensor:
    features = rec.frontend(audio)
    logits, lengths = rec.model(features[None], torch.tensor([features.size(1)]))
    return logits[0, : int(lengths[0])]


def stream_logits(rec, audio, sizes):
    session = rec.stream()
    pos = 0
    for size in sizes:
        session.accept(audio[pos : pos + size].numpy())
        pos += size
    session.accept(audio[pos:].numpy())
    final = session.finish()
    return session.logits, final


@pytest.mark.parametrize("chunk_ms", [10, 100, 160, 1000, 2000, "random"])
def test_streamed_logits_and_transcript_equal_the_whole_pass(chunk_ms):
    rec = make_recognizer()
    audio = _audio(2.3)
    if chunk_ms == "random":
        rng = random.Random(0)
        sizes = [rng.choice([0, 1, 3, 159, 160, 161, 777, 4000]) for _ in range(40)]
    else:
        sizes = [RATE * chunk_ms // 1000] * (audio.numel() // (RATE * chunk_ms // 1000))
    ref = whole_logits(rec, audio)
    got, final = stream_logits(rec, audio, sizes)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    expected = rec.text_decoder()(ref[None], torch.tensor([ref.size(0)]))[0]
    assert final == expected


@pytest.mark.parametrize("rnn_type", ["lstm", "rnn"])
def test_every_recurrent_type_streams(rnn_type):
    rec = make_recognizer(rnn_type, lookahead=0)
    audio = _audio(1.1)
    got, _ = stream_logits(rec, audio, [1600] * 10)
    torch.testing.assert_close(got, whole_logits(rec, audio), atol=1e-4, rtol=1e-4)


def test_three_conv_layers_with_strides_and_an_fc_layer_stream():
    rec = make_recognizer(
        conv_channels=[3, 3, 3],
        conv_kernel_freq=[21, 11, 11],
        conv_kernel_time=[7, 5, 3],
        conv_stride_freq=[2, 2, 2],
        conv_stride_time=[2, 2, 1],
        fc_hidden=16,
    )
    audio = _audio(1.37)
    got, _ = stream_logits(rec, audio, [333] * 60)
    torch.testing.assert_close(got, whole_logits(rec, audio), atol=1e-4, rtol=1e-4)


def test_partials_are_the_greedy_transcript_of_the_logits_so_far():
    rec = make_recognizer()
    audio = _audio(1.5)
    session = rec.stream()
    decode = rec.text_decoder()
    for start in range(0, audio.numel(), 2560):
        partial = session.accept(audio[start : start + 2560])
        logits = session.logits
        assert partial == decode(logits[None], torch.tensor([logits.size(0)]))[0]
        assert session.text == partial


def test_a_batched_step_equals_separate_sessions():
    rec = make_recognizer()
    audios = [_audio(s, seed=i) for i, s in enumerate((0.7, 1.3, 0.25))]
    rng = random.Random(1)
    sessions = [rec.stream() for _ in audios]
    alone = [rec.stream() for _ in audios]
    pos = [0, 0, 0]
    for _ in range(12):
        chunks = []
        for b, audio in enumerate(audios):
            size = rng.choice([0, 1, 160, 1000, 2500])
            chunks.append(audio[pos[b] : pos[b] + size])
            pos[b] += size
        partials = step_batch(rec, sessions, chunks)
        assert partials == [s.accept(c) for s, c in zip(alone, chunks)]
    chunks = [audio[p:] for audio, p in zip(audios, pos)]
    step_batch(rec, sessions, chunks)
    for s, c in zip(alone, chunks):
        s.accept(c)
    finals = finish_batch(rec, sessions)
    assert finals == [s.finish() for s in alone]
    for s, a, audio in zip(sessions, alone, audios):
        torch.testing.assert_close(s.logits, a.logits)
        torch.testing.assert_close(s.logits, whole_logits(rec, audio), atol=1e-4, rtol=1e-4)


def test_tiny_and_empty_streams():
    rec = make_recognizer()
    session = rec.stream()
    assert session.accept(np.zeros(0, dtype=np.float32)) == ""
    assert session.accept(np.zeros(1, dtype=np.float32)) == ""
    assert session.finish() == ""  # too short for one window, as the whole pass
    assert rec.stream().finish() == ""
    short = _audio(0.012)  # 192 samples: one reflected window
    got, _ = stream_logits(rec, short, [1] * 50)
    torch.testing.assert_close(got, whole_logits(rec, short), atol=1e-4, rtol=1e-4)


def test_a_finished_session_refuses_more_audio():
    rec = make_recognizer()
    session = rec.stream()
    session.accept(_audio(0.3))
    text = session.finish()
    assert session.text == text
    with pytest.raises(StreamingError, match="finished"):
        session.accept(_audio(0.1))
    with pytest.raises(StreamingError, match="finished"):
        session.finish()


def test_bad_chunks_are_refused_clearly():
    session = make_recognizer().stream()
    with pytest.raises(ValueError, match="1-D"):
        session.accept(np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="float"):
        session.accept(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError, match="NaN"):
        session.accept(np.full(10, np.nan, dtype=np.float32))
    assert session.accept(np.zeros(100, dtype=np.float32)) == ""  # the session still works


def test_bidirectional_models_refuse_to_stream():
    rec = SpeechRecognizer({**ARCH, "bidirectional": True, "lookahead": 0},
                           {"normalization": "global"}, CharTokenizer())  # fmt: skip
    with pytest.raises(StreamingError, match="bidirectional"):
        rec.stream()


def test_utterance_normalised_models_refuse_to_stream():
    rec = SpeechRecognizer(ARCH, {}, CharTokenizer())  # the default front end looks ahead
    with pytest.raises(StreamingError, match="normalization: global"):
        rec.stream()


def test_a_model_in_training_mode_refuses_to_stream():
    rec = make_recognizer().train()
    with pytest.raises(StreamingError, match="eval"):
        rec.stream()
