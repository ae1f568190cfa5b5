"""`transcribe`: the lazy pipeline, overlapping windows stitched exactly, input shapes and dtypes,
word timestamps, devices, the console command, and imports that stay light."""

from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from ds2hub.audio import load_audio
from ds2hub.cli.main import main
from ds2hub.decoding.alignment import word_timestamps
from ds2hub.errors import ConfigError
from ds2hub.features import frame_statistics
from ds2hub.inference.recognizer import SpeechRecognizer
from ds2hub.inference.transcribe import MIN_CHUNK_SECONDS, iter_transcripts, plan_windows
from ds2hub.tokenizers import CharTokenizer

DIGITS = Path(__file__).resolve().parents[1] / "recipes" / "digits" / "test"
RATE = 16_000
ARCH = dict(conv_channels=[4, 4], conv_kernel_freq=[21, 11], conv_kernel_time=[11, 5],
            rnn_layers=1, rnn_hidden=16)  # fmt: skip


def _recognizer(**features) -> SpeechRecognizer:
    torch.manual_seed(0)
    rec = SpeechRecognizer(ARCH, features, CharTokenizer())
    with torch.no_grad():
        for m in rec.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return rec.eval()


@functools.cache
def _speech() -> torch.Tensor:
    """20 s of real speech: the shipped digit recordings back to back."""
    waves = [load_audio(p) for p in sorted(DIGITS.glob("*.opus"))]
    wave = torch.cat(waves)
    return wave.repeat(math.ceil(20 * RATE / wave.numel()))[: 20 * RATE]


class LocalNet(nn.Module):
    """A network whose output frame t sees input frames 2t-2 .. 2t+1 only (a stand-in for
    DeepSpeech2 with a known receptive field), so windowed and whole passes must agree exactly
    on every frame the stitching keeps."""

    def __init__(self, bins: int, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.proj = nn.Conv1d(bins, vocab, kernel_size=4, stride=2, padding=2)
        with torch.no_grad():  # blanks and spaces as often as a CTC model emits them
            self.proj.bias[0] += 1.5
            self.proj.bias[1] += 1.0

    def forward(self, features, lengths):
        return self.proj(features)[..., : int(lengths.max() + 1) // 2].transpose(1, 2), (
            lengths + 1
        ) // 2


def _local_recognizer() -> SpeechRecognizer:
    rec = _recognizer(normalization="global")  # fixed statistics: features are local too
    rec.frontend.set_statistics(*frame_statistics([rec.frontend.unnormalized(_speech())]))
    rec.model = LocalNet(rec.features.n_bins, rec.tokenizer.vocab_size).eval()
    return rec


# --- windows --------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_seconds", [1.0, 1.37, 3.0, 4.5, 7.0])
@pytest.mark.parametrize("seconds", [0.7, 9.99, 20.0])
def test_window_logits_stitched_at_the_overlap_midpoints_are_the_whole_recording(
    chunk_seconds, seconds
):
    """Cut a recording's logits as the windows produce them; the kept frames rebuild it exactly."""
    rec = _recognizer()
    plan = plan_windows(rec, chunk_seconds)
    samples = int(seconds * RATE)
    out_frames = lambda n: int(rec.model.output_lengths(torch.tensor([rec.frontend.num_frames(n)])))  # noqa: E731
    whole = torch.randn(out_frames(samples), 5)
    windows = plan.windows(torch.zeros(samples))
    assert sum(w.numel() for w in windows) >= samples and len(windows) == plan.num_windows(samples)
    kept = []
    for k, window in enumerate(windows):
        start = k * plan.hop_frames
        frames = whole[start : start + out_frames(window.numel())]
        assert frames.size(0) == out_frames(window.numel())  # the window's frames are whole's
        kept.append(frames[plan.keep(k, len(windows), frames.size(0))])
    torch.testing.assert_close(torch.cat(kept), whole, rtol=0, atol=0)


def test_windowed_transcripts_and_word_times_equal_the_whole_pass():
    """Real front end and pipeline, a network with a short receptive field: windows of 2.5 s give
    the same words at the same times as one 20 s pass, so no word at a cut is lost."""
    rec = _local_recognizer()
    wave = _speech()
    (whole,) = iter_transcripts(rec, [wave], sample_rate=RATE, chunk_seconds=30, timestamps=True)
    (windowed,) = iter_transcripts(
        rec, [wave], sample_rate=RATE, chunk_seconds=2.5, overlap_seconds=0.5, timestamps=True
    )
    assert len(whole.words) > 10
    assert windowed.text == whole.text and windowed.words == whole.words
    # Without overlap the cuts damage the text: the overlap is what keeps it.
    (cut,) = iter_transcripts(
        rec, [wave], sample_rate=RATE, chunk_seconds=2.5, overlap_seconds=0.0, timestamps=True
    )
    assert cut.words != whole.words


@pytest.mark.parametrize("chunk_seconds", [1.0, 1.5, 2.0, 3.0, 3.5, 60.0, 1e6])
def test_any_chunk_size_from_the_minimum_up_is_accepted(chunk_seconds):
    rec = _recognizer()
    wave = _speech()[: 8 * RATE]
    (text,) = rec.transcribe([wave], sample_rate=RATE, chunk_seconds=chunk_seconds)
    assert isinstance(text, str) and text


@pytest.mark.parametrize("chunk_seconds", [0.0, -1.0, 0.5, float("nan"), float("inf")])
def test_unusable_chunk_sizes_are_refused_clearly(chunk_seconds):
    with pytest.raises(ConfigError, match=f"at least {MIN_CHUNK_SECONDS:g} s"):
        _recognizer().transcribe(torch.zeros(RATE), sample_rate=RATE, chunk_seconds=chunk_seconds)
    with pytest.raises(ConfigError, match="overlap_seconds"):
        plan_windows(_recognizer(), 4.0, 2.0)


# --- inputs ------------------------------------------------------------------------------------------
def test_channel_layouts_and_integer_pcm():
    rec = _recognizer()
    mono = _speech()[: 3 * RATE].numpy()
    stereo_tc = np.stack([mono, mono * 0.5], axis=1)  # what soundfile.read returns
    expected = rec.transcribe(mono * 0.75, sample_rate=RATE)
    assert rec.transcribe(stereo_tc, sample_rate=RATE) == expected
    assert rec.transcribe(stereo_tc.T.copy(), sample_rate=RATE) == expected
    assert rec.transcribe(torch.from_numpy(stereo_tc), sample_rate=RATE) == expected
    pcm = np.round(mono * 32767).astype(np.int16)
    assert rec.transcribe(pcm, sample_rate=RATE) == rec.transcribe(pcm / 32768.0, sample_rate=RATE)
    assert load_audio(pcm, RATE).abs().max() <= 1.0
    with pytest.raises(ValueError, match="shape"):
        rec.transcribe(np.zeros((2, 2, RATE), np.float32), sample_rate=RATE)
    pcm8 = np.round(mono * 127).astype(np.int8)  # 8-bit signed PCM: scaled by 1/128
    assert torch.allclose(load_audio(pcm8, RATE), load_audio(pcm8 / 128.0, RATE))


@pytest.mark.parametrize("rate", [1, 3999, 384001, 16000.5])
def test_a_sample_rate_no_recording_has_is_refused_before_any_work(rate):
    """sample_rate=1 would make 1,600 samples 26 minutes of audio to recognise."""
    with pytest.raises(ValueError, match="from 4000 to 384000"):
        _recognizer().transcribe(np.zeros(1600, np.float32), sample_rate=rate)


def test_sources_are_read_lazily_and_in_order():
    """Any number of inputs: sources are read only as the model needs them, results come in input
    order as soon as each is complete."""
    rec = _recognizer()
    speech = _speech()
    read: list[int] = []

    class Sources(list):
        def __getitem__(self, i):
            read.append(i)
            return super().__getitem__(i)

    sources = Sources(speech[i * 800 : i * 800 + RATE // 2 + i * 80] for i in range(100))
    results = iter_transcripts(rec, sources, batch_size=4, sample_rate=RATE)
    first = next(results)
    assert len(read) <= 4 * 4 + 1  # one pool of windows, not all 100 sources
    rest = list(results)
    assert [first.duration, *[r.duration for r in rest[:2]]] == [
        pytest.approx((RATE // 2 + i * 80) / RATE) for i in range(3)
    ]
    assert len(rest) == 99 and sorted(read) == list(range(100))
    expected = [rec.transcribe(sources[i], sample_rate=RATE) for i in (0, 50, 99)]
    assert [first.text, rest[49].text, rest[98].text] == expected


def test_unreadable_sources_are_reported_not_fatal(tmp_path):
    rec = _recognizer()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    good = _speech()[:RATE]
    results = list(
        iter_transcripts(rec, [good, str(bad), good], sample_rate=RATE, skip_errors=True)
    )
    assert results[1].error and "cannot decode" in results[1].error and results[1].text == ""
    assert results[0].text == results[2].text == rec.transcribe(good, sample_rate=RATE)
    with pytest.raises(ValueError, match="cannot decode"):
        rec.transcribe([good, str(bad)], sample_rate=RATE)


# --- word timestamps ---------------------------------------------------------------------------------
def test_word_timestamps_follow_the_ctc_alignment():
    tok = CharTokenizer()
    path = [0, 0, *tok.encode("hi"), 0, tok.vocab.index(" "), 0, 0, *tok.encode("yo"), 0]
    logits = torch.full((len(path), tok.vocab_size), -5.0)
    logits[torch.arange(len(path)), path] = 5.0
    words = word_timestamps(logits, "hi yo", tok, 0.02)
    assert [(w.word, w.start, w.end) for w in words] == [("hi", 0.04, 0.08), ("yo", 0.16, 0.2)]
    # A transcript that is not the best path (a beam search's) is force-aligned.
    forced = word_timestamps(logits, "ha yo", tok, 0.02)
    assert [w.word for w in forced] == ["ha", "yo"] and forced[1].start >= forced[0].end
    assert word_timestamps(logits[:3], "a much longer text", tok, 0.02) is None  # cannot fit


# --- devices -------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_the_gpu_transcribes():
    rec = _recognizer()
    wave = _speech()[: 5 * RATE]
    on_cpu = rec.transcribe(wave, sample_rate=RATE)
    assert rec.to("cuda").transcribe(wave, sample_rate=RATE) == on_cpu


# --- the console command -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    _recognizer().save_pretrained(folder)
    return folder


def test_cli_json_has_word_timestamps_and_skips_unreadable_files(model_folder, tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, _speech()[: 4 * RATE].numpy(), RATE)
    stereo = tmp_path / "b.flac"
    sf.write(stereo, np.stack([_speech()[: 2 * RATE].numpy()] * 2, axis=1), RATE)
    bad = tmp_path / "c.wav"
    bad.write_bytes(b"garbage")
    argv = ["transcribe", "--model", str(model_folder), str(wav), str(bad), str(stereo)]
    assert main([*argv, "--format", "json", "--chunk-seconds", "1.5"]) == 2
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == [str(wav), str(bad), str(stereo)]
    assert lines[1]["error"] and "1 of 3 files could not be read" in err
    assert lines[0]["duration"] == 4.0 and len(lines[0]["words"]) == len(lines[0]["text"].split())
    starts = [w["start"] for w in lines[0]["words"]]
    assert starts == sorted(starts) and all(w["end"] <= 4.0 for w in lines[0]["words"])
    assert main(argv[:4] + ["--chunk-seconds", "0.5"]) == 2
    assert "at least 1 s" in capsys.readouterr().err
    assert main(argv[:4] + ["--device", "warp-drive"]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(argv[:4]) == 0
    assert capsys.readouterr().out.startswith(f"{wav}\t")


def test_inference_imports_neither_lightning_nor_datasets(model_folder):
    code = (
        "import sys, ds2hub, numpy as np\n"
        "ds2hub.from_pretrained\n"
        "heavy = [m for m in ('lightning', 'datasets') if m in sys.modules]\n"
        f"ds2hub.from_pretrained({str(model_folder)!r}).transcribe(np.zeros(16000), sample_rate=16000)\n"
        "heavy += [m for m in ('lightning', 'datasets') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_transcribe_command_imports_neither_lightning_nor_datasets(model_folder, tmp_path):
    """`ds2hub transcribe` (the console path, not only the Python API) starts without training code."""
    audio = tmp_path / "a.wav"
    sf.write(audio, np.zeros(16000, dtype=np.float32), 16000)
    code = (
        "import sys\n"
        "from ds2hub.cli.main import main\n"
        f"status = main(['transcribe', '--model', {str(model_folder)!r}, {str(audio)!r}])\n"
        "heavy = [m for m in ('lightning', 'datasets', 'ds2hub.training.task') if m in sys.modules]\n"
        "print(status, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 []"


def test_transcribe_takes_what_datasets_and_transformers_hand_over(tmp_path):
    """Paths, bytes, arrays, the `datasets` Audio values (decoded, undecoded, and the
    AudioDecoder of datasets >= 4, from a real Dataset) and the transformers pipeline's dict all
    give the same transcript; a list gives one each; `timestamps=True` gives word timings."""
    import datasets

    rec = _recognizer()
    path = sorted(DIGITS.glob("*.opus"))[0]
    wave = load_audio(path).numpy()
    expected = rec.transcribe(str(path))
    inputs = [
        path,
        path.read_bytes(),
        {"array": wave, "sampling_rate": RATE},
        {"array": wave.tolist(), "sampling_rate": RATE},  # a dataset not formatted as numpy
        {"path": str(path), "bytes": None},
        {"path": "a name only", "bytes": path.read_bytes()},  # Audio(decode=False)
        {"raw": wave, "sampling_rate": RATE},  # transformers' pipeline input
    ]
    table = datasets.Dataset.from_dict({"audio": [str(path)]})
    inputs.append(table.cast_column("audio", datasets.Audio(sampling_rate=RATE))[0]["audio"])
    inputs.append(table.cast_column("audio", datasets.Audio(decode=False))[0]["audio"])
    for item in inputs:
        assert rec.transcribe(item) == expected, type(item)
    assert rec.transcribe(inputs) == [expected] * len(inputs)
    timed = rec.transcribe({"array": wave, "sampling_rate": RATE}, timestamps=True)
    assert timed.text == expected and timed.duration == pytest.approx(wave.size / RATE, abs=1e-3)
    assert len(timed.words) == len(expected.split())
    assert all(0 <= w.start <= w.end <= timed.duration for w in timed.words)
    (listed,) = rec.transcribe([path], timestamps=True)
    assert listed.text == expected


def test_transcribe_says_what_is_wrong_with_a_source(tmp_path):
    rec = _recognizer()
    cases = [
        (tmp_path / "missing.wav", "missing.wav does not exist"),
        (tmp_path, "is a folder, not an audio file"),
        ({"array": np.zeros(RATE)}, "needs 'sampling_rate'"),
        ({"audio": "x.wav"}, "needs 'array' (or 'raw') and 'sampling_rate', or 'bytes' or 'path'"),
    ]
    for source, words in cases:
        with pytest.raises(ValueError, match=re.escape(words)):
            rec.transcribe(source)
