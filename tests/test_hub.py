"""Hub folders, from_pretrained, model cards and push: through huggingface_hub's real objects."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx2
import huggingface_hub
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from huggingface_hub import ModelCard

import ds2hub
from ds2hub.cli.main import main, run_cli
from ds2hub.errors import ConfigError
from ds2hub.features import FeatureConfig
from ds2hub.inference.recognizer import SpeechRecognizer
from ds2hub.model.config import DeepSpeech2Config
from ds2hub.publish.card import CardInfo, describe_convolutions, render_card
from ds2hub.publish.push import ExportError, evaluate, export, local_details, push
from ds2hub.tokenizers import (
    CharTokenizer,
    MandarinTokenizer,
    PinyinTokenizer,
    SentencePieceTokenizer,
)
from ds2hub.tokenizers.registry import TokenizerFileError
from ds2hub.training.runs import find_run_config

CONF = Path(__file__).parent / "conf" / "digits_tiny.yaml"
DS2HUB = Path(sys.executable).parent / "ds2hub"  # the console script `pip install` made


@pytest.fixture(scope="module")
def trained_ckpt(tiny_digits, tmp_path_factory) -> Path:
    """A checkpoint of a few steps of `ds2hub fit` on shipped digit audio."""
    root = tmp_path_factory.mktemp("run")
    cli = run_cli(
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
    assert {"config.json", "model.safetensors", "ds2hub_tokenizer.json", "README.md"} <= files
    assert not any(name.endswith((".bin", ".pt", ".ckpt", ".pkl")) for name in files)  # no pickles
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"]  # not private (0600) alone
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


def test_a_peak_normalised_model_keeps_its_front_end_through_a_hub_folder(tmp_path):
    """`features.normalization: peak` (fsdd_digits) is saved with the weights: the loaded model
    computes the same features, so the same logits, not per-bin normalised ones."""
    torch.manual_seed(0)
    arch = ds2hub.DeepSpeech2Config(conv_channels=(4, 4), rnn_layers=1, rnn_hidden=16).to_dict()
    model = SpeechRecognizer(
        arch=arch, features={"normalization": "peak"}, tokenizer=CharTokenizer()
    )
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["features"]["normalization"] == "peak"
    loaded = ds2hub.from_pretrained(tmp_path)
    assert loaded.features.normalization == "peak"
    t = torch.arange(16000) / 16000
    wave = 0.3 * torch.sin(2 * torch.pi * 440 * t) * torch.sin(2 * torch.pi * 2 * t)
    features = loaded.frontend(wave)
    torch.testing.assert_close(features, model.frontend(wave))
    assert float(features.mean(dim=1).abs().max()) > 0.1  # not each bin's mean removed


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


def test_the_shipped_demo_model_loads_by_its_name_after_a_local_path_of_that_name(
    tmp_path, monkeypatch
):
    """`digits-demo` ships inside the package: `from_pretrained` and `ds2hub transcribe --model`
    take its name and transcribe a held-out clip of the demo corpus right; a folder of that name
    in the current directory is what the name means there (a path always means the path)."""
    digits = Path(__file__).resolve().parents[1] / "recipes" / "digits" / "test"
    with open(digits / "metadata.csv") as f:
        row = next(csv.DictReader(f))
    assert "digits-demo" in ds2hub.available_models()
    shipped = Path(ds2hub.__file__).parent / "pretrained" / "digits-demo"
    recipe = (shipped / "README.md").read_text().split("- Recipe: `", 1)[1].split("`", 1)[0]
    assert (shipped / recipe).is_file()  # the card names the recipe file the folder holds
    model = ds2hub.from_pretrained("digits-demo")
    assert model.transcribe(digits / row["file_name"]) == row["text"]
    said = subprocess.run(
        [str(DS2HUB), "transcribe", "--model", "digits-demo", str(digits / row["file_name"])],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert said.returncode == 0 and said.stdout.split("\t")[1].strip() == row["text"], said.stderr

    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits-demo").mkdir()  # not a model folder: refused, not replaced by the shipped
    with pytest.raises(ConfigError, match="config.json"):
        ds2hub.from_pretrained("digits-demo")


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_first_python_example_of_the_front_pages_runs_as_written(page):
    """Right after install, from the checkout's root: the shipped model, the shipped clips."""
    repo = Path(__file__).resolve().parents[1]
    example = (repo / page).read_text().split("```python\n", 1)[1].split("```", 1)[0]
    ran = subprocess.run(
        [sys.executable, "-c", example], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    with open(repo / "recipes" / "digits" / "test" / "metadata.csv") as f:
        first = next(csv.DictReader(f))
    assert ran.stdout.splitlines()[0] == first["text"]


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
    status = main(
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
    assert status == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["file"] for line in lines] == [str(f) for f in files]


def test_a_card_names_1d_and_2d_convolutions():
    assert describe_convolutions(
        DeepSpeech2Config(conv_kernel_freq=(0, 0), conv_stride_freq=(1, 1))
    ) == ("2 × 1D (time-only) convolution")
    assert describe_convolutions(
        DeepSpeech2Config(conv_kernel_freq=(0, 21), conv_stride_freq=(1, 2))
    ) == ("1D (time-only) + 2D convolution")


def test_model_card_metadata_validates(trained_ckpt, tmp_path):
    folder = export(
        trained_ckpt, tmp_path / "out", "someone/ds2-digits-tiny", dataset_id="ds2hub/digits"
    )
    card = ModelCard.load(folder / "README.md")
    assert "→ 2 × 2D convolution →" in card.text  # the recipe's front end, in words
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
    # The recipe has test data: the figures come from it, and say so; the split in the hub's
    # form (a `load_dataset` split name), its description in the text.
    assert results["wer"].dataset_split == "test" and 0 <= results["wer"].metric_value
    assert (
        results["wer"].dataset_type == "ds2hub/digits" and results["wer"].metric_name == "Test WER"
    )
    assert "test of ds2hub/digits" in card.text
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
        folder = export(
            trained_ckpt, tmp_path / "out", "someone/ds2-digits-tiny", dataset_id="someone/digits"
        )
        url = push(folder, "someone/ds2-digits-tiny", token="hf_fake_token")
    finally:
        huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)
    assert "123abc" in url
    assert ("POST", "/api/repos/create") in hub.requests
    assert {
        "config.json",
        "model.safetensors",
        "ds2hub_tokenizer.json",
        "README.md",
        "recipe.yaml",
    } <= set(hub.committed)
    assert hub.committed["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert json.loads(hub.committed["config.json"])["tokenizer"]["kind"] == "chars"
    assert "model-index" in hub.validated  # the card's metadata went to the hub's validator


def test_a_pushed_cards_install_line_and_snippet_run_against_its_folder(
    trained_ckpt, tiny_digits, tmp_path
):
    """`ds2hub push --dry-run --output-dir` as a user runs it, on a recipe whose data is a local
    folder: the card says how to install ds2hub and what loads the folder, its Python snippet
    runs (the repo id pointed at the folder, `speech.wav` a recording of the user's), and its
    metadata names no dataset the hub does not have."""
    folder = tmp_path / "folder"
    pushed = subprocess.run(
        [str(DS2HUB), "push", str(trained_ckpt), "--repo-id", "someone/ds2-tiny", "--dry-run",
         "--output-dir", str(folder)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    card = ModelCard.load(folder / "README.md")
    assert card.data.datasets is None and card.data.eval_results is None  # local data
    assert "model-index" not in (folder / "README.md").read_text()
    assert f"Data: {tiny_digits.name} (a local folder, not on the Hub), test of" in card.text
    text = " ".join(card.text.split())
    assert f'pip install "ds2hub-{ds2hub.__version__}-py3-none-any.whl"' in text
    assert "What loads it: ds2hub" in text and "load_from_dir" not in text  # (no LM here)
    assert "Recipe: `recipe.yaml` next to the weights" in text  # the file the folder holds
    assert (folder / "recipe.yaml").is_file() and "`config.yaml`" not in text
    assert "wall clock to this checkpoint" in text

    snippet = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'ds2hub.from_pretrained("someone/ds2-tiny")' in snippet
    clip = next((tiny_digits / "test").glob("*.opus"))
    sf.write(tmp_path / "speech.wav", ds2hub.load_audio(clip).numpy(), 16000)
    ran = subprocess.run(
        [sys.executable, "-c", snippet.replace("someone/ds2-tiny", str(folder))],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert len(ran.stdout.splitlines()) == 2  # the transcript, then its words


def test_push_cli_dry_run_writes_the_folder(trained_ckpt, tmp_path, capsys):
    status = main(
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
    assert status == 0 and "wrote" in capsys.readouterr().out
    assert ds2hub.from_pretrained(tmp_path / "o").tokenizer.kind == "chars"


# --- publishing never destroys, never trusts, never hides ------------------------------------------
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_never_writes_into_a_folder_it_did_not_create(
    trained_ckpt, tmp_path, monkeypatch, capsys
):
    mine = tmp_path / "my-project"
    (mine / "src").mkdir(parents=True)
    (mine / "notes.txt").write_text("do not lose me")
    (mine / "src" / "train.py").write_text("print('hi')")
    (mine / "README.md").write_text("my own readme")
    before = _snapshot(mine)
    monkeypatch.chdir(mine)  # `--output-dir .`: the working directory itself
    for output in (".", str(mine)):
        status = main(
            ["push", str(trained_ckpt), "--repo-id", "someone/x", "--output-dir", output,
             "--dry-run", "--no-eval", "--overwrite"]
        )  # fmt: skip
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("ds2hub: error: ") and len(err.splitlines()) == 1
        assert "not written by ds2hub" in err and "Traceback" not in err
    assert _snapshot(mine) == before  # every file intact, nothing added


def test_export_replaces_only_its_own_folder_and_only_when_asked(trained_ckpt, tmp_path):
    out = tmp_path / "hub"
    export(trained_ckpt, out, "someone/x", run_eval=False)
    assert (out / ".ds2hub-export").exists()
    with pytest.raises(ExportError, match="overwrite"):
        export(trained_ckpt, out, "someone/x", run_eval=False)
    (out / "README.md").write_text("stale")
    export(trained_ckpt, out, "someone/x", run_eval=False, overwrite=True)
    assert "Deep Speech 2" in (out / "README.md").read_text()
    assert ds2hub.from_pretrained(out).tokenizer.kind == "chars"
    # A file the user added to the export folder is never deleted, even with overwrite.
    (out / "my-notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="my-notes.txt"):
        export(trained_ckpt, out, "someone/x", run_eval=False, overwrite=True)
    assert (out / "my-notes.txt").read_text() == "mine" and (out / "config.json").exists()


def test_a_hub_folder_cannot_make_ds2hub_read_files_outside_it(tmp_path):
    secret = tmp_path / "secret.txt"  # any file of the user's: a model must not get it read
    secret.write_text("秘密 100\n", encoding="utf-8")
    words = tmp_path / "words.txt"
    words.write_text("你好 10\n世界 5\n", encoding="utf-8")
    folder = tmp_path / "model"
    _recognizer(PinyinTokenizer(lexicon=str(words))).save_pretrained(folder)
    # Its own word list travels inside the folder and is found there.
    saved = json.loads((folder / "ds2hub_tokenizer.json").read_text())
    assert saved["init_args"]["lexicon"] == "lexicon.txt"
    loaded = ds2hub.from_pretrained(folder)
    assert Path(loaded.tokenizer.lexicon_path).parent == folder
    from ds2hub.decoding.hanzi import hanzi_lexicon

    lexicon = hanzi_lexicon(loaded.tokenizer.lexicon_path, loaded.tokenizer.lexicon_min_count)
    assert lexicon.to_hanzi(["ni3", "hao3"]) == "你好"

    for outside in (str(secret), "../secret.txt", "~/secret.txt"):
        saved["init_args"]["lexicon"] = outside
        (folder / "ds2hub_tokenizer.json").write_text(json.dumps(saved))
        with pytest.raises(TokenizerFileError, match="outside the model folder"):
            ds2hub.from_pretrained(folder)

    spm_folder = tmp_path / "spm"
    tokenizer = SentencePieceTokenizer(vocab_size=30).fit(["one two three four five"] * 20)
    _recognizer(tokenizer).save_pretrained(spm_folder)
    config = json.loads((spm_folder / "ds2hub_tokenizer.json").read_text())
    config["init_args"] = {"model_file": str(spm_folder.parent / "spm" / ".." / "secret.txt")}
    (spm_folder / "ds2hub_tokenizer.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerFileError, match="outside the model folder"):
        ds2hub.from_pretrained(spm_folder)


def test_the_tokenizer_file_is_never_named_like_hugging_faces_fast_tokenizer(tmp_path):
    from ds2hub.inference.recognizer import HUB_FILES

    model = _recognizer(CharTokenizer())
    model.save_pretrained(tmp_path)
    # never Hugging Face's fast-tokenizer file name, which hub tooling would try to parse
    assert not (tmp_path / "tokenizer.json").exists() and "tokenizer.json" not in HUB_FILES
    assert ds2hub.from_pretrained(tmp_path).tokenizer.vocab == model.tokenizer.vocab


def test_jieba_dictionary_is_named_not_copied(tmp_path):
    from ds2hub.decoding.hanzi import jieba_dictionary

    PinyinTokenizer(lexicon=str(jieba_dictionary())).save(tmp_path)
    assert (
        json.loads((tmp_path / "ds2hub_tokenizer.json").read_text())["init_args"]["lexicon"] is None
    )
    assert not (tmp_path / "lexicon.txt").exists()


def test_push_shows_the_local_details_it_publishes_and_redacts_them(
    trained_ckpt, tiny_digits, tmp_path, capsys
):
    args = ["push", str(trained_ckpt), "--repo-id", "someone/x", "--dry-run", "--no-eval"]
    assert main([*args, "--output-dir", str(tmp_path / "plain")]) == 0
    err = capsys.readouterr().err
    assert (
        "publish these local details" in err and str(tiny_digits) in err
    )  # the recipe's data.path
    assert str(tiny_digits) in (tmp_path / "plain" / "recipe.yaml").read_text()

    assert main([*args, "--output-dir", str(tmp_path / "redacted"), "--redact"]) == 0
    assert "publish these local details" not in capsys.readouterr().err
    recipe = (tmp_path / "redacted" / "recipe.yaml").read_text()
    card = (tmp_path / "redacted" / "README.md").read_text()
    for text in (recipe, card):
        assert str(tiny_digits) not in text and str(trained_ckpt.parent) not in text
    assert yaml.safe_load(recipe)["data"]["path"] == f"<local>/{tiny_digits.name}"
    assert local_details(tmp_path / "redacted", "someone/x") == []
    assert 'from_pretrained("someone/x")' in card  # the repo id is meant to be published


def test_local_details_finds_paths_and_names_but_not_urls_or_metrics(monkeypatch):
    import ds2hub.publish.push as push_module

    monkeypatch.setattr(push_module.getpass, "getuser", lambda: "alice")
    monkeypatch.setattr(push_module.socket, "gethostname", lambda: "alice-laptop")
    text = (
        "data: /home/alice/corpus\nlexicon: ~/words.txt\nmonitor: val/wer\n"
        "url: https://huggingface.co/alice/ds2 see https://arxiv.org/abs/1512.02595\n"
        "run by alice on alice-laptop: ds2hub fit --config recipes/digits.yaml\n"
    )
    found = {d.text: d.kind for d in push_module.find_local_details(text, keep="alice/ds2")}
    assert found == {
        "/home/alice/corpus": "absolute path",
        "~/words.txt": "home directory",
        "alice": "user name",
        "alice-laptop": "host name",
    }
    redacted = push_module.redact_text(text, keep="alice/ds2")
    assert "data: <local>/corpus" in redacted and "lexicon: <local>/words.txt" in redacted
    assert "run by <user> on <host>" in redacted and "huggingface.co/alice/ds2" in redacted
    assert "val/wer" in redacted and "recipes/digits.yaml" in redacted


# --- evaluation that can be cited ------------------------------------------------------------------
def test_without_test_data_the_card_reports_validation_figures_as_such(trained_ckpt, tmp_path):
    recipe = yaml.safe_load(find_run_config(trained_ckpt).read_text())
    recipe["data"]["test_split"] = None
    config = tmp_path / "no_test.yaml"
    config.write_text(yaml.safe_dump(recipe))
    folder = export(trained_ckpt, tmp_path / "out", "someone/x", config=config)
    card = ModelCard.load(folder / "README.md")
    assert card.data.eval_results is None and card.data.datasets is None  # a local folder
    folder = export(
        trained_ckpt, tmp_path / "out2", "someone/x", config=config, dataset_id="someone/digits"
    )
    card = ModelCard.load(folder / "README.md")
    for result in card.data.eval_results:
        assert result.dataset_split == "validation"
        assert result.metric_name.startswith("Validation ") and "Test" not in result.metric_name
    assert "Validation figures" in card.text and "Measured on test data" not in card.text


def test_figures_from_groups_held_out_of_the_train_split_are_not_indexed_as_train(
    trained_ckpt, tmp_path
):
    """Test data held out of the train split (`data.test_holdout_values`): the hub's model-index
    `split` could only say `train`, which reads as figures measured on training data, so the card
    has no model-index; its text says where the figures come from."""
    recipe = yaml.safe_load(find_run_config(trained_ckpt).read_text())
    held = {"holdout_values": ["en-gb-scotland+robosoft6"], "test_holdout_values": ["en-029+zac"]}
    recipe["data"].update(test_split=None, holdout_column="voice", **held)
    config = tmp_path / "held_out_test.yaml"
    config.write_text(yaml.safe_dump(recipe))
    folder = tmp_path / "out"
    assert main([
        "push", str(trained_ckpt), "--repo-id", "someone/x", "--config", str(config),
        "--dataset-id", "someone/digits", "--dry-run", "--output-dir", str(folder),
    ]) == 0  # fmt: skip
    card = ModelCard.load(folder / "README.md")
    assert card.data.datasets == ["someone/digits"]  # trained on it: still named
    assert (
        card.data.eval_results is None and "model-index" not in (folder / "README.md").read_text()
    )
    assert "held-out voice groups (en-029+zac) of train of someone/digits" in card.text


class _OneBatch:
    """A DataModule stand-in with one batch of given references (evaluation reads no audio)."""

    def __init__(self, texts: list[str]) -> None:
        self.batch = {"features": torch.zeros(len(texts), 161, 40),
                      "feature_lengths": torch.full((len(texts),), 40), "texts": texts}  # fmt: skip

    def setup(self, stage: str) -> None:
        pass

    def test_dataloader(self) -> list[dict]:
        return [self.batch]


def test_mandarin_is_scored_by_sentence_error_rate_never_wer(monkeypatch):
    model = _recognizer(MandarinTokenizer().fit(["你好世界", "世界和平"]))
    monkeypatch.setattr(model, "text_decoder", lambda beam=None: lambda x, n: ["你好世界", "世界"])
    result = evaluate(model, _OneBatch(["你好 世界。", "世界和平"]))
    assert set(result) == {"ser", "cer", "utterances"}
    assert result["ser"] == 0.5  # one of two sentences wrong
    info = CardInfo(
        repo_id="someone/zh",
        language="zh",
        dataset_id="d",
        dataset_split="test of d",
        metrics={"ser": result["ser"], "cer": result["cer"]},
        eval_utterances=2,
    )
    card = render_card(model, info)
    index = {r.metric_type: r.metric_name for r in card.data.eval_results}
    assert index == {"ser": "Test SER", "cer": "Test CER"} and "WER" not in card.text
    assert "sentence error rate" in card.text


def test_words_the_model_cannot_write_count_as_errors(monkeypatch):
    model = _recognizer(CharTokenizer())
    monkeypatch.setattr(model, "text_decoder", lambda beam=None: lambda x, n: ["call now"])
    result = evaluate(model, _OneBatch(["Call 911, now!"]))
    assert result["wer"] == pytest.approx(1 / 3)  # `911` is a word the model missed


# --- the decoding setup travels with the model -------------------------------------------------
def _digit_lm(tiny_digits: Path, out: Path) -> Path:
    """A word bigram LM over the training transcripts, built with `ds2hub lm build`."""
    with open(tiny_digits / "train" / "metadata.csv") as f:
        text = "\n".join(row["text"] for row in csv.DictReader(f)) + "\n"
    (out.parent / "train.txt").write_text(text)
    assert (
        main(["lm", "build", str(out.parent / "train.txt"), "--order", "2", "--out", str(out)]) == 0
    )
    return out / "lm.arpa"


def test_a_published_folder_carries_its_lm_and_reproduces_its_card(
    trained_ckpt, tiny_digits, tmp_path, monkeypatch, capsys
):
    import ds2hub.decoding.pyctc as pyctc
    from ds2hub.decoding.bundle import load_decoding
    from ds2hub.training.runs import datamodule_from_config

    lm = _digit_lm(tiny_digits, tmp_path / "lm")
    tuned = tmp_path / "decoding"
    loads = []
    real_scorer = pyctc.kenlm_scorer
    monkeypatch.setattr(pyctc, "kenlm_scorer", lambda *a: loads.append(a) or real_scorer(*a))
    capsys.readouterr()
    status = main([
        "lm", "tune", str(trained_ckpt), "--lm", str(lm), "--backend", "pyctcdecode",
        "--alphas", "0.5,1", "--betas", "0,1", "--beam-size", "8", "--out", str(tuned),
    ])  # fmt: skip
    assert status == 0 and (tuned / "tune.csv").read_text().count("\n") == 5  # header + 2 x 2
    assert len(loads) == 1  # the LM is loaded once for the whole grid
    assert "is on the edge of the grid" in capsys.readouterr().err  # a 2 x 2 grid: always
    rows = list(csv.DictReader(io.StringIO((tuned / "tune.csv").read_text())))
    best = min(rows, key=lambda r: float(r["wer"]))
    stored = load_decoding(tuned)  # the best grid point is what is stored
    assert (stored.lm_weight, stored.word_score) == (float(best["alpha"]), float(best["beta"]))
    assert (
        main(
            [
                "lm",
                "tune",
                str(trained_ckpt),
                "--lm",
                str(tmp_path / "no.arpa"),
                "--out",
                str(tmp_path / "t2"),
            ]
        )
        == 2
    )
    folder = export(
        trained_ckpt,
        tmp_path / "out",
        "someone/ds2-lm",
        dataset_id="someone/digits",
        decoding=tuned,
    )
    # The hub's CTC layout: pyctcdecode's alphabet and language_model/ folder, plus ds2hub's file.
    assert json.loads((folder / "alphabet.json").read_text())["labels"][0] == ""
    assert {p.name for p in (folder / "language_model").iterdir()} == {
        "attrs.json",
        "unigrams.txt",
        "lm.arpa",
    }
    loaded = ds2hub.from_pretrained(folder)
    assert loaded.decoding == load_decoding(folder)
    assert Path(loaded.decoding.lm).parent == folder / "language_model"
    assert loaded.decoding.backend == "pyctcdecode" and loaded.decoding.lm_order == 2

    # The card's figures, each labelled with its decoding, are what the folder reproduces.
    card = ModelCard.load(folder / "README.md")
    figures = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert set(figures) == {
        "Test WER (LM)",
        "Test CER (LM)",
        "Test WER (greedy)",
        "Test CER (greedy)",
    }
    assert "pyctcdecode beam search, beam 8, 2-gram word LM `lm.arpa`" in card.text
    assert "greedy CTC decoding (best path), no language model" in card.text
    assert "`pyctcdecode.BeamSearchDecoderCTC.load_from_dir(folder)` reads it with the `kenlm`" in (
        " ".join(card.text.split())
    )
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    for decoding, label in ((None, "LM"), ("greedy", "greedy")):  # None: the folder's default
        result = evaluate(loaded, datamodule_from_config(recipe, loaded), "test", decoding)
        assert round(result["wer"] * 100, 2) == figures[f"Test WER ({label})"]
        assert round(result["cer"] * 100, 2) == figures[f"Test CER ({label})"]


def test_transcribe_decodes_with_the_folders_lm_unless_told_greedy(
    trained_ckpt, tiny_digits, tmp_path, capsys
):
    from ds2hub.decoding import DecoderConfig

    lm = _digit_lm(tiny_digits, tmp_path / "lm")
    model = ds2hub.from_pretrained(trained_ckpt)
    model.decoding = DecoderConfig(lm=str(lm), beam_size=8)  # flashlight lexicon search
    model.save_pretrained(tmp_path / "model")
    audio = sorted((tiny_digits / "test").glob("*.opus"))[:2]
    words = set((tmp_path / "train.txt").read_text().split())  # the LM's text
    for args in ([], ["--greedy"]):
        capsys.readouterr()
        assert (
            main(
                [
                    "transcribe",
                    "--model",
                    str(tmp_path / "model"),
                    *map(str, audio),
                    "--json",
                    *args,
                ]
            )
            == 0
        )
        texts = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
        if not args:  # a lexicon search writes only words of its LM
            assert all(set(t.split()) <= words for t in texts)
    loaded = ds2hub.from_pretrained(tmp_path / "model")
    assert loaded.text_decoder() is not loaded.text_decoder("greedy")
    assert (
        main(
            [
                "transcribe",
                "--model",
                str(tmp_path / "model"),
                str(audio[0]),
                "--lm",
                str(tmp_path / "missing.arpa"),
            ]
        )
        == 2
    )
    # Another LM, of another order than the folder's 2-gram: it is used, not refused.
    trigram = tmp_path / "lm3"
    assert (
        main(["lm", "build", str(tmp_path / "train.txt"), "--order", "3", "--out", str(trigram)])
        == 0
    )
    args = [
        "transcribe",
        "--model",
        str(tmp_path / "model"),
        str(audio[0]),
        "--lm",
        str(trigram / "lm.arpa"),
    ]
    assert main(args) == 0


def test_a_folder_cannot_name_decoding_files_outside_it(tmp_path):
    from ds2hub.decoding import DecoderConfig
    from ds2hub.errors import ConfigError
    from tests.lm_files import write_arpa

    lm = write_arpa(tmp_path / "en.arpa", {"one": -1.0, "two": -1.0})
    model = _recognizer(CharTokenizer())
    model.decoding = DecoderConfig(lm=str(lm), backend="pyctcdecode")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    attrs = json.loads((folder / "language_model" / "attrs.json").read_text())
    attrs["alpha"] = 0.25  # tools that retune pyctcdecode's attrs.json are heard
    (folder / "language_model" / "attrs.json").write_text(json.dumps(attrs))
    assert ds2hub.from_pretrained(folder).decoding.lm_weight == 0.25
    stored = json.loads((folder / "decoding.json").read_text())
    for outside in (str(lm), "../en.arpa"):
        (folder / "decoding.json").write_text(json.dumps({**stored, "lm": outside}))
        with pytest.raises(ConfigError, match="outside the model folder"):
            ds2hub.from_pretrained(folder)


@pytest.mark.parametrize(
    "bidirectional, normalization", [(True, "utterance"), (False, "utterance"), (False, "global")]
)
def test_the_card_says_a_model_streams_exactly_when_it_can(bidirectional, normalization):
    arch = {
        "conv_channels": [4], "conv_kernel_freq": [11], "conv_kernel_time": [5],
        "conv_stride_freq": [2], "conv_stride_time": [2], "rnn_layers": 1, "rnn_hidden": 16,
        "bidirectional": bidirectional, "lookahead": 0 if bidirectional else 2,
    }  # fmt: skip
    model = SpeechRecognizer(arch, {"normalization": normalization}, CharTokenizer()).eval()
    if normalization == "global":  # as training leaves it: statistics of the training frames
        bins = model.frontend.config.n_bins
        model.frontend.set_statistics(torch.zeros(bins), torch.ones(bins), 1000)
    info = CardInfo("someone/m", "en", "d", "test of d", {"wer": 0.1, "cer": 0.05}, 4)
    text = render_card(model, info).text
    try:
        model.stream()
        streams = True
    except Exception:  # refused, with its reason
        streams = False
    assert ("it streams (`model.stream()`" in text) == streams
    assert ("does not stream" in text) == (not streams)
    assert "overlapping 20.0-second windows (2.0 s overlap)" in text  # transcribe's defaults


@pytest.mark.parametrize(
    "features, named",
    [
        ({}, "log spectrogram (161 bins, 0-8 kHz)"),
        ({"max_frequency_hz": 4000, "n_mels": 40}, "log-mel filterbank (40 filters, 0-4 kHz)"),
    ],
)
def test_the_card_names_the_front_end_the_model_was_trained_with(features, named):
    n_features = FeatureConfig(**features).n_bins
    arch = {
        "conv_channels": [4], "conv_kernel_freq": [11], "conv_kernel_time": [5],
        "conv_stride_freq": [2], "conv_stride_time": [2], "rnn_layers": 1, "rnn_hidden": 16,
        "n_features": n_features,
    }  # fmt: skip
    model = SpeechRecognizer(arch, features, CharTokenizer()).eval()
    info = CardInfo("someone/m", "en", "d", "test of d", {"wer": 0.1}, 4)
    assert f"trained with\nds2hub: {named} →" in render_card(model, info).text


def test_a_recogniser_whose_network_does_not_fit_its_features_is_refused_when_built():
    """40 mel filters into a network built for 161 bins: refused with both numbers, not a shape
    error at the first transcription."""
    with pytest.raises(ConfigError, match="n_features=161 but the features have 40 bins"):
        SpeechRecognizer({}, {"n_mels": 40}, CharTokenizer())
