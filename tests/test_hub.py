"""Hub folders, from_pretrained, model cards and push: through huggingface_hub's real objects."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx2
import huggingface_hub
import numpy as np
import pytest
import soundfile as sf
import torch
from huggingface_hub import ModelCard

import ds2hub
from ds2hub.cli import main
from ds2hub.hub import SpeechRecognizer
from ds2hub.push import export, push
from ds2hub.tokenizers import CharTokenizer, MandarinTokenizer, SentencePieceTokenizer

CONF = Path(__file__).parent / "conf" / "digits_tiny.yaml"


@pytest.fixture(scope="module")
def trained_ckpt(tiny_digits, tmp_path_factory) -> Path:
    """A checkpoint of a few steps of `ds2hub fit` on shipped digit audio."""
    root = tmp_path_factory.mktemp("run")
    cli = main(
        [
            "fit", "--config", str(CONF), "--data.path", str(tiny_digits),
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
            "--trainer.max_steps", "4",
        ]
    )  # fmt: skip
    return Path(cli.trainer.checkpoint_callback.last_model_path)


def _recognizer(tokenizer) -> SpeechRecognizer:
    torch.manual_seed(0)
    arch = ds2hub.DeepSpeech2Config(conv_channels=(4, 4), rnn_layers=1, rnn_hidden=16).to_dict()
    model = SpeechRecognizer(arch=arch, tokenizer=tokenizer)
    with torch.no_grad():  # non-trivial batch-norm statistics, so the round trip must carry them
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize(
    "tokenizer",
    [
        CharTokenizer(),
        MandarinTokenizer().fit(["你好世界", "世界和平"]),
        SentencePieceTokenizer(vocab_size=30).fit(["one two three four five"] * 20),
    ],
    ids=["chars", "mandarin", "sentencepiece"],
)
def test_save_and_from_pretrained_give_identical_logits(tokenizer, tmp_path):
    model = _recognizer(tokenizer)
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    assert not any(name.endswith((".bin", ".pt", ".ckpt", ".pkl")) for name in files)  # no pickles
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["sample_rate"] == 16000 and config["tokenizer"]["kind"] == tokenizer.kind
    assert config["vocab_size"] == tokenizer.vocab_size and config["arch"]["rnn_hidden"] == 16

    loaded = ds2hub.from_pretrained(tmp_path)
    assert loaded.tokenizer.vocab == tokenizer.vocab
    x = torch.randn(2, 161, 90)
    lengths = torch.tensor([90, 60])
    torch.testing.assert_close(loaded(x, lengths)[0], model(x, lengths)[0], rtol=0, atol=0)
    wave = torch.randn(16000) * 0.1
    assert loaded.transcribe(wave, sample_rate=16000) == model.transcribe(wave, sample_rate=16000)


def test_checkpoint_to_hub_folder_round_trip(trained_ckpt, tmp_path, tiny_digits):
    from_ckpt = ds2hub.from_pretrained(trained_ckpt)
    from_ckpt.save_pretrained(tmp_path)
    from_folder = ds2hub.from_pretrained(tmp_path)
    audio = sorted((tiny_digits / "test").glob("*.opus"))
    x = from_ckpt.frontend(ds2hub.load_audio(audio[0]))[None]
    lengths = torch.tensor([x.size(-1)])
    torch.testing.assert_close(from_folder(x, lengths)[0], from_ckpt(x, lengths)[0], rtol=0, atol=0)
    assert from_folder.transcribe(audio) == from_ckpt.transcribe(audio)
    # The LightningModule's network and the recogniser's are the same weights.
    state = torch.load(trained_ckpt, weights_only=True)["state_dict"]
    assert torch.equal(state["model.output.weight"], from_folder.model.output.weight)


def test_from_pretrained_reads_the_hub_cache_offline(tmp_path, monkeypatch):
    """A repo id resolves from the local cache with HF_HUB_OFFLINE=1 (the hub's snapshot layout)."""
    model = _recognizer(CharTokenizer())
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--ds2-tiny" / "snapshots" / ("a" * 40)
    model.save_pretrained(snapshot)
    (cache / "models--someone--ds2-tiny" / "refs").mkdir()
    (cache / "models--someone--ds2-tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = ds2hub.from_pretrained("someone/ds2-tiny", cache_dir=str(cache))
    assert loaded.tokenizer.vocab == model.tokenizer.vocab
    loaded_rev = ds2hub.from_pretrained("someone/ds2-tiny", revision="a" * 40, cache_dir=str(cache))
    assert torch.equal(loaded_rev.model.output.weight, model.model.output.weight)


def _write(path: Path, rate: int, seconds: float, channels: int = 1) -> Path:
    rng = np.random.default_rng(0)
    sf.write(
        path, (0.1 * rng.standard_normal((int(rate * seconds), channels))).astype(np.float32), rate
    )
    return path


def test_transcribe_any_rate_stereo_and_long_recordings(trained_ckpt, tmp_path, capsys):
    model = ds2hub.from_pretrained(trained_ckpt)
    files = [
        _write(tmp_path / "a8k.wav", 8000, 2.0),
        _write(tmp_path / "b44k_stereo.flac", 44100, 2.0, channels=2),
        _write(tmp_path / "long.wav", 16000, 60.0),
    ]
    texts = model.transcribe(files, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert model.transcribe(files[0]) == texts[0]  # single input -> single string
    main(
        [
            "transcribe",
            "--model",
            str(trained_ckpt),
            *map(str, files),
            "--json",
            "--chunk-seconds",
            "15",
        ]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["file"] for line in lines] == [str(f) for f in files]


def test_long_audio_is_split_at_quiet_points():
    from ds2hub.transcribe import split_long_audio

    rate = 16000
    loud = torch.randn(rate * 19)
    wave = torch.cat(
        [loud, torch.zeros(rate // 2), torch.randn(rate * 25)]
    )  # 44.5 s, pause at 19 s
    pieces = split_long_audio(wave, chunk_seconds=20, search_seconds=3)
    assert sum(p.numel() for p in pieces) == wave.numel()
    assert all(p.numel() <= 20 * rate for p in pieces)
    assert 19 * rate <= pieces[0].numel() <= 19.5 * rate  # cut inside the pause


def test_model_card_metadata_validates(trained_ckpt, tmp_path):
    folder = export(
        trained_ckpt, tmp_path / "out", "someone/ds2-digits-tiny", dataset_id="ds2hub/digits"
    )
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.pipeline_tag == "automatic-speech-recognition" and data.library_name == "ds2hub"
    assert (
        data.language == ["en"]
        and data.license == "apache-2.0"
        and data.datasets == ["ds2hub/digits"]
    )
    results = {r.metric_type: r for r in data.eval_results}
    assert set(results) == {"wer", "cer"}
    assert results["wer"].task_type == "automatic-speech-recognition"
    assert results["wer"].dataset_split == "test" and 0 <= results["wer"].metric_value
    assert "tokenizer-chars" in data.tags
    text = card.text
    assert "Deep Speech 2" in text and "@inproceedings{amodei2016deep" in text
    assert "ds2hub fit" in text and "rnn_hidden: 32" in text  # the command and the exact recipe
    assert 'ds2hub.from_pretrained("someone/ds2-digits-tiny")' in text
    assert (folder / "recipe.yaml").exists()
    assert isinstance(
        ds2hub.from_pretrained(folder).transcribe(torch.zeros(8000), sample_rate=16000), str
    )


class FakeHub:
    """Answers the hub's HTTP API like huggingface.co does, recording what was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.committed: dict[str, bytes] = {}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        if path == "/api/repos/create":
            name = json.loads(request.content)["name"]
            return httpx2.Response(
                200, json={"url": f"https://huggingface.co/someone/{name}", "name": name}
            )
        if path == "/api/validate-yaml":  # the hub checks README metadata before the commit
            self.validated = json.loads(request.content)["content"]
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(
                200,
                json={
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files
                    ]
                },
            )
        if "/commit/" in path:
            for line in request.read().decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.committed[item["value"]["path"]] = base64.b64decode(
                        item["value"]["content"]
                    )
            return httpx2.Response(
                200,
                json={
                    "commitUrl": "https://huggingface.co/someone/ds2/commit/123abc",
                    "commitOid": "123abc",
                },
            )
        return httpx2.Response(404, json={"error": f"unexpected {request.method} {path}"})


def test_push_uploads_the_folder_through_the_hub_api(trained_ckpt, tmp_path):
    hub = FakeHub()
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))
    try:
        folder = export(trained_ckpt, tmp_path / "out", "someone/ds2-digits-tiny", run_eval=False)
        url = push(folder, "someone/ds2-digits-tiny", token="hf_fake_token")
    finally:
        huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)
    assert "123abc" in url
    assert ("POST", "/api/repos/create") in hub.requests
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "recipe.yaml",
    } <= set(hub.committed)
    assert hub.committed["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert json.loads(hub.committed["config.json"])["tokenizer"]["kind"] == "chars"
    assert "model-index" in hub.validated  # the card's metadata went to the hub's validator


def test_push_cli_dry_run_writes_the_folder(trained_ckpt, tmp_path, capsys):
    main(
        [
            "push",
            str(trained_ckpt),
            "--repo-id",
            "someone/x",
            "--output-dir",
            str(tmp_path / "o"),
            "--dry-run",
            "--no-eval",
        ]
    )
    assert "wrote" in capsys.readouterr().out
    assert ds2hub.from_pretrained(tmp_path / "o").tokenizer.kind == "chars"
