"""The installed `ds2hub` console script, as a shell runs it: exit status 0 on success (so `&&`
chains work), 2 and one `ds2hub: error:` line for a user's mistake, and a training killed with
SIGKILL resumes from its last checkpoint."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ds2hub.cli.args import LIGHTNING_OPTIONS
from ds2hub.cli.main import main
from ds2hub.errors import UsageError

CONF = Path(__file__).parent / "conf"
DS2HUB = Path(sys.executable).parent / "ds2hub"  # the console script `pip install` made


def fit_command(data: Path, root: Path, *options: str) -> list[str]:
    return [
        str(DS2HUB), "fit", "--config", str(CONF / "digits_tiny.yaml"),
        "--config", str(CONF / "every_step.yaml"), "--data.path", str(data),
        "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
        *options,
    ]  # fmt: skip


def checkpoint_step(path: Path) -> int:
    # weights_only: ds2hub's checkpoints hold tensors and plain data only.
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def wait_for_steps(folder: Path, steps: int, process: subprocess.Popen, seconds: float) -> None:
    """Until a step checkpoint of at least `steps` exists (`epoch=0-step=3.ckpt`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = [int(p.stem.rsplit("=", 1)[1]) for p in folder.glob("epoch=*-step=*.ckpt")]
        if max(done, default=0) >= steps:
            return
        assert process.poll() is None, "the training ended before it could be killed"
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of step {steps} within {seconds} s")


def test_a_killed_training_resumes_from_its_last_checkpoint(tiny_digits, tmp_path):
    log = (tmp_path / "killed.log").open("w")
    training = subprocess.Popen(
        fit_command(tiny_digits, tmp_path), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_steps(tmp_path / "ckpts", 3, training, seconds=180)
    finally:
        os.kill(training.pid, signal.SIGKILL)  # no cleanup, no final save: a crash or an OOM kill
        training.wait()
    assert training.returncode == -signal.SIGKILL

    last = tmp_path / "ckpts" / "last.ckpt"
    killed_at = checkpoint_step(last)  # loads: complete, whatever the kill interrupted
    assert killed_at >= 2  # last.ckpt is written just after each step's own checkpoint

    # Resume through a shell, as a user chains commands: `&&` runs only after exit status 0.
    command = fit_command(  # (--ckpt-path: ds2hub's spelling of Lightning's --ckpt_path)
        tiny_digits, tmp_path, "--ckpt-path", str(last), "--trainer.max_steps", str(killed_at + 2)
    )
    resumed = subprocess.run(
        f"{shlex.join(command)} && echo chained-ok",
        shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().endswith("chained-ok")
    assert checkpoint_step(last) == killed_at + 2  # continued the count, did not start over


@pytest.mark.parametrize(
    ("signum", "options"),
    [
        (signal.SIGTERM, []),
        (signal.SIGINT, []),
        # validation after every step: the stop finds a validation loader's workers open
        (
            signal.SIGTERM,
            [
                "--trainer.val_check_interval",
                "1",
                "--trainer.check_val_every_n_epoch",
                "null",
                "--data.batch_size",
                "1",
            ],
        ),
    ],
    ids=["SIGTERM", "SIGINT", "SIGTERM, validating often"],
)
def test_a_signal_to_a_training_writes_a_checkpoint_and_exits_128_plus_it(
    signum, options, tiny_digits, tmp_path
):
    """A job scheduler's stop (SIGTERM) or Ctrl+C (SIGINT), sent to the whole process group as
    they are, DataLoader worker included: a checkpoint to resume from, status 128 + the signal
    (so `&&` chains stop), and no traceback."""
    log = tmp_path / "stopped.log"
    with log.open("w") as out:
        training = subprocess.Popen(
            fit_command(tiny_digits, tmp_path, "--data.num_workers", "1", *options),
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_steps(tmp_path / "ckpts", 2, training, seconds=180)
            os.killpg(training.pid, signum)
            training.wait(timeout=120)
        finally:
            if training.poll() is None:
                os.killpg(training.pid, signal.SIGKILL)
    output = log.read_text()
    assert training.returncode == 128 + signum, output[-3000:]
    assert "Traceback" not in output and "killed by signal" not in output, output[-3000:]
    assert output.count("GPU available:") == 1, output[:3000]  # each log line once
    stopped = tmp_path / "ckpts" / "interrupted.ckpt"
    assert checkpoint_step(stopped) >= 2 and f"wrote {stopped}" in output


def test_a_mistake_exits_2_with_one_line_and_no_traceback(tmp_path):
    missing = tmp_path / "no-such-corpus"
    result = subprocess.run(
        [str(DS2HUB), "fit", "--config", str(CONF / "digits_tiny.yaml"), "--data.path", str(missing)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ds2hub: error: data path {str(missing)!r} (data.path) does not exist"
    ]


# The same mistakes in-process (`main` is what the console script calls), without paying for a
# Python start each.
@pytest.fixture
def mistakes(tiny_digits, tmp_path) -> dict[str, list[str]]:
    fit = ["fit", "--config", str(CONF / "digits_tiny.yaml"), "--data.path", str(tiny_digits)]
    return {
        "missing --config": ["fit", "--config", str(tmp_path / "recipe.yaml")],
        "missing data path": [*fit[:3], "--data.path", str(tmp_path / "corpus")],
        "missing --ckpt_path": [*fit, "--ckpt_path", str(tmp_path / "last.ckpt")],
        "missing audio": ["transcribe", "--model", str(tmp_path / "m"), str(tmp_path / "a.wav")],
        "missing model": ["transcribe", "--model", str(tmp_path / "m"), str(CONF / "wandb.yaml")],
        "missing push checkpoint": ["push", str(tmp_path / "x.ckpt"), "--repo-id", "a/b"],
        "folder as audio": ["transcribe", "--model", "digits-demo", str(tmp_path)],
    }


@pytest.mark.parametrize(
    "mistake",
    [
        "missing --config",
        "missing data path",
        "missing --ckpt_path",
        "missing audio",
        "missing model",
        "missing push checkpoint",
        "folder as audio",
    ],
)
def test_user_mistakes_give_one_line(mistake, mistakes, tmp_path, capsys):
    assert main(mistakes[mistake]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("ds2hub: error: "), err
    assert str(tmp_path) in err  # names what is missing
    if mistake == "folder as audio":  # says what is wrong with it, as `transcribe()` does
        assert err.rstrip().endswith("is a folder, not an audio file"), err


def test_features_the_network_cannot_take_give_one_line(tiny_digits, capsys):
    """40 mel filters into the recipe's 161-bin network: refused before training, both named."""
    fit = ["fit", "--config", str(CONF / "digits_tiny.yaml"), "--data.path", str(tiny_digits)]
    assert main([*fit, "--data.features.n_mels", "40"]) == 2
    err = capsys.readouterr().err  # (after Lightning's "Seed set" line)
    assert "Traceback" not in err and err.splitlines()[-1] == (
        "ds2hub: error: arch.n_features=161 but the features have 40 bins"
    ), err


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        (["--data.features.sample_rate", "8000"], "features.sample_rate must be 16000"),
        (["--data.features.hop_ms", "0"], "hop_ms 0"),
        (["--data.features.window_ms", "0.05"], "window of 1 samples"),
        (["--data.features.hop_ms", "30"], "hop 1 to the window's length"),
    ],
)
def test_a_front_end_the_dsp_cannot_compute_is_refused_in_one_line(
    setting, named, tiny_digits, capsys
):
    """Refused when the recipe is read, before any data is loaded, as one line with status 2."""
    fit = ["fit", "--config", str(CONF / "digits_tiny.yaml"), "--data.path", str(tiny_digits)]
    assert main([*fit, *setting]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("ds2hub: error: "), err
    assert named in err.splitlines()[-1], err


def test_a_corpus_file_that_is_not_utf8_is_one_line(tiny_digits, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    for split in ("train", "validation"):
        (corpus / split).mkdir(parents=True)
        for f in (tiny_digits / split).iterdir():
            (corpus / split / f.name).write_bytes(f.read_bytes())
    metadata = corpus / "train" / "metadata.csv"
    first = metadata.read_text().splitlines()[1].split(",")[0]
    metadata.write_bytes(metadata.read_bytes() + f"{first},caf".encode() + b"\xe9 one\n")
    fit = ["fit", "--config", str(CONF / "digits_tiny.yaml"), "--data.path", str(corpus)]
    assert main([*fit, "--trainer.default_root_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("ds2hub: error: "), err
    assert "not UTF-8" in err.splitlines()[-1] and "[train]" in err.splitlines()[-1]


def test_a_shipped_recipe_runs_without_a_logger(tmp_path, monkeypatch):
    """`--trainer.logger false` on the digits recipe, whose LearningRateMonitor needs a logger:
    the monitor is left out and the run goes on."""
    monkeypatch.chdir(tmp_path)
    fit = ["fit", "--config", "digits", "--trainer.logger", "false", "--trainer.max_steps", "1",
           "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    assert main(fit) == 0


def test_debug_variable_shows_the_traceback(mistakes, monkeypatch):
    monkeypatch.setenv("DS2HUB_DEBUG", "1")
    with pytest.raises(UsageError):
        main(mistakes["missing data path"])


@pytest.mark.parametrize(
    ("bad", "near"),
    [
        (["--trainer.max_stepz", "2"], "--trainer.max_steps"),
        (["--trainer.max_epoch", "1"], "--trainer.max_epochs"),  # abbreviations are off
        (["--config", "BAD_KEY"], "trainer.max_steps"),
    ],
    ids=["misspelt", "abbreviated", "misspelt in a recipe"],
)
def test_an_unknown_option_is_one_line_naming_the_closest(bad, near, tiny_digits, tmp_path, capsys):
    if bad[-1] == "BAD_KEY":  # a recipe with a misspelt key
        recipe = tmp_path / "typo.yaml"
        recipe.write_text("trainer:\n  max_stepz: 2\n")
        bad = ["--config", str(recipe)]
    fit = ["fit", "--config", str(CONF / "digits_tiny.yaml"), "--data.path", str(tiny_digits)]
    assert main([*fit, *bad]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("ds2hub: error: "), err
    assert "max_step" in err or "max_epoch" in err
    if near:
        assert f"(did you mean {near}?)" in err


def test_help_lists_every_command_version_and_typos_of_other_commands():
    from importlib.metadata import version

    from ds2hub.cli.main import EXTRA_COMMANDS

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(DS2HUB), *args], capture_output=True, text=True, timeout=120)

    usage = run("--help")
    assert usage.returncode == 0, usage.stderr
    for command in ("fit", "validate", "test", "predict", *EXTRA_COMMANDS):
        assert re.search(rf"^  {command} +\S", usage.stdout, re.M), command
    bare = run()  # no command: the same list, as a usage error (git, argparse)
    assert bare.returncode == 2 and bare.stdout == "", bare.stdout
    assert usage.stdout in bare.stderr
    assert bare.stderr.strip().splitlines()[-1].startswith("ds2hub: error: a command is required")
    said = run("--version")
    assert said.returncode == 0 and said.stdout.strip() == f"ds2hub {version('ds2hub')}"
    typo = run("transcribe", "--model", "m", "--beam", "8", "a.wav")
    assert typo.returncode == 2
    assert typo.stderr.strip().splitlines() == [
        "ds2hub transcribe: error: unrecognized arguments: --beam (did you mean --beam-size?)"
    ]
    # A misspelt command or top-level option: the closest of all commands, not LightningCLI's 4.
    for args, told in [
        (["transcibe", "x"], "unknown command 'transcibe' (did you mean transcribe?)"),
        (["--verison"], "unknown option '--verison' (did you mean --version?)"),
    ]:
        said = run(*args)
        assert said.returncode == 2 and said.stderr.strip().splitlines() == [
            f"ds2hub: error: {told}; ds2hub --help lists the commands"
        ], said.stderr
    # A misspelt required option is named as misspelt, not only as missing.
    for args, told in [
        (["push", "--repo_id", "a/b", "x"], "push: error: the following arguments are required: "
         "--repo-id (--repo_id: did you mean --repo-id?)"),
        (["transcribe", "--mod", "digits-demo", "f.opus"], "transcribe: error: the following "
         "arguments are required: --model (--mod: did you mean --model?)"),
        (["lm", "build", "--ord", "2", "--out", "x", "y.txt"], "lm build: error: the following "
         "arguments are required: --order (--ord: did you mean --order?)"),
    ]:  # fmt: skip
        said = run(*args)
        assert said.returncode == 2 and said.stderr.strip().splitlines() == [f"ds2hub {told}"]
    # `lm`: the line names its subcommands, and its help has a line for each.
    from ds2hub.lm.main import SUBCOMMANDS

    lm_line = re.search(r"^  lm +(.*)$", usage.stdout, re.M).group(1)
    assert "build" in lm_line and "tune" in lm_line and "check" not in lm_line, lm_line
    lm_help = run("lm", "--help")
    assert lm_help.returncode == 0
    for name in SUBCOMMANDS:
        assert re.search(rf"^  {name} +\S", lm_help.stdout, re.M), lm_help.stdout


@pytest.mark.parametrize(
    "refused, expected",
    [
        (["test", "--data.test_split", "null"], "no test data"),
        (["fit", "--data.streaming", "true", "--trainer.max_steps", "1"], "sortagrad"),
        (
            ["fit", "--data.max_batch_seconds", "0.5", "--trainer.max_steps", "1"],
            "max_batch_seconds",
        ),
    ],
    ids=["no test data", "sortagrad on a stream", "budget below the longest utterance"],
)
def test_refused_settings_give_one_line(refused, expected, tiny_digits, tmp_path, capsys):
    """Settings ds2hub refuses (ConfigError) are user mistakes: status 2, one line, no traceback."""
    command, *options = refused
    args = [command, "--config", str(CONF / "digits_tiny.yaml"), "--data.path", str(tiny_digits)]
    args += ["--trainer.default_root_dir", str(tmp_path), *options]
    assert main(args) == 2
    err = capsys.readouterr().err  # `datasets` may print its progress bars before
    errors = [line for line in err.splitlines() if line.startswith("ds2hub: error: ")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in err, err


def test_lightnings_own_options_take_ds2hubs_spelling_too(tiny_digits, tmp_path):
    """`--ckpt-path`, `--print-config` and `--seed-everything`, as ds2hub's own commands spell
    options (`--batch-size`); Lightning's `--ckpt_path` spelling keeps working."""
    recipe = ["--config", str(CONF / "digits_tiny.yaml"), "--data.path", str(tiny_digits)]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(DS2HUB), *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
        )

    printed = run("fit", *recipe, "--seed-everything", "7", "--print-config")
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "seed_everything: 7" in printed.stdout
    # Lightning's help and suggestions in the same spelling
    helped = run("fit", "--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    for kebab, lightning in LIGHTNING_OPTIONS.items():
        assert kebab in helped.stdout and lightning not in helped.stdout, kebab
    misspelt = run("fit", *recipe, "--ckpt-pat", "x")
    assert misspelt.returncode == 2 and misspelt.stderr.strip().splitlines()[-1].endswith(
        "(did you mean --ckpt-path?)"
    ), misspelt.stderr[-2000:]
    missing = tmp_path / "no.ckpt"
    for spelling in ("--ckpt-path", "--ckpt_path"):
        told = run("validate", *recipe, spelling, str(missing))
        assert told.returncode == 2 and told.stderr.strip().splitlines()[-1] == (
            f"ds2hub: error: checkpoint (--ckpt-path) {str(missing)!r} does not exist or is not "
            "a file"
        ), told.stderr[-2000:]


def test_reading_a_local_corpus_shows_no_download_bars(tiny_digits, tmp_path):
    """`datasets` says "Downloading data" and "Generating ... split" with progress bars for a
    local folder on its first read (a fresh cache here): nothing is downloaded, so no bars."""
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "fresh-cache")}
    result = subprocess.run(
        [*fit_command(tiny_digits, tmp_path), "--trainer.max_steps", "1",
         "--trainer.limit_val_batches", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train: 16 utterances" in result.stderr  # the data was read, and said so once
    for bar in ("Downloading data", "Generating train split", "files/s", "examples/s"):
        assert bar not in result.stderr + result.stdout, result.stderr[:3000]
