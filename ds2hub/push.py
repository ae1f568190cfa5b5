"""Publishing a trained checkpoint: evaluate on the recipe's test split, write the hub folder with
its model card, and upload it with `huggingface_hub`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import HfApi
from torchmetrics.text import CharErrorRate, WordErrorRate

from ds2hub.card import DEFAULT_LANGUAGE, CardInfo, render_card
from ds2hub.data import SpeechDataModule
from ds2hub.data.dataset import is_empty_batch
from ds2hub.decoding import BeamSearchConfig
from ds2hub.features import FeatureConfig
from ds2hub.hub import CHECKPOINT_KEY, SpeechRecognizer

log = logging.getLogger(__name__)


def find_run_config(checkpoint: Path) -> Path | None:
    """The `config.yaml` LightningCLI saved for the run that wrote `checkpoint`."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.yaml").exists():
            return folder / "config.yaml"
    return None


def datamodule_from_config(
    config: dict[str, Any], recognizer: SpeechRecognizer
) -> SpeechDataModule:
    """The recipe's DataModule, with the trained model's tokenizer and features."""
    args = {k: v for k, v in config.get("data", {}).items() if k not in ("tokenizer", "features")}
    return SpeechDataModule(
        tokenizer=recognizer.tokenizer,
        features=FeatureConfig(**recognizer.features.to_dict()),
        **args,
    )


@torch.inference_mode()
def evaluate(
    recognizer: SpeechRecognizer,
    datamodule: SpeechDataModule,
    stage: str = "test",
    beam_search: BeamSearchConfig | None = None,
) -> dict[str, Any]:
    """WER and CER on one split of the DataModule, greedy or with `beam_search`."""
    datamodule.setup({"test": "test", "val": "validate"}[stage])
    loader = datamodule.test_dataloader() if stage == "test" else datamodule.val_dataloader()
    wer, cer, n = WordErrorRate(), CharErrorRate(), 0
    tokenizer = recognizer.tokenizer
    decode = recognizer.text_decoder(beam_search)
    for batch in loader:
        if is_empty_batch(batch):  # nothing in it decoded
            continue
        logits, lengths = recognizer(batch["features"], batch["feature_lengths"])
        hyps = decode(logits, lengths)
        refs = [tokenizer.normalize(t) for t in batch["texts"]]
        wer.update(hyps, refs)
        cer.update(hyps, refs)
        n += len(refs)
    return {"wer": float(wer.compute()), "cer": float(cer.compute()), "utterances": n}


def export(
    checkpoint: str | Path,
    output_dir: str | Path,
    repo_id: str,
    config: str | Path | None = None,
    language: str | None = None,
    license: str = "apache-2.0",
    dataset_id: str | None = None,
    run_eval: bool = True,
) -> Path:
    """Writes the hub folder for `checkpoint` into `output_dir` and returns it.

    Args:
        checkpoint: a `.ckpt` from `ds2hub fit`.
        output_dir: where to write config.json, model.safetensors, tokenizer files, README.md.
        repo_id: the hub id the card's usage snippet names.
        config: the run's resolved recipe (default: the `config.yaml` beside the checkpoint).
        language: ISO code (default from the tokenizer: en for chars/bigrams, zh for mandarin/pinyin).
        license: the card's licence.
        dataset_id: hub id of the evaluation data (default: the recipe's `data.path`).
        run_eval: evaluate on the recipe's test split (the card then carries WER/CER).
    """
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    recognizer = SpeechRecognizer.from_checkpoint(checkpoint)
    extra = torch.load(checkpoint, map_location="cpu", weights_only=True).get(CHECKPOINT_KEY, {})
    config_path = Path(config) if config else find_run_config(checkpoint)
    recipe_text = config_path.read_text() if config_path else ""
    recipe = yaml.safe_load(recipe_text) if recipe_text else {}
    data_cfg = recipe.get("data", {})
    language = language or DEFAULT_LANGUAGE.get(recognizer.tokenizer.kind)
    if language is None:
        raise ValueError(f"pass --language for a {recognizer.tokenizer.kind!r} model")
    metrics: dict[str, float] = {}
    utterances = 0
    if run_eval:
        if not data_cfg:
            raise ValueError("no recipe found to evaluate with: pass --config or --no-eval")
        beam = (recipe.get("model") or {}).get("beam_search")  # score as the recipe decodes
        result = evaluate(
            recognizer,
            datamodule_from_config(recipe, recognizer),
            beam_search=BeamSearchConfig(**beam) if beam else None,
        )
        metrics = {"wer": result["wer"], "cer": result["cer"]}
        utterances = result["utterances"]
        log.info(
            "test WER %.2f %%, CER %.2f %% on %d utterances",
            100 * metrics["wer"],
            100 * metrics["cer"],
            utterances,
        )
    path = str(data_cfg.get("path", "unknown"))
    info = CardInfo(
        repo_id=repo_id,
        language=language,
        dataset_id=dataset_id or (Path(path).name if Path(path).exists() else path),
        dataset_config=data_cfg.get("name"),
        dataset_split=data_cfg.get("test_split", "test"),
        metrics=metrics,
        eval_utterances=utterances,
        license=license,
        recipe=recipe_text,
        recipe_name=config_path.name if config_path else "",
        command=extra.get("command") or "",
        train_seconds=extra.get("train_seconds"),
        hardware=extra.get("hardware"),
        train_description=f"the {data_cfg.get('train_split', 'train')} split of {path}",
    )
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    render_card(recognizer, info).save(
        output_dir / "README.md"
    )  # before save_pretrained, which keeps it
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
    )
    return str(commit)
