"""Fine-tuning from a published model (`model.finetune`), through the real `ds2hub fit` and
`ds2hub push` paths: the start is a folder `ds2hub push` wrote, loaded with `from_pretrained`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml

import ds2hub
from ds2hub.cli.main import main, run_cli
from ds2hub.publish.card import CardInfo, render_card
from ds2hub.publish.push import export
from ds2hub.tokenizers.chars import ENGLISH_ALPHABET
from ds2hub.training.finetune import FineTuneConfig

CONF = Path(__file__).parent / "conf" / "digits_tiny.yaml"
# A "new language": different ids for the shared characters, and four the English model never wrote.
NEW_ALPHABET = [*"äöüß", *reversed(ENGLISH_ALPHABET)]
BODY = ("conv.", "rnns.")


class WeightRecorder(L.Callback):
    """Keeps a copy of the network's parameters when training starts (after the fine-tuning weights
    were copied in) and after every optimizer step, keyed by `trainer.global_step`."""

    def __init__(self) -> None:
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def _take(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.snapshots[trainer.global_step] = {
            name: p.detach().clone() for name, p in pl_module.model.named_parameters()
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self._take(trainer, pl_module)


def _fit(data: Path, root: Path, *options: str, overlay: dict[str, Any] | None = None, argv=False):
    """`ds2hub fit` on the tiny digits config; with `argv=True` returns the arguments instead."""
    root.mkdir(parents=True, exist_ok=True)
    extra = root / "overlay.yaml"
    extra.write_text(yaml.safe_dump(overlay or {}, allow_unicode=True))
    args = [
        "fit", "--config", str(CONF), "--config", str(extra), "--data.path", str(data),
        "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
        *options,
    ]  # fmt: skip
    return args if argv else run_cli(args)


@pytest.fixture(scope="module")
def source(tiny_digits, tmp_path_factory) -> Path:
    """A hub folder written by `ds2hub push --dry-run` from a few steps of English training."""
    root = tmp_path_factory.mktemp("english")
    cli = _fit(tiny_digits, root / "run", "--trainer.max_steps", "3")
    folder = root / "english-hub"
    status = main(
        [
            "push", cli.trainer.checkpoint_callback.last_model_path, "--repo-id", "me/english",
            "--no-eval", "--dry-run", "--output-dir", str(folder),
        ]
    )  # fmt: skip
    assert status == 0 and (folder / "model.safetensors").is_file()
    return folder


def _german_overlay(source: Path, **finetune: Any) -> dict[str, Any]:
    return {
        "trainer": {
            "callbacks": [
                {"class_path": "test_finetune.WeightRecorder"},
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True},
                },
            ]
        },
        "model": {"finetune": {"source": str(source), **finetune}},
        "data": {
            "tokenizer": {
                "class_path": "ds2hub.tokenizers.CharTokenizer",
                "init_args": {"alphabet": NEW_ALPHABET},
            }
        },
    }


def test_finetune_copies_body_new_output_freezes_then_trains(source, tiny_digits, tmp_path):
    cli = _fit(
        tiny_digits,
        tmp_path,
        "--trainer.max_steps", "4",
        overlay=_german_overlay(source, freeze_steps=2),
    )  # fmt: skip
    recorder = next(c for c in cli.trainer.callbacks if isinstance(c, WeightRecorder))
    english = ds2hub.from_pretrained(source).model.state_dict()
    start = recorder.snapshots[0]

    # Step 0: every conv and recurrent weight is the English model's.
    body = [name for name in start if name.startswith(BODY)]
    assert body and all(torch.equal(start[n], english[n]) for n in body)
    # The output layer is the new tokenizer's size; shared characters keep their English rows
    # (under their new ids), the four new ones start fresh.
    assert (
        start["output.weight"].shape[0]
        == len(NEW_ALPHABET) + 1
        != english["output.weight"].shape[0]
    )
    english_ids = {tok: i for i, tok in enumerate(["<blank>", *ENGLISH_ALPHABET])}
    for new_id, token in enumerate(["<blank>", *NEW_ALPHABET]):
        same = (
            torch.equal(
                start["output.weight"][new_id], english["output.weight"][english_ids[token]]
            )
            if token in english_ids
            else None
        )
        assert same is not False, token
        if token not in english_ids:
            assert not any(
                torch.equal(start["output.weight"][new_id], row) for row in english["output.weight"]
            )

    # Frozen for two optimizer steps: conv and recurrent weights unchanged, the output layer moves.
    for step in (1, 2):
        assert all(torch.equal(recorder.snapshots[step][n], start[n]) for n in body), step
        assert not torch.equal(recorder.snapshots[step]["output.weight"], start["output.weight"])
    # Then unfrozen: they train.
    assert not all(torch.equal(recorder.snapshots[4][n], start[n]) for n in body)
    assert (
        sum(not torch.equal(recorder.snapshots[3][n], recorder.snapshots[2][n]) for n in body) > 0
    )

    # The result's card says what it was fine-tuned from.
    card_dir = tmp_path / "german-hub"
    export(
        cli.trainer.checkpoint_callback.last_model_path,
        card_dir,
        "me/german",
        run_eval=False,
        language="de",
    )
    assert f"Fine-tuned from `{source}`" in (card_dir / "README.md").read_text()
    assert ds2hub.from_pretrained(card_dir).tokenizer.vocab[1:] == NEW_ALPHABET


def test_without_freeze_steps_everything_trains_from_the_first_step(source, tiny_digits, tmp_path):
    cli = _fit(tiny_digits, tmp_path, "--trainer.max_steps", "1", overlay=_german_overlay(source))
    recorder = next(c for c in cli.trainer.callbacks if isinstance(c, WeightRecorder))
    before, after = recorder.snapshots[0], recorder.snapshots[1]
    for prefix in BODY:
        assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith(prefix))


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        # A 4 kHz band gives 81 spectrogram bins; the recipe's network is sized for them.
        (
            ["--data.features.max_frequency_hz", "4000", "--model.arch.n_features", "81"],
            "max_frequency_hz",
        ),
        (["--data.features.hop_ms", "20"], "hop_ms"),
        (["--model.arch.rnn_hidden", "48"], "rnn_hidden"),
        (["--model.arch.rnn_type", "lstm"], "rnn_type"),
    ],
    ids=["band", "hop", "hidden-size", "rnn-type"],
)
def test_mismatched_front_end_or_architecture_is_refused_naming_it(
    options, setting, source, tiny_digits, tmp_path, capsys
):
    args = _fit(
        tiny_digits, tmp_path, "--trainer.max_steps", "1", *options,
        overlay=_german_overlay(source), argv=True,
    )  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ds2hub: error: cannot fine-tune from"), err
    assert setting in err[0] and str(source) in err[0]
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before any training


@pytest.mark.parametrize(
    ("finetune", "message"),
    [
        ({"source": "./no/such/model"}, "does not exist"),
        ({"source": "english-digits"}, "is not a local folder or file"),  # a hub id, offline
        ({"freeze": ["conv", "lstm"]}, "freeze names ['lstm']"),
    ],
    ids=["missing-source", "offline-hub-id", "unknown-layer"],
)
def test_bad_finetune_settings_are_one_line_errors(
    finetune, message, source, tiny_digits, tmp_path, capsys
):
    overlay = _german_overlay(source)
    overlay["model"]["finetune"].update(finetune)
    args = _fit(tiny_digits, tmp_path, "--trainer.max_steps", "1", overlay=overlay, argv=True)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_card_links_a_hub_base_model():
    model = ds2hub.SpeechRecognizer(
        arch=ds2hub.DeepSpeech2Config(conv_channels=(4, 4), rnn_layers=1, rnn_hidden=16).to_dict(),
        tokenizer=ds2hub.CharTokenizer(),
    )
    info = CardInfo(
        repo_id="me/german", language="de", dataset_id="d", dataset_split="test", metrics={},
        eval_utterances=0, finetuned_from=FineTuneConfig("me/english", revision="v1").description,
    )  # fmt: skip
    card = render_card(model, info)
    assert card.data.base_model == "me/english"
    assert "Fine-tuned from `me/english@v1`" in card.text
    local = render_card(model, CardInfo(**{**info.__dict__, "finetuned_from": "./english-hub"}))
    assert local.data.base_model is None and "Fine-tuned from `./english-hub`" in local.text


def test_resumed_finetune_continues_from_its_checkpoint(source, tiny_digits, tmp_path):
    first = _fit(
        tiny_digits, tmp_path / "a", "--trainer.max_steps", "2", overlay=_german_overlay(source)
    )
    ckpt = first.trainer.checkpoint_callback.last_model_path
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["ds2hub"]["finetuned_from"] == str(source)
    resumed = _fit(
        tiny_digits, tmp_path / "b", "--trainer.max_steps", "3", "--trainer.max_epochs", "3",
        "--ckpt_path", ckpt,
        overlay=_german_overlay(source),
    )  # fmt: skip
    recorder = next(c for c in resumed.trainer.callbacks if isinstance(c, WeightRecorder))
    start = recorder.snapshots[2]  # training starts at step 2 with the checkpoint's weights
    assert all(torch.equal(start[n], saved["state_dict"][f"model.{n}"]) for n in start)
