"""The real `ds2hub` CLI, in-process, on shipped digit audio."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from ds2hub.cli.main import main, run_cli
from ds2hub.decoding import DecoderConfig
from ds2hub.decoding.flashlight import FlashlightDecoder
from ds2hub.inference.recognizer import from_pretrained
from ds2hub.training.checkpoint import AtomicCheckpointIO
from ds2hub.training.task import DeepSpeech2Task

CONF = Path(__file__).parent / "conf" / "digits_tiny.yaml"
REPO = Path(__file__).resolve().parents[1]


def run(*args: str, data: Path, root: Path):
    subcommand, *options = args
    return run_cli(
        [
            subcommand,
            "--config",
            str(CONF),  # first: later options override the recipe
            "--data.path",
            str(data),
            "--trainer.default_root_dir",
            str(root),
            "--trainer.logger.init_args.save_dir",
            str(root / "logs"),
            *options,
        ]
    )


def test_fit_validate_test_predict_and_resume(tiny_digits, tmp_path):
    cli = run("fit", "--trainer.max_steps", "3", data=tiny_digits, root=tmp_path)
    assert cli.trainer.global_step == 3
    assert cli.model.model.vocab_size == 29  # from the tokenizer, never written in the recipe
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    assert ckpt.exists()

    # Resume continues the same run: step counter, optimizer state and weights come back.
    resumed = run(
        "fit",
        "--trainer.max_steps",
        "7",
        "--trainer.max_epochs",
        "3",
        "--ckpt_path",
        str(ckpt),
        data=tiny_digits,
        root=tmp_path,
    )
    assert resumed.trainer.global_step == 7

    metrics = run(
        "validate", "--ckpt_path", str(ckpt), data=tiny_digits, root=tmp_path
    ).trainer.callback_metrics
    assert {"val/wer", "val/cer", "val/loss"} <= set(metrics)
    assert torch.isfinite(metrics["val/loss"])

    # Decoding is chosen at evaluation time: the command line wins over the checkpoint.
    words = REPO / "recipes" / "digits" / "words.txt"
    beam = run(
        "validate", "--ckpt_path", str(ckpt), "--model.beam_search.lexicon", str(words),
        data=tiny_digits, root=tmp_path,
    )  # fmt: skip
    assert beam.model.beam_search is not None and beam.model.beam_search.lexicon == str(words)
    assert torch.isfinite(beam.trainer.callback_metrics["val/cer"])

    tested = run(
        "test", "--ckpt_path", str(ckpt), data=tiny_digits, root=tmp_path
    ).trainer.callback_metrics
    assert 0.0 <= float(tested["test/cer"]) and "test/wer" in tested

    cli = run(
        "predict",
        "--ckpt_path",
        str(ckpt),
        "--trainer.callbacks",
        "[]",
        data=tiny_digits,
        root=tmp_path,
    )
    predictions = cli.trainer.predict_loop.predictions
    assert sum(len(batch) for batch in predictions) == 4
    assert all(isinstance(text, str) for batch in predictions for text in batch)


def test_checkpoint_loads_without_the_cli_and_decodes_as_its_run_validated(
    tiny_digits, tmp_path, monkeypatch, caplog
):
    words = tmp_path / "words.txt"  # relative in the recipe, as recipes name them
    words.write_text((REPO / "recipes" / "digits" / "words.txt").read_text())
    monkeypatch.chdir(tmp_path)
    cli = run(
        "fit", "--trainer.max_steps", "2", "--model.beam_search.lexicon", "words.txt",
        "--model.beam_search.beam_size", "4", data=tiny_digits, root=tmp_path,
    )  # fmt: skip
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # kill-safe saves
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    task = DeepSpeech2Task.load_from_checkpoint(ckpt, map_location="cpu")
    assert task.tokenizer.vocab == cli.model.tokenizer.vocab
    for a, b in zip(task.state_dict().values(), cli.model.state_dict().values()):
        assert torch.equal(a, b)
    # From another folder, the checkpoint's recogniser decodes with the recipe's beam search by
    # default, and says so.
    monkeypatch.chdir(REPO)
    with caplog.at_level("WARNING"):
        recognizer = from_pretrained(ckpt)
    assert recognizer.decoding == DecoderConfig(lexicon=str(words.resolve()), beam_size=4)
    assert "decodes as its run validated" in caplog.text
    assert isinstance(recognizer.text_decoder(), FlashlightDecoder)
    assert not isinstance(recognizer.text_decoder("greedy"), FlashlightDecoder)
    audio = sorted((REPO / "recipes" / "digits" / "test").glob("*.opus"))[:4]
    lexicon = set(words.read_text().split())
    assert all(set(text.split()) <= lexicon for text in recognizer.transcribe(audio))
    # `ds2hub transcribe` says so too, naming its own switch for best path.
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["transcribe", "--model", str(ckpt), str(audio[0])]) == 0
    assert "decodes as its run validated" in caplog.text and "--greedy" in caplog.text
    # Its lexicon gone: greedy, with a warning saying why (not a failure to load).
    words.unlink()
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert from_pretrained(ckpt).decoding is None
    assert "files are gone" in caplog.text


def test_a_checkpoint_whose_settings_do_not_parse_is_one_line(tiny_digits, tmp_path, capsys):
    """`--ckpt_path` re-reads the checkpoint's hyperparameters; ones this version does not know
    (an older or newer ds2hub) are one line and status 2, not a traceback."""
    cli = run("fit", "--trainer.max_steps", "1", data=tiny_digits, root=tmp_path)
    ckpt = torch.load(cli.trainer.checkpoint_callback.last_model_path, weights_only=False)
    ckpt["hyper_parameters"]["no_such_setting"] = 1
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    capsys.readouterr()
    args = ["validate", "--config", str(CONF), "--data.path", str(tiny_digits)]
    assert main([*args, "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("ds2hub: error: "), err


def test_print_config_reproduces_a_run(tiny_digits, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run("fit", "--trainer.max_steps", "2", "--print_config", data=tiny_digits, root=tmp_path)
    printed = capsys.readouterr().out
    config = yaml.safe_load(printed)
    assert config["data"]["path"] == str(tiny_digits)
    assert config["model"]["arch"]["rnn_hidden"] == 32
    saved = tmp_path / "config.yaml"
    saved.write_text(printed)
    cli = run_cli(["fit", "--config", str(saved)])
    assert cli.trainer.global_step == 2


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_prints_its_config(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "model:" in capsys.readouterr().out


def test_digits_recipe_fast_dev_run(tmp_path, monkeypatch):
    """The shipped demo recipe itself runs one batch of each loop on the shipped data."""
    monkeypatch.chdir(tmp_path)  # the recipe's relative output folders land here
    cli = run_cli(
        [
            "fit", "--config", str(REPO / "recipes" / "digits.yaml"),
            "--data.path", str(REPO / "recipes" / "digits"),
            "--data.num_workers", "0",
            "--trainer.fast_dev_run", "1",
        ]
    )  # fmt: skip
    assert cli.trainer.state.finished


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--model.arch.rnn_type", "rnn", "--model.arch.batch_norm_placement", "projection"],
         {"batch_norm_placement": "projection"}),
        (["--model.arch.conv_kernel_freq", "[0, 0]", "--model.arch.conv_stride_freq", "[1, 1]"],
         {"conv_kernel_freq": (0, 0)}),
    ],
    ids=["bn-on-w-x", "time-only-1d-conv"],
)  # fmt: skip
def test_the_papers_variants_train_from_the_command_line(tiny_digits, tmp_path, options, expected):
    """The architecture options the training-findings experiments set (BN on W x, 1D convs) go
    through `fit` and come back from the checkpoint."""
    cli = run("fit", "--trainer.max_steps", "2", *options, data=tiny_digits, root=tmp_path)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    config = from_pretrained(cli.trainer.checkpoint_callback.last_model_path).model.config
    assert {key: getattr(config, key) for key in expected} == expected


def test_a_strategy_given_as_an_object_keeps_kill_safe_checkpoints(tiny_digits, tmp_path):
    cli = run(
        "fit", "--trainer.max_steps", "1",
        "--trainer.strategy", "lightning.pytorch.strategies.SingleDeviceStrategy",
        "--trainer.strategy.device", "cpu",
        data=tiny_digits, root=tmp_path,
    )  # fmt: skip
    assert type(cli.trainer.strategy).__name__ == "SingleDeviceStrategy"
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
