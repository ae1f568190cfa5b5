"""Malformed model folders and checkpoints through the console script: each gives one `ds2hub: error: ...` line and
exit status 2, never a traceback, and is refused before any weight is allocated (issue 24)."""

from __future__ import annotations

import datetime
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from standins import STREAMING_ARCH

from ds2hub.inference.recognizer import SpeechRecognizer
from ds2hub.tokenizers import CharTokenizer

AUDIO = Path(__file__).parents[1] / "recipes" / "digits" / "test" / "test_0000.opus"
MEMORY_LIMIT = 8 << 30  # address space for the child: torch needs ~4 GB of it just to import
FAST_SECONDS = 60.0  # the whole command, interpreter start and imports included (2 shared cores)


@pytest.fixture(scope="module")
def valid_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "valid"
    SpeechRecognizer(STREAMING_ARCH, {}, CharTokenizer()).save_pretrained(folder)
    return folder


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _not_json(folder: Path) -> None:
    (folder / "config.json").write_text('{"arch": {"rnn_hidden": 24,')


def _no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


def _truncated(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _huge_header(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 60) + data[8:])


def _wrong_shape(folder: Path) -> None:
    path = folder / "model.safetensors"
    weights = load_file(path)
    weights["model.output.weight"] = weights["model.output.weight"][:, :-1].contiguous()
    save_file(weights, path)


def _huge_rnn(folder: Path) -> None:
    _edit_json(folder / "config.json", lambda c: c["arch"].update(rnn_hidden=60000))


def _unknown_kind(folder: Path) -> None:
    _edit_json(folder / "ds2hub_tokenizer.json", lambda c: c.update(kind="klingon"))


def _bad_alphabet(folder: Path) -> None:
    _edit_json(folder / "ds2hub_tokenizer.json", lambda c: c.update(init_args={"alphabet": ["ab"]}))


def _symlinked_non_sentencepiece(folder: Path) -> None:
    config = {"kind": "sentencepiece", "init_args": {"model_file": "tokenizer.model"}}
    (folder / "ds2hub_tokenizer.json").write_text(json.dumps(config))
    os.symlink(folder / "config.json", folder / "tokenizer.model")


def _cut_checkpoint(folder: Path) -> Path:
    path = folder / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4096)}, "ds2hub": {}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_checkpoint(folder: Path) -> Path:
    path = folder / "notes.ckpt"
    path.write_text("not a checkpoint")
    return path


def _foreign_checkpoint(folder: Path) -> Path:
    path = folder / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4)}}, path)
    return path


def _incomplete_checkpoint(folder: Path) -> Path:
    path = folder / "incomplete.ckpt"
    torch.save({"state_dict": {}, "ds2hub": {"features": {}}}, path)
    return path


def _checkpoint_of_objects(folder: Path) -> Path:
    path = folder / "objects.ckpt"
    torch.save({"state_dict": {}, "when": datetime.datetime(2026, 1, 1)}, path)
    return path


# (id, how the valid folder is broken (returning the path to load, if not the folder), words the
# error line must contain)
CASES = [
    ("config-not-json", _not_json, ["config.json", "not valid JSON"]),
    ("config-missing", _no_config, ["has no config.json"]),
    ("truncated-safetensors", _truncated, ["model.safetensors", "truncated"]),
    ("huge-safetensors-header", _huge_header, ["model.safetensors", "header"]),
    ("weight-of-wrong-shape", _wrong_shape, ["model.output.weight", "shape"]),
    ("rnn-hidden-60000", _huge_rnn, ["rnn_hidden", "60000"]),
    ("unknown-tokenizer-kind", _unknown_kind, ["ds2hub_tokenizer.json", "klingon"]),
    ("bad-alphabet", _bad_alphabet, ["ds2hub_tokenizer.json", "alphabet"]),
    ("symlinked-non-sentencepiece", _symlinked_non_sentencepiece, ["not a SentencePiece model"]),
    ("checkpoint-cut-short", _cut_checkpoint, ["cut.ckpt", "not a readable checkpoint"]),
    ("checkpoint-of-text", _text_checkpoint, ["notes.ckpt", "not a readable checkpoint"]),
    ("checkpoint-not-by-ds2hub", _foreign_checkpoint, ["foreign.ckpt", "not written by ds2hub"]),
    ("checkpoint-incomplete", _incomplete_checkpoint, ["incomplete.ckpt", "not a complete"]),
    ("checkpoint-of-objects", _checkpoint_of_objects, ["objects.ckpt", "datetime.datetime"]),
]


def _limit_memory() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize(("name", "damage", "words"), CASES, ids=[c[0] for c in CASES])
def test_a_malformed_model_folder_gives_one_line_and_exit_2(
    valid_folder: Path,
    tmp_path: Path,
    name: str,
    damage: Callable[[Path], Path | None],
    words: list[str],
) -> None:
    folder = tmp_path / name
    shutil.copytree(valid_folder, folder)
    target = damage(folder) or folder
    env = {k: v for k, v in os.environ.items() if k != "DS2HUB_DEBUG"} | {"HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ds2hub", "transcribe", "--model", str(target), str(AUDIO)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_memory,  # a folder asking for 43 GB must be refused, not attempted
        timeout=FAST_SECONDS * 2,
    )
    elapsed = time.monotonic() - start
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ds2hub: error: "), result.stderr
    for word in words:
        assert word in last, last
    assert elapsed < FAST_SECONDS
