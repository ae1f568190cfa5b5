"""Streaming recognition: chunked logits and transcripts equal the whole-utterance pass."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from standins import STREAMING_ARCH

from ds2hub.audio import load_audio
from ds2hub.cli.main import run_cli
from ds2hub.decoding import DecoderConfig, greedy_decode
from ds2hub.features import frame_statistics
from ds2hub.inference.recognizer import SpeechRecognizer, from_pretrained
from ds2hub.inference.streaming import finish_batch, step_batch
from ds2hub.model.streaming import StreamingError
from ds2hub.tokenizers import CharTokenizer

RATE = 16_000


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


def make_recognizer(
    rnn_type: str = "gru", seed: int = 0, tokenizer=None, **arch
) -> SpeechRecognizer:
    torch.manual_seed(seed)
    rec = SpeechRecognizer({**STREAMING_ARCH, "rnn_type": rnn_type, **arch}, {"normalization": "global"},
                           tokenizer or CharTokenizer())  # fmt: skip
    rec.frontend.set_statistics(*frame_statistics([rec.frontend.unnormalized(_audio(1.0, 9))]))
    _randomise_batch_norm(rec, seed)
    return rec.eval()


def whole_logits(rec: SpeechRecognizer, audio: torch.Tensor) -> torch.Tensor:
    features = rec.frontend(audio)
    logits, lengths = rec.model(features[None], torch.tensor([features.size(1)]))
    return logits[0, : int(lengths[0])]


def stream_logits(rec, audio, sizes):
    session = rec.stream(keep_logits=True)
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


@pytest.mark.parametrize(
    "rnn_type, placement", [("lstm", "input"), ("rnn", "input"), ("rnn", "projection")]
)
def test_every_recurrent_type_streams(rnn_type, placement):
    rec = make_recognizer(rnn_type, lookahead=0, batch_norm_placement=placement)
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


def test_a_time_only_1d_conv_front_streams():
    rec = make_recognizer(conv_channels=[6, 4], conv_kernel_freq=[0, 0], conv_stride_freq=[1, 1])
    audio = _audio(1.2)
    got, _ = stream_logits(rec, audio, [700] * 20)
    torch.testing.assert_close(got, whole_logits(rec, audio), atol=1e-4, rtol=1e-4)


def test_partials_are_the_greedy_transcript_of_the_logits_so_far():
    rec = make_recognizer()
    audio = _audio(1.5)
    session = rec.stream(keep_logits=True)
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
    sessions = [rec.stream(keep_logits=True) for _ in audios]
    alone = [rec.stream() for _ in audios]  # greedy: keeps its best path, not its logits
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
    for s, audio in zip(sessions, audios):
        torch.testing.assert_close(s.logits, whole_logits(rec, audio), atol=1e-4, rtol=1e-4)


def three_word_search(folder: Path) -> DecoderConfig:
    """A lexicon beam search that can only write one, two and three."""
    (folder / "words.txt").write_text("one\ntwo\nthree\n")
    return DecoderConfig(lexicon=str(folder / "words.txt"), beam_size=8)


def test_a_greedy_stream_keeps_no_logits_and_a_beam_search_stream_decodes_them_all(tmp_path):
    """A greedily decoded stream holds its best path only (an hour of audio would otherwise keep
    180,000 frames of logits); one whose model carries a beam search keeps them for `finish`."""
    rec = make_recognizer()
    audio = _audio(1.7)
    session = rec.stream()
    for start in range(0, audio.numel(), 1600):
        session.accept(audio[start : start + 1600])
    with pytest.raises(StreamingError, match="keeps no logits"):
        _ = session.logits
    ref = whole_logits(rec, audio)
    greedy = rec.text_decoder()(ref[None], torch.tensor([len(ref)]))[0]
    rec.decoding = three_word_search(tmp_path)
    # The session finishes with the decoding of when it opened; a later one does not reach it.
    assert session.finish() == greedy

    with pytest.raises(ValueError, match="beam search"):
        rec.stream(keep_logits=False)
    session, search = rec.stream(), rec.text_decoder()
    for start in range(0, audio.numel(), 1600):
        session.accept(audio[start : start + 1600])
    rec.decoding = None  # again: the open session keeps its beam search
    final = session.finish()
    torch.testing.assert_close(session.logits, ref, atol=1e-4, rtol=1e-4)
    beam = search(ref.log_softmax(-1)[None], torch.tensor([len(ref)]))[0]
    assert final == beam and set(final.split()) <= {"one", "two", "three"}
    assert beam != greedy


def test_a_pinyin_stream_finishes_in_characters_as_the_greedy_decoder_does(tmp_path):
    """Partials are the model's pinyin; the final text goes through the same word-list search as
    the whole-utterance greedy decoder (from the best path, not the kept logits)."""
    from ds2hub.tokenizers import PinyinTokenizer

    words = tmp_path / "words.txt"
    words.write_text("学生 100\n学 50\n生 40\n是 30\n", encoding="utf-8")
    rec = make_recognizer(tokenizer=PinyinTokenizer(lexicon=str(words), lexicon_min_count=1))
    for seed in range(3):
        audio = _audio(1.2, seed=seed)
        session = rec.stream(keep_logits=True)
        partial, so_far = session.accept(audio), session.logits
        ids = greedy_decode(so_far[None], torch.tensor([len(so_far)]))[0]
        assert partial == rec.tokenizer.decode(ids)  # pinyin so far
        ref = whole_logits(rec, audio)
        final = session.finish()
        assert final == rec.text_decoder()(ref[None], torch.tensor([len(ref)]))[0]
        pinyin = rec.tokenizer.decode(greedy_decode(ref[None], torch.tensor([len(ref)]))[0])
        assert pinyin.isascii() and final != pinyin  # characters (or the unknown mark ⁇)


@pytest.mark.parametrize("where", ["network", "tokenizer"])
def test_a_failed_batch_is_retried_one_by_one_without_replaying_audio(monkeypatch, where):
    """The server's dispatcher retries a failed batch item by item with the same chunks; a step
    that died after framing the audio and moving the states (or a tokenizer that raised while
    writing the partials) must not frame it twice."""
    import ds2hub.inference.streaming as streaming
    from ds2hub.serving.dispatcher import BatchDispatcher

    rec = make_recognizer()
    audios = [_audio(0.9, seed=i) for i in range(2)]
    sessions = [rec.stream(keep_logits=True) for _ in audios]
    failed = []
    if where == "network":
        real = streaming.stream_step

        def out_of_memory_once(model, features, *args, **kwargs):
            out = real(model, features, *args, **kwargs)  # the step ran, then dies
            if features.size(0) > 1 and not failed:
                failed.append(features.size(0))
                raise RuntimeError("out of memory")
            return out

        monkeypatch.setattr(streaming, "stream_step", out_of_memory_once)
    else:
        decode = rec.tokenizer.decode

        def fails_on_the_second_session(ids):
            if len(failed) == 0 and len(decoded) == 1:  # the first session's text is done
                failed.append(2)
                raise RuntimeError("the tokenizer failed")
            decoded.append(ids)
            return decode(ids)

        decoded: list = []
        monkeypatch.setattr(rec.tokenizer, "decode", fails_on_the_second_session)

    def steps(payloads):  # as the server's engine runs them
        with torch.inference_mode():
            return step_batch(rec, [s for s, _ in payloads], [c for _, c in payloads])

    with BatchDispatcher({"step": steps}, max_batch_size=2, max_wait=5.0) as dispatcher:
        for start in range(0, 14400, 4800):
            futures = [dispatcher.submit("step", (s, a[start : start + 4800])) for s, a in
                       zip(sessions, audios)]  # fmt: skip
            [f.result(timeout=60) for f in futures]
    assert failed == [2]  # one batch failed and was retried
    finish_batch(rec, sessions)
    for s, audio in zip(sessions, audios):
        torch.testing.assert_close(s.logits, whole_logits(rec, audio), atol=1e-4, rtol=1e-4)


def test_a_failed_finish_is_retried_one_by_one(tmp_path, monkeypatch):
    """A batch of finishes whose decoding fails after the last step ran (a beam search error):
    the dispatcher's one-by-one retry gives every session its final transcript."""
    from ds2hub.serving.dispatcher import BatchDispatcher

    rec = make_recognizer()
    audios = [_audio(0.8, seed=i) for i in range(2)]
    greedy = rec.stream()
    rec.decoding = three_word_search(tmp_path)
    beam = rec.stream()
    for s, audio in zip((greedy, beam), audios):
        s.accept(audio)
    search, failed = rec.text_decoder(), []

    def fails_once(log_probs, lengths):
        if not failed:
            failed.append(True)
            raise RuntimeError("the beam search failed")
        return search(log_probs, lengths)

    monkeypatch.setattr(rec, "text_decoder", lambda decoding=None: fails_once)

    def finishes(sessions):
        with torch.inference_mode():
            return finish_batch(rec, sessions)

    with BatchDispatcher({"finish": finishes}, max_batch_size=2, max_wait=5.0) as dispatcher:
        futures = [dispatcher.submit("finish", s) for s in (greedy, beam)]
        finals = [f.result(timeout=60) for f in futures]
    refs = [whole_logits(rec, audio) for audio in audios]
    assert failed and finals == [
        rec.best_path_text()(greedy_decode(refs[0][None], torch.tensor([len(refs[0])]))[0]),
        search(refs[1][None], torch.tensor([len(refs[1])]))[0],
    ]


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
    rec = SpeechRecognizer({**STREAMING_ARCH, "bidirectional": True, "lookahead": 0},
                           {"normalization": "global"}, CharTokenizer())  # fmt: skip
    with pytest.raises(StreamingError, match="bidirectional"):
        rec.stream()


def test_utterance_normalised_models_refuse_to_stream():
    rec = SpeechRecognizer(STREAMING_ARCH, {}, CharTokenizer())  # the default front end looks ahead
    with pytest.raises(StreamingError, match="normalization: global"):
        rec.stream()


def test_a_model_in_training_mode_refuses_to_stream():
    rec = make_recognizer().train()
    with pytest.raises(StreamingError, match="eval"):
        rec.stream()


# --- a briefly trained model: the real training path with the causal front end ------------------
CONF = Path(__file__).parent / "conf" / "digits_tiny.yaml"
STREAMING_OPTIONS = [
    "--model.arch.bidirectional", "false",
    "--model.arch.lookahead", "3",
    "--data.features.normalization", "global",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained_checkpoint(tiny_digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    cli = run_cli(
        [
            "fit", "--config", str(CONF), "--data.path", str(tiny_digits),
            "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.save_dir", str(root), *STREAMING_OPTIONS,
        ]
    )  # fmt: skip
    return cli, Path(cli.trainer.checkpoint_callback.last_model_path)


def test_training_estimates_feature_statistics_and_normalises_the_data_with_them(
    trained_checkpoint, tiny_digits
):
    cli, ckpt = trained_checkpoint
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert int(state["frontend.count"]) > 1000  # frames of the 16 training utterances
    # The DataModule computed the training features with the same statistics.
    dm_front = cli.datamodule.frontend
    torch.testing.assert_close(dm_front.mean, state["frontend.mean"])
    torch.testing.assert_close(dm_front.std, state["frontend.std"])
    features = torch.cat([cli.datamodule.datasets["train"][i]["features"] for i in range(16)], 1)
    assert features.mean(dim=1).abs().max() < 1e-3  # estimated on exactly these utterances
    assert features.std(dim=1).mean() == pytest.approx(1.0, abs=0.05)


def test_a_trained_checkpoint_streams_as_it_transcribes_whole(trained_checkpoint, tiny_digits):
    _, ckpt = trained_checkpoint
    rec = from_pretrained(ckpt)
    assert rec.features.normalization == "global" and rec.frontend.has_statistics
    audio = load_audio(next((tiny_digits / "test").glob("*.opus")))
    ref = whole_logits(rec, audio)
    for chunk_ms in (10, 160, 2000):
        size = RATE * chunk_ms // 1000
        got, final = stream_logits(rec, audio, [size] * (audio.numel() // size))
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        assert final == rec.transcribe(audio.numpy(), sample_rate=RATE)


def test_feature_statistics_travel_through_hub_folders(trained_checkpoint, tmp_path):
    _, ckpt = trained_checkpoint
    rec = from_pretrained(ckpt)
    rec.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["features"]["normalization"] == "global"
    again = from_pretrained(tmp_path / "model")  # strict load
    torch.testing.assert_close(again.frontend.mean, rec.frontend.mean)
    torch.testing.assert_close(again.frontend.std, rec.frontend.std)
    audio = _audio(0.8)
    torch.testing.assert_close(whole_logits(again, audio), whole_logits(rec, audio))


def test_validating_a_checkpoint_uses_its_statistics(trained_checkpoint, tiny_digits, tmp_path):
    fit_cli, ckpt = trained_checkpoint
    cli = run_cli(
        [
            "validate", "--config", str(CONF), "--data.path", str(tiny_digits),
            "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger.init_args.save_dir", str(tmp_path), "--ckpt_path", str(ckpt),
            *STREAMING_OPTIONS,
        ]
    )  # fmt: skip
    torch.testing.assert_close(cli.datamodule.frontend.mean, fit_cli.datamodule.frontend.mean)
    assert int(cli.datamodule.frontend.count) == int(fit_cli.datamodule.frontend.count)
