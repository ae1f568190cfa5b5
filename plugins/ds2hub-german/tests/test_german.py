"""The ds2hub-german plugin as an installed package: its entry points, normaliser, tokenizer,
corpus script and recipes (run through the real `ds2hub fit` on a corpus the script makes).

Run from the repository root after `pip install plugins/ds2hub-german`:
    pytest plugins/ds2hub-german/tests
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from ds2hub_german import GermanTokenizer, normalize_german, spell_numbers
from ds2hub_german.make_corpus import DIGITS, PHRASES, write_metadata
from huggingface_hub import ModelCard

import ds2hub
from ds2hub.cli.main import main
from ds2hub.decoding import DecoderConfig
from ds2hub.tokenizers import available_tokenizers, load_tokenizer

RECIPES = files("ds2hub_german") / "recipes"
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None,
    reason="needs espeak-ng and ffmpeg",
)


@pytest.fixture(autouse=True)
def _offline(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hf_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setenv("HF_HOME", str(cache / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        (
            "Grüß Gott! Es ist 5 vor 12 – auf der Straße.",
            "grüß gott es ist fünf vor zwölf auf der straße",
        ),
        ("ÄPFEL, Öl und Übermut", "äpfel öl und übermut"),
        ("Mu\u0308ller", "müller"),  # u + combining diaeresis is composed into ü
        ("Gleis 21", "gleis einundzwanzig"),
        ("C'est «très» bien", "c'est tr s bien"),  # letters outside German are not written
    ],
)
def test_normalize_german(raw, normalised):
    assert normalize_german(raw) == normalised


def test_spell_numbers_keeps_the_rest():
    assert spell_numbers("Wagen 3, Platz 47") == "Wagen drei, Platz siebenundvierzig"


def test_tokenizer_round_trip_and_registration(tmp_path):
    tokenizer = GermanTokenizer()
    assert tokenizer.vocab_size == 33
    ids = tokenizer.encode("Fünf Straßen, 2 Öfen")
    assert tokenizer.decode(ids) == "fünf straßen zwei öfen"
    assert tokenizer.reference("3 Äpfel") == tokenizer.reference("drei äpfel") == "drei äpfel"
    # The English characters keep their ids, so fine-tuning keeps their output rows.
    assert tokenizer.vocab[:29] == ds2hub.CharTokenizer().vocab
    assert available_tokenizers()["german"] is GermanTokenizer
    tokenizer.save(tmp_path)
    assert load_tokenizer(tmp_path).vocab == tokenizer.vocab
    # What decoders and cards read, inherited from CharTokenizer but for the language.
    assert (tokenizer.lm_unit, tokenizer.word_boundary, tokenizer.language) == ("word", " ", "de")


def test_entry_points_name_this_package():
    def group(name: str) -> dict:
        return {
            ep.name: ep for ep in entry_points(group=name) if ep.value.startswith("ds2hub_german")
        }

    assert group("ds2hub.recipes")["german"].load().__name__ == "ds2hub_german"
    assert group("ds2hub.tokenizers")["german"].load() is GermanTokenizer
    assert group("ds2hub.normalizers")["german"].load() is normalize_german


def test_recipes_parse_and_describe_themselves():
    recipes = sorted(p for p in RECIPES.iterdir() if p.name.endswith(".yaml"))
    assert [p.name for p in recipes] == ["german_digits.yaml", "german_digits_finetune.yaml"]
    for recipe in recipes:
        text = recipe.read_text(encoding="utf-8")
        assert text.startswith("# ") and len(text.splitlines()[0]) > 20
        config = yaml.safe_load(text)
        assert config["data"]["tokenizer"]["class_path"] == "ds2hub_german.GermanTokenizer"
        loggers = [logger["class_path"] for logger in config["trainer"]["logger"]]
        assert loggers == [  # CSV always, W&B when installed: as ds2hub's recipes (CONTRIBUTING)
            "lightning.pytorch.loggers.CSVLogger",
            "ds2hub.training.loggers.wandb_if_installed",
        ]
    scratch, finetune = (yaml.safe_load(p.read_text(encoding="utf-8")) for p in recipes)
    # The comparison in the README: the same recipe apart from the start and the run folder.
    assert finetune["model"].pop("finetune")["source"]
    assert finetune["model"] == scratch["model"] and finetune["data"] == scratch["data"]


def test_corpus_transcripts_are_written_in_the_tokenizer_alphabet():
    tokenizer = GermanTokenizer()
    for text in [*DIGITS, *PHRASES]:
        assert tokenizer.normalize(text) == text and not tokenizer.uncovered(text)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        pytest.skip("needs espeak-ng and ffmpeg")
    out = tmp_path_factory.mktemp("german") / "german-digits"
    subprocess.run(
        [sys.executable, "-m", "ds2hub_german.make_corpus", "--out", str(out)]
        + ["--train", "8", "--validation", "2", "--test", "2"],
        check=True,
    )
    return out


@needs_espeak
def test_make_corpus_writes_an_audiofolder_with_unheard_voices(corpus):
    voices = {}
    for split, n in (("train", 8), ("validation", 2), ("test", 2)):
        with open(corpus / split / "metadata.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        assert len(rows) == n
        info = sf.info(str(corpus / split / rows[0]["file_name"]))
        assert info.samplerate == 16000 and info.duration > 0.2
        voices[split] = {row["voice"] for row in rows}
    assert not voices["train"] & (voices["validation"] | voices["test"])
    # It never writes into a folder that holds something.
    again = subprocess.run(
        [sys.executable, "-m", "ds2hub_german.make_corpus", "--out", str(corpus), "--train", "1"],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "not empty" in again.stderr


def _fast_dev_run(recipe: str, corpus: Path, root: Path, *options: str) -> int:
    """`ds2hub fit --config <recipe name>`, as users run it."""
    return main(
        [
            "fit", "--config", recipe, "--data.path", str(corpus),
            "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(root),
            "--trainer.logger", "false", "--data.num_workers", "0", *options,
        ]
    )  # fmt: skip


@needs_espeak
def test_scratch_recipe_runs(corpus, tmp_path):
    assert _fast_dev_run("german_digits", corpus, tmp_path) == 0


@needs_espeak
def test_finetune_recipe_starts_from_an_english_model(corpus, tmp_path, capsys):
    config = yaml.safe_load((RECIPES / "german_digits_finetune.yaml").read_text(encoding="utf-8"))
    english = ds2hub.SpeechRecognizer(
        arch=config["model"]["arch"], tokenizer=ds2hub.CharTokenizer()
    )
    english.save_pretrained(tmp_path / "english")
    options = ("--model.finetune.source", str(tmp_path / "english"))
    assert _fast_dev_run("german_digits_finetune", corpus, tmp_path / "run", *options) == 0
    # An English model with another network is refused, naming the setting.
    other = {**config["model"]["arch"], "rnn_hidden": 64}
    ds2hub.SpeechRecognizer(arch=other, tokenizer=ds2hub.CharTokenizer()).save_pretrained(
        tmp_path / "small"
    )
    options = ("--model.finetune.source", str(tmp_path / "small"))
    assert _fast_dev_run("german_digits_finetune", corpus, tmp_path / "bad", *options) == 2
    assert "rnn_hidden" in capsys.readouterr().err


@needs_espeak
def test_a_transcript_null_survives_loading(corpus, tmp_path):
    # pandas reads the CSV word `null` as a missing value; metadata.jsonl keeps it.
    folder = tmp_path / "train"
    folder.mkdir()
    shutil.copy(next((corpus / "train").glob("*.opus")), folder / "a.opus")
    write_metadata(
        folder, [{"file_name": "a.opus", "text": "null", "voice": "de", "duration": 1.0}]
    )
    dataset = datasets.load_dataset("audiofolder", data_dir=str(tmp_path), split="train")
    assert dataset["text"] == ["null"]


# --- the user's path: fit, push, `ds2hub lm build`, decode with the LM ------------------------------
LM_TEXT = "Grüße aus München!\nZwölf grüne Äpfel.\nGrüße an alle.\nGuten Morgen, München.\n"


@pytest.fixture(scope="module")
def noise_corpus(tmp_path_factory) -> Path:
    """A 12-utterance audiofolder of noise with German transcripts: enough for a few `fit`
    steps without espeak-ng (what the model learns does not matter here)."""
    out = tmp_path_factory.mktemp("noise") / "corpus"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("validation", 2), ("test", 2)):
        folder = out / split
        folder.mkdir(parents=True)
        rows = []
        for i in range(n):
            sf.write(folder / f"{i}.wav", 0.1 * rng.standard_normal(16000), 16000)
            text = PHRASES[i % len(PHRASES)]
            rows.append({"file_name": f"{i}.wav", "text": text, "voice": "noise", "duration": 1.0})
        write_metadata(folder, rows)
    return out


def _emissions(vocab: list[str], frames: list[dict[str, float]]) -> torch.Tensor:
    """(1, T, V) log-probabilities from per-frame token probabilities (the rest share 1e-4)."""
    probs = torch.full((len(frames), len(vocab)), 1e-4)
    for t, frame in enumerate(frames):
        for token, p in frame.items():
            probs[t, vocab.index(token)] = p
    return (probs / probs.sum(-1, keepdim=True)).log()[None]


def test_a_german_model_decodes_with_an_lm_from_lm_build_and_pushes_its_card_as_german(
    noise_corpus, tmp_path, capsys
):
    root = tmp_path / "run"
    status = main(
        [
            "fit", "--config", "german_digits", "--data.path", str(noise_corpus),
            "--trainer.max_steps", "2", "--trainer.val_check_interval", "1.0",
            "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(root),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--data.batch_size", "4", "--data.num_workers", "0",
        ]
    )  # fmt: skip
    assert status == 0
    checkpoint = root / "checkpoints" / "last.ckpt"

    # `push` names the language from the tokenizer: no --language.
    folder = tmp_path / "hub"
    argv = ["push", str(checkpoint), "--repo-id", "someone/de", "--output-dir", str(folder)]
    capsys.readouterr()
    assert main([*argv, "--dry-run", "--no-eval"]) == 0, capsys.readouterr().err
    card = ModelCard.load(folder / "README.md")
    assert card.data.language == ["de"] and "(German)" in card.text

    # A word LM built by the console command, normalised by the model's own tokenizer.
    (tmp_path / "de.txt").write_text(LM_TEXT, encoding="utf-8")
    lm = tmp_path / "lm"
    args = ["lm", "build", str(tmp_path / "de.txt"), "--order", "2", "--unit", "word"]
    assert main([*args, "--tokenizer", str(folder), "--out", str(lm)]) == 0
    words = set((lm / "unigrams.txt").read_text(encoding="utf-8").split())
    assert {"grüße", "münchen", "äpfel", "zwölf"} <= words

    # Both backends, on emissions that spell "grüße münchen" with the ü of münchen heard as u.
    model = ds2hub.from_pretrained(folder)
    frames: list[dict[str, float]] = []
    for ch in "grüße münchen":
        frames += [{ch: 0.9}, {"<blank>": 0.9}]
    frames[2 * "grüße m".index("m") + 2] = {"u": 0.5, "ü": 0.4}
    logits = _emissions(model.tokenizer.vocab, frames)
    lengths = torch.tensor([logits.shape[1]])
    assert model.text_decoder()(logits, lengths) == ["grüße munchen"]  # greedy keeps the slip
    for backend in ("flashlight", "pyctcdecode"):
        config = DecoderConfig(backend=backend, lm=str(lm / "lm.arpa"), beam_size=16)
        assert model.text_decoder(config)(logits, lengths) == ["grüße münchen"], backend

        # And through `ds2hub transcribe`: the lexicon search writes only the LM's words.
        capsys.readouterr()
        audio = next((noise_corpus / "test").glob("*.wav"))
        argv = ["transcribe", str(audio), "--model", str(folder), "--lm", str(lm / "lm.arpa")]
        assert main([*argv, "--backend", backend, "--beam-size", "8"]) == 0
        transcript = capsys.readouterr().out.rstrip("\n").split("\t")[-1]
        if backend == "flashlight":
            assert set(transcript.split()) <= words
