"""Publishing a trained checkpoint: evaluate it, write the hub folder with its model card, and
upload it with `huggingface_hub`.

- Citable figures: evaluation uses the recipe's test data when it has some, else its validation
  data, and the card says which (and that validation data also chose the checkpoint). Languages
  written without spaces get a sentence error rate (SER), never a "WER".
- Nothing destroyed: `export` writes only into a new folder, an empty one, or one it wrote before
  (marked by `.ds2hub-export`, replaced only with `overwrite=True`).
- Nothing published unseen: `local_details` lists the local paths, user and host names the recipe
  and card would publish, and `redact=True` replaces them.
"""

from __future__ import annotations

import getpass
import json
import logging
import re
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import yaml
from huggingface_hub import HfApi

from ds2hub.decoding import GREEDY, DecoderConfig, Decoding, describe_decoding
from ds2hub.decoding.bundle import DECODING_FILE, FOLDER_ENTRIES, LM_DIR, load_decoding
from ds2hub.errors import ConfigError
from ds2hub.inference.evaluate import evaluate as evaluate_batches
from ds2hub.inference.evaluate import reference_normalizer
from ds2hub.inference.recognizer import (
    CHECKPOINT_KEY,
    HUB_FILES,
    SpeechRecognizer,
    read_checkpoint,
)
from ds2hub.publish.card import STAGE_LABELS, CardInfo, DecodingResult, render_card
from ds2hub.training.data import SpeechDataModule
from ds2hub.training.runs import datamodule_from_config, find_run_config, stage_batches

log = logging.getLogger(__name__)

EXPORT_MARKER = ".ds2hub-export"  # in every folder `export` creates; nothing else is replaced
PUBLISHED_TEXTS = ("recipe.yaml", "README.md")  # the files written from local facts


class ExportError(ConfigError):
    """`export` cannot go on without a different argument (a folder, a language, a recipe)."""


# --- evaluation ---------------------------------------------------------------------------------
def find_decoding(checkpoint: Path) -> DecoderConfig | None:
    """A decoding setup `ds2hub lm tune` stored beside the run (`<run>/decoding/decoding.json`)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "decoding" / DECODING_FILE).is_file():
            return load_decoding(folder / "decoding")
    return None


def evaluate(
    recognizer: SpeechRecognizer,
    datamodule: SpeechDataModule,
    stage: str = "test",
    decoding: Decoding = GREEDY,
) -> dict[str, Any]:
    """`ds2hub.inference.evaluate.evaluate` on one stage (`test` or `val`) of the DataModule
    (`{"wer" or "ser": ..., "cer": ..., "utterances": n}`); `decoding` None: the model's default."""
    return evaluate_batches(recognizer, stage_batches(datamodule, stage), decoding)


# --- local details in what is published ----------------------------------------------------------
_STOP = r"""\s'"`,;:()\[\]{}<>|"""
_PATTERNS = (
    # /home/alice/data, but not the `/` of a URL, `val/wer`, `user/name`, `</details>` or of
    # `<local>/data` (what `redact_text` leaves).
    ("absolute path", re.compile(rf"(?<![\w.:/~\\<>-])/[^{_STOP}/]+(?:/[^{_STOP}/]+)*/?")),
    ("absolute path", re.compile(rf"(?<![\w])[A-Za-z]:\\[^{_STOP}]*")),  # C:\Users\alice
    ("home directory", re.compile(rf"(?<![\w/])~[\w.-]*(?:/[^{_STOP}]*)?")),
)


@dataclass
class LocalDetail:
    """A fact about the local machine found in text about to be published."""

    text: str
    kind: str  # "absolute path", "home directory", "user name", "host name"
    files: list[str] = field(default_factory=list)

    @property
    def replacement(self) -> str:
        """What `redact_text` writes instead: a path keeps only its last part."""
        if self.kind in ("user name", "host name"):
            return f"<{self.kind.split()[0]}>"
        name = PurePath(self.text.replace("\\", "/").rstrip("/")).name
        return f"<local>/{name}" if name and name != "~" else "<local>"

    def __str__(self) -> str:
        where = f" in {', '.join(self.files)}" if self.files else ""
        return f"{self.text}  ({self.kind}{where})"


def _names() -> list[tuple[str, re.Pattern[str]]]:
    """Patterns of this machine's user and host names (as whole words), where they are specific
    enough to look for."""
    found = []
    for kind, get in (("user name", getpass.getuser), ("host name", socket.gethostname)):
        try:
            name = get()
        except Exception:  # noqa: BLE001 - no user database or hostname: nothing to find
            continue
        if len(name) >= 3 and name not in ("localhost", "root"):
            found.append((kind, re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")))
    return found


def _outside(text: str, keep: str) -> list[str]:
    """`text` split around `keep` (the repo id, which is meant to be published)."""
    return text.split(keep) if keep else [text]


def find_local_details(text: str, keep: str = "") -> list[LocalDetail]:
    """Absolute and home paths, the user and host name in `text`, leaving out `keep`."""
    found: dict[str, LocalDetail] = {}
    for part in _outside(text, keep):
        for kind, pattern in (*_PATTERNS, *_names()):
            for match in pattern.finditer(part):
                found.setdefault(match.group(), LocalDetail(match.group(), kind))
    return list(found.values())


def redact_text(text: str, keep: str = "") -> str:
    """`text` with its local details (`find_local_details`) replaced; `keep` is left as it is."""
    parts = []
    for part in _outside(text, keep):
        # Longest first, so that a path is replaced whole before a name inside it is.
        for detail in sorted(find_local_details(part), key=lambda d: -len(d.text)):
            if detail.kind in ("user name", "host name"):
                pattern = rf"(?<![\w]){re.escape(detail.text)}(?![\w])"
                part = re.sub(pattern, detail.replacement, part)
            else:
                part = part.replace(detail.text, detail.replacement)
        parts.append(part)
    return keep.join(parts)


def local_details(folder: str | Path, repo_id: str = "") -> list[LocalDetail]:
    """The local details `recipe.yaml` and `README.md` in an exported folder would publish."""
    merged: dict[str, LocalDetail] = {}
    for name in PUBLISHED_TEXTS:
        path = Path(folder) / name
        if path.is_file():
            for detail in find_local_details(path.read_text(encoding="utf-8"), repo_id):
                merged.setdefault(detail.text, detail).files.append(name)
    return list(merged.values())


# --- the output folder ---------------------------------------------------------------------------
def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Raises `ExportError`, saying what to do instead, for a folder `export` must not write
    into: allowed are a new path, an empty folder, or (with `overwrite`) a folder an earlier export
    wrote that holds nothing but its files. Changes nothing."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ExportError(f"output folder {output_dir} is a file; choose a new or empty folder")
    entries = {p.name for p in output_dir.iterdir()}
    if not entries:
        return
    if EXPORT_MARKER not in entries:
        raise ExportError(
            f"output folder {output_dir} is not empty and was not written by ds2hub; nothing was "
            "changed: choose a new or empty folder"
        )
    if not overwrite:
        raise ExportError(
            f"output folder {output_dir} holds an earlier ds2hub export; pass --overwrite "
            "(overwrite=True) to replace it, or choose a new folder"
        )
    foreign = sorted(entries - {EXPORT_MARKER, *HUB_FILES, *FOLDER_ENTRIES})
    if foreign:
        raise ExportError(
            f"output folder {output_dir} holds files ds2hub did not write ({', '.join(foreign)}); "
            "nothing was changed: move them or choose a new folder"
        )


def _prepare_output_dir(output_dir: Path, overwrite: bool, about: dict[str, Any]) -> None:
    """Creates (or, after `check_output_dir`, empties) the folder and marks it as ds2hub's."""
    check_output_dir(output_dir, overwrite)  # again: the folder may have changed meanwhile
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in {*HUB_FILES, *FOLDER_ENTRIES}:  # only what an export writes (check_output_dir)
        if name == LM_DIR and (output_dir / name).is_dir():
            shutil.rmtree(output_dir / name)
        elif "*" not in name:
            (output_dir / name).unlink(missing_ok=True)
    (output_dir / EXPORT_MARKER).write_text(json.dumps(about, indent=2) + "\n")


# --- export and push -----------------------------------------------------------------------------
def export(
    checkpoint: str | Path,
    output_dir: str | Path,
    repo_id: str,
    config: str | Path | None = None,
    language: str | None = None,
    license: str = "apache-2.0",
    dataset_id: str | None = None,
    run_eval: bool = True,
    overwrite: bool = False,
    redact: bool = False,
    decoding: DecoderConfig | str | Path | None = None,
) -> Path:
    """Writes the hub folder for `checkpoint` into `output_dir` and returns it.

    Args:
        checkpoint: a `.ckpt` from `ds2hub fit`.
        output_dir: where to write config.json, model.safetensors, tokenizer files, README.md
            and recipe.yaml: a new or empty folder, or an earlier export's (see `overwrite`).
        repo_id: the hub id the card's usage snippet names.
        config: the run's resolved recipe (default: the `config.yaml` beside the checkpoint).
        language: ISO 639-1 code (default: the tokenizer's `language`).
        license: the card's licence.
        dataset_id: hub id of the evaluation data (default: the recipe's `data.path`).
        run_eval: evaluate on the recipe's test data, or its validation data if it has none.
        overwrite: replace the files of an earlier export in `output_dir` (see `check_output_dir`).
        redact: replace local paths, the user and host name in recipe.yaml and the card (see
            `local_details`).
        decoding: the model's default decoding, shipped in the folder (LM, lexicon): a
            `DecoderConfig` or a folder holding `decoding.json` (what `ds2hub lm tune` writes).
            Default: the setup `lm tune` stored beside the run, else the recipe's
            `model.beam_search`, else greedy. The card reports its figures and greedy ones.

    Raises:
        ExportError: the folder may not be written, no language is known, or there is no recipe
            to evaluate with.
    """
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    check_output_dir(output_dir, overwrite)  # before the evaluation: refuse early
    recognizer = SpeechRecognizer.from_checkpoint(checkpoint)
    extra = read_checkpoint(checkpoint).get(CHECKPOINT_KEY, {})
    config_path = Path(config) if config else find_run_config(checkpoint)
    recipe_text = config_path.read_text() if config_path else ""
    recipe = yaml.safe_load(recipe_text) if recipe_text else {}
    data_cfg = recipe.get("data", {})
    language = language or recognizer.tokenizer.language
    if language is None:
        raise ExportError(
            f"pass --language: the model's {type(recognizer.tokenizer).__name__} names no "
            "language (its `language` is None)"
        )
    if isinstance(decoding, (str, Path)):
        decoding = load_decoding(decoding)
        if decoding is None:
            raise ExportError(f"{DECODING_FILE} not found in the decoding folder")
    beam = (recipe.get("model") or {}).get("beam_search")  # score as the recipe decodes
    if decoding is None:
        decoding = find_decoding(checkpoint) or (DecoderConfig.from_dict(beam) if beam else None)
    recognizer.decoding = decoding
    results: list[DecodingResult] = []
    utterances, stage, split = 0, "test", str(data_cfg.get("test_split") or "test")
    split_name = split
    if run_eval:
        if not data_cfg:
            raise ExportError("no recipe found to evaluate with: pass --config or --no-eval")
        datamodule = datamodule_from_config(recipe, recognizer)
        stage = "test" if datamodule.has_stage("test") else "val"
        split = datamodule.describe(stage)
        split_name = datamodule.source_split(stage)  # None: held out of the train split
        # The default decoding first (what the card's usage snippet does), then greedy beside it.
        for setting in [decoding, GREEDY] if decoding is not None else [GREEDY]:
            result = evaluate(recognizer, datamodule, stage, setting)
            utterances = result.pop("utterances")
            label = describe_decoding(setting, recognizer.tokenizer)
            results.append(DecodingResult(label, result, "greedy"))
            figures = ", ".join(f"{k.upper()} {100 * v:.2f} %" for k, v in result.items())
            where = f"{STAGE_LABELS[stage].lower()} data ({split}, {utterances} utterances)"
            log.info("%s, %s: %s", where, label, figures)
    path = str(data_cfg.get("path", "unknown"))
    # A local corpus is named by its folder, which is not a hub dataset: the card's metadata then
    # names no dataset (`datasets:`, `model-index`), which the hub would link to.
    on_hub = dataset_id is not None or (bool(data_cfg.get("path")) and not Path(path).exists())
    dataset_id = dataset_id or (Path(path).name if Path(path).exists() else path)
    if not on_hub:
        log.info(
            "the card names no hub dataset and has no model-index (its figures are in its text): "
            "%s is not on the hub; pass --dataset-id if it is",
            dataset_id,
        )
    elif run_eval and split_name is None:
        log.info(
            "the card has no model-index (its figures are in its text): they come from groups "
            "held out of the train split, which model-index's `split` would name `train`"
        )
    if run_eval:  # the card names the dataset once; its folder need not be published
        split = split.replace(datamodule.path, dataset_id)

    def hide(text: str) -> str:
        return redact_text(text, keep=repo_id) if redact else text

    recipe_text = hide(recipe_text)
    described = describe_decoding(decoding, recognizer.tokenizer)
    info = CardInfo(
        repo_id=repo_id,
        language=language,
        dataset_id=hide(dataset_id),
        dataset_config=data_cfg.get("name"),
        dataset_split=hide(split),
        dataset_on_hub=on_hub,
        split=split_name,
        metrics=results[0].metrics if results else {},
        eval_utterances=utterances,
        license=license,
        recipe=recipe_text,
        command=hide(extra.get("command") or ""),
        train_seconds=extra.get("train_seconds"),
        hardware=extra.get("hardware"),
        train_description=hide(f"the {data_cfg.get('train_split', 'train')} split of {path}"),
        eval_stage=stage,
        decoding=described,
        decoding_short="greedy" if decoding is None else "LM",
        more_results=results[1:],
        default_decoding=None if decoding is None else described,
        normalization=reference_normalizer(recognizer.tokenizer)[1],
        finetuned_from=hide(extra.get("finetuned_from") or ""),
    )
    _prepare_output_dir(output_dir, overwrite, {"repo_id": repo_id, "checkpoint": checkpoint.name})
    # Before save_pretrained, which keeps an existing README.md.
    render_card(recognizer, info).save(output_dir / "README.md")
    recognizer.save_pretrained(output_dir)
    if recipe_text:
        (output_dir / "recipe.yaml").write_text(recipe_text)
    return output_dir


def push(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
) -> str:
    """Uploads an exported folder to the hub in one commit; returns the commit URL."""
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo.repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        commit_message="Upload Deep Speech 2 model with ds2hub",
        ignore_patterns=[EXPORT_MARKER],  # ds2hub's bookkeeping, not part of the model
    )
    return str(commit)


def summarize(details: Iterable[LocalDetail]) -> str:
    """The local details as lines for a log or the terminal."""
    return "\n".join(f"  {d}" for d in details)
