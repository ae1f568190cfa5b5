"""ONNX export: the exported whole-utterance graph and streaming step match ds2hub's logits."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ds2hub.cli.main import run_cli
from ds2hub.errors import ConfigError
from ds2hub.export.onnx import BIG, StreamingStep, export_onnx
from ds2hub.inference.recognizer import SpeechRecognizer
from ds2hub.model.streaming import StreamingError, initial_state, stream_step
from ds2hub.tokenizers import CharTokenizer

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (ds2hub[export])")

from standins import STREAMING_ARCH as ARCH  # noqa: E402
from test_streaming_recognition import (  # noqa: E402
    _audio,
    _randomise_batch_norm,
    make_recognizer,
    whole_logits,
)


def output_length(rec, frames: int) -> int:
    return int(rec.model.output_lengths(torch.tensor([frames]))[0])


def run_onnx_stream(session, info, features: np.ndarray) -> np.ndarray:
    """Drives stream_step.onnx over (F, N) features as a runtime without ds2hub would."""
    step = info["stream_step"]
    k, n = step["chunk_frames"], features.shape[1]
    states = {name: np.zeros(shape, np.float32) for name, shape in step["states"].items()}
    length = n
    for kt, st in zip(info["arch"]["conv_kernel_time"], info["arch"]["conv_stride_time"]):
        length = (length + 2 * (kt // 2) - kt) // st + 1
    kept, fed = [], 0
    while True:
        chunk = np.zeros((1, features.shape[0], k), np.float32)
        part = features[:, fed : fed + k]
        chunk[0, :, : part.shape[1]] = part
        total = n if fed + k >= n else step["big"]
        outputs = session.run(
            None,
            {
                "features": chunk,
                "frames_in": np.array([fed], np.int64),
                "total_frames": np.array([total], np.int64),
                **states,
            },
        )
        logits, index = outputs[0][0], outputs[1]
        states = dict(zip(step["states"], outputs[2:]))
        keep = (index >= 0) & (index < length)
        kept.append(logits[keep])
        fed += k
        if total != step["big"] and index[-1] >= length - 1:
            return np.concatenate(kept)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_exported_whole_model_matches_ds2hub_logits(tmp_path, bidirectional, rnn_type):
    arch = {**ARCH, "rnn_type": rnn_type, "bidirectional": bidirectional}
    arch["lookahead"] = 0 if bidirectional else ARCH["lookahead"]
    torch.manual_seed(0)
    rec = SpeechRecognizer(arch, {}, CharTokenizer())
    _randomise_batch_norm(rec)
    rec.eval()
    written = export_onnx(rec, tmp_path)
    assert (tmp_path / "stream_step.onnx" in written) == (not bidirectional)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    # Another batch size and lengths than the export traced, with padding.
    lengths = torch.tensor([90, 17, 64])
    features = torch.randn(3, 161, 90)
    features[torch.arange(90)[None, None, :].expand(3, 161, 90) >= lengths[:, None, None]] = 0
    ref, ref_lengths = rec.model(features, lengths)
    logits, out_lengths = session.run(
        None, {"features": features.numpy(), "lengths": lengths.numpy()}
    )
    np.testing.assert_array_equal(out_lengths, ref_lengths.numpy())
    for b, n in enumerate(ref_lengths.tolist()):
        np.testing.assert_allclose(logits[b, :n], ref[b, :n].detach().numpy(), atol=1e-4)


@pytest.mark.parametrize("chunk_frames", [2, 16, 100])
def test_exported_streaming_step_matches_the_whole_utterance_pass(tmp_path, chunk_frames):
    rec = make_recognizer()
    export_onnx(rec, tmp_path, chunk_frames=chunk_frames)
    info = json.loads((tmp_path / "ds2hub_export.json").read_text())
    assert info["features"]["normalization"] == "global"
    np.testing.assert_allclose(info["mean"], rec.frontend.mean.numpy(), rtol=1e-6)
    session = ort.InferenceSession(str(tmp_path / "stream_step.onnx"))
    audio = _audio(1.23)
    features = rec.frontend(audio).numpy()
    got = run_onnx_stream(session, info, features)
    ref = whole_logits(rec, audio).detach().numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_the_export_carries_the_mel_filterbank_a_runtime_needs(tmp_path):
    """A runtime without torchaudio computes the mel features from the JSON's filterbank."""
    arch = {**ARCH, "n_features": 40, "bidirectional": True, "lookahead": 0}
    features = {"max_frequency_hz": 4000, "n_mels": 40, "normalization": "peak"}
    rec = SpeechRecognizer(arch, features, CharTokenizer()).eval()
    export_onnx(rec, tmp_path)
    info = json.loads((tmp_path / "ds2hub_export.json").read_text())
    assert info["features"]["n_mels"] == 40 and info["features"]["normalization"] == "peak"
    fbanks = np.array(info["mel_fbanks"])  # (n_mels, FFT bins)
    assert fbanks.shape == (40, 161)
    audio = _audio(0.8)
    power = rec.frontend.power(audio).numpy()  # the STFT, as any runtime computes it
    log_mel = np.log(np.maximum(fbanks @ power, 1e-30))
    floor = log_mel.max() - 60 * np.log(10) / 10
    np.testing.assert_allclose(
        np.maximum(log_mel, floor), rec.frontend.unnormalized(audio).numpy(), atol=1e-4
    )


@pytest.mark.parametrize("rnn_type", ["gru", "lstm", "rnn"])
def test_streaming_step_module_matches_for_every_layer_type(rnn_type):
    """The traced step's PyTorch source, for every recurrent layer and three conv layers."""
    rec = make_recognizer(
        rnn_type,
        conv_channels=[3, 3, 3],
        conv_kernel_freq=[21, 11, 11],
        conv_kernel_time=[7, 5, 3],
        conv_stride_freq=[2, 2, 2],
        conv_stride_time=[2, 2, 1],
        fc_hidden=8,
    )
    step = StreamingStep(rec.model, 8)
    audio = _audio(0.77)
    features = rec.frontend(audio)
    n, length = features.size(1), output_length(rec, features.size(1))
    states, kept, fed = step.initial_state(), [], 0
    with torch.no_grad():
        while True:
            chunk = features[:, fed : fed + 8]
            chunk = torch.nn.functional.pad(chunk, (0, 8 - chunk.size(-1)))[None]  # (1, F, 8)
            total = n if fed + 8 >= n else BIG
            logits, index, *states = step(
                chunk, torch.tensor([fed]), torch.tensor([total]), *states
            )
            kept.append(logits[0][(index >= 0) & (index < length)])
            fed += 8
            if total != BIG and int(index[-1]) >= length - 1:
                break
    torch.testing.assert_close(torch.cat(kept), whole_logits(rec, audio), atol=1e-4, rtol=1e-4)


def drive(step, features: torch.Tensor, k: int, length: int) -> torch.Tensor:
    """Feeds (F, N) features in chunks of k frames to `step(chunk, frames_in, total, states) ->
    (logits (1, k', V), index, states)` until every output is out; returns the kept logits."""
    n, fed, kept, states = features.size(1), 0, [], None
    while True:
        chunk = torch.nn.functional.pad(features[:, fed : fed + k], (0, k))[None, :, :k]
        total = n if fed + k >= n else BIG
        logits, index, states = step(chunk, torch.tensor([fed]), torch.tensor([total]), states)
        index = torch.as_tensor(index).flatten()
        kept.append(torch.as_tensor(logits)[0][(index >= 0) & (index < length)])
        fed += k
        if total != BIG and int(index[-1]) >= length - 1:
            return torch.cat(kept)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_sessions_and_the_onnx_step_run_the_models_one_incremental_pass(tmp_path, rnn_type):
    """`ds2hub.model.streaming.stream_step` is the only incremental pass: the exported graph is its
    unrolled recurrence traced, the module behind it calls it, and a streaming session emits what
    it emits (through torch's fused recurrent kernels) for the same audio."""
    rec = make_recognizer(rnn_type)
    export_onnx(rec, tmp_path, chunk_frames=8)
    info = json.loads((tmp_path / "ds2hub_export.json").read_text())
    session = ort.InferenceSession(str(tmp_path / "stream_step.onnx"))
    module = StreamingStep(rec.model, 8)
    audio = _audio(0.93)
    features = rec.frontend(audio)
    length = output_length(rec, features.size(1))

    def model_pass(unrolled):
        def step(chunk, fed, total, states):
            states = states or initial_state(rec.model)
            logits, index, _, states = stream_step(
                rec.model, chunk, fed, total, states, None, unrolled
            )
            return logits, index, states

        return step

    def module_step(chunk, fed, total, states):
        logits, index, *states = module(chunk, fed, total, *(states or module.initial_state()))
        return logits, index, states

    def onnx_step(chunk, fed, total, states):
        states = states or {
            n: np.zeros(s, np.float32) for n, s in info["stream_step"]["states"].items()
        }
        inputs = {
            "features": chunk.numpy(),
            "frames_in": fed.numpy(),
            "total_frames": total.numpy(),
        }
        out = session.run(None, {**inputs, **states})
        return out[0], out[1], dict(zip(states, out[2:]))

    with torch.no_grad():
        unrolled = drive(model_pass(True), features, 8, length)
        fused = drive(model_pass(False), features, 8, length)
        assert torch.equal(drive(module_step, features, 8, length), unrolled)
    torch.testing.assert_close(
        drive(onnx_step, features, 8, length), unrolled, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(fused, unrolled, atol=1e-5, rtol=1e-5)
    stream = rec.stream(keep_logits=True)
    for start in range(0, audio.numel(), 1000):
        stream.accept(audio[start : start + 1000])
    stream.finish()
    torch.testing.assert_close(stream.logits, fused, atol=1e-5, rtol=1e-5)
    assert unrolled.shape == whole_logits(rec, audio).shape


def test_streaming_export_refuses_what_it_cannot_do(tmp_path):
    rec = make_recognizer()
    with pytest.raises(ConfigError, match="multiple"):
        StreamingStep(rec.model, 3)  # the model's time stride is 2
    bidirectional = SpeechRecognizer({**ARCH, "bidirectional": True, "lookahead": 0}, {},
                                     CharTokenizer())  # fmt: skip
    with pytest.raises(StreamingError, match="bidirectional"):
        StreamingStep(bidirectional.model, 16)
    with pytest.raises(ConfigError, match="clipped"):
        export_onnx(make_recognizer("rnn"), tmp_path)


def test_export_command_writes_a_folder_that_runs(tmp_path):
    rec = make_recognizer()
    rec.save_pretrained(tmp_path / "model")
    run_cli(["export", str(tmp_path / "model"), str(tmp_path / "onnx"), "--chunk-ms", "80"])
    info = json.loads((tmp_path / "onnx" / "ds2hub_export.json").read_text())
    assert info["stream_step"]["chunk_frames"] == 8
    session = ort.InferenceSession(str(tmp_path / "onnx" / "stream_step.onnx"))
    audio = _audio(0.5)
    got = run_onnx_stream(session, info, rec.frontend(audio).numpy())
    np.testing.assert_allclose(got, whole_logits(rec, audio).detach().numpy(), atol=1e-4)


def test_export_command_rejects_a_bad_chunk_in_one_line(tmp_path):
    rec = make_recognizer()
    rec.save_pretrained(tmp_path / "model")
    result = subprocess.run(
        [sys.executable, "-m", "ds2hub", "export", str(tmp_path / "model"), str(tmp_path / "o"),
         "--chunk-ms", "15"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("ds2hub: error: --chunk-ms")


def test_export_never_writes_into_a_folder_it_did_not_create(tmp_path):
    rec = make_recognizer()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.onnx").write_text("not ds2hub's")
    with pytest.raises(ConfigError, match="not empty"):
        export_onnx(rec, tmp_path / "mine")
    assert (tmp_path / "mine" / "model.onnx").read_text() == "not ds2hub's"
    export_onnx(rec, tmp_path / "out", chunk_frames=None)
    with pytest.raises(ConfigError, match="--overwrite"):
        export_onnx(rec, tmp_path / "out", chunk_frames=None)
    export_onnx(rec, tmp_path / "out", chunk_frames=None, overwrite=True)


def test_export_command_names_a_missing_model_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ds2hub", "export", str(tmp_path / "nope"), str(tmp_path / "o")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"ds2hub: error: model {str(tmp_path / 'nope')!r} does not exist"
    )
