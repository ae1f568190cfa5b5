"""The `ds2hub` command.

`fit`, `validate`, `test` and `predict` are LightningCLI over recipes; `transcribe` and `push` are
thin wrappers over the public API (`from_pretrained`, `ds2hub.push`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from lightning.pytorch.cli import LightningCLI

from ds2hub.data import SpeechDataModule
from ds2hub.task import DeepSpeech2Task


class DS2CLI(LightningCLI):
    """LightningCLI with the DataModule's tokenizer and front end wired into the model, so a recipe
    states them once."""

    def add_arguments_to_parser(self, parser) -> None:
        # The tokenizer may be fitted on training transcripts, so link the instantiated object.
        parser.link_arguments(
            "data", "model.tokenizer", compute_fn=lambda dm: dm.tokenizer, apply_on="instantiate"
        )
        parser.link_arguments(
            "data", "model.features", compute_fn=lambda dm: dm.features, apply_on="instantiate"
        )

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        self.model.command = " ".join(
            ["ds2hub", *self._argv]
        )  # recorded in checkpoints for model cards


def transcribe_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="ds2hub transcribe", description="Transcribe audio files."
    )
    parser.add_argument(
        "files", nargs="+", help="audio files (any format soundfile or FFmpeg reads)"
    )
    parser.add_argument(
        "--model", required=True, help="hub id, local folder, or .ckpt from ds2hub fit"
    )
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-seconds", type=float, default=20.0, help="split longer recordings")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument(
        "--beam-size", type=int, default=0, help="lexicon + LM beam search (0: greedy)"
    )
    parser.add_argument("--lm-weight", type=float, default=1.0, help="weight of the word LM")
    args = parser.parse_args(argv)
    from ds2hub.decoding import BeamSearchConfig
    from ds2hub.hub import from_pretrained

    model = from_pretrained(args.model, revision=args.revision).to(args.device)
    beam = (
        BeamSearchConfig(beam_size=args.beam_size, lm_weight=args.lm_weight)
        if args.beam_size
        else None
    )
    texts = model.transcribe(
        args.files, batch_size=args.batch_size, chunk_seconds=args.chunk_seconds, beam_search=beam
    )
    for path, text in zip(args.files, texts):
        print(
            json.dumps({"file": path, "text": text}, ensure_ascii=False)
            if args.json
            else f"{path}\t{text}"
        )


def push_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="ds2hub push",
        description="Evaluate a checkpoint, write its hub folder and model card, upload it.",
    )
    parser.add_argument("checkpoint", help=".ckpt written by ds2hub fit")
    parser.add_argument("--repo-id", required=True, help="user/name on the Hugging Face Hub")
    parser.add_argument(
        "--config", default=None, help="the run's recipe (default: config.yaml of the run)"
    )
    parser.add_argument(
        "--output-dir", default=None, help="where to write the folder (default: a temp dir)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write the folder only, upload nothing"
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    parser.add_argument("--language", default=None)
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument(
        "--dataset-id", default=None, help="hub id of the evaluation dataset for the card"
    )
    parser.add_argument("--private", action="store_true")
    parser.add_argument(
        "--token", default=None, help="hub token (default: HF_TOKEN or `hf auth login`)"
    )
    args = parser.parse_args(argv)
    import tempfile
    from pathlib import Path

    from ds2hub.push import export, push

    output = Path(args.output_dir or tempfile.mkdtemp(prefix="ds2hub-push-"))
    folder = export(
        args.checkpoint,
        output,
        args.repo_id,
        args.config,
        args.language,
        args.license,
        args.dataset_id,
        run_eval=not args.no_eval,
    )
    print(f"wrote {folder}")
    if args.dry_run:
        return
    print(push(folder, args.repo_id, token=args.token, private=args.private or None))


EXTRA_COMMANDS = {"transcribe": transcribe_main, "push": push_main}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(args: list[str] | None = None) -> DS2CLI | None:
    """Entry point of the `ds2hub` console script (`args` replaces `sys.argv[1:]` in tests)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in EXTRA_COMMANDS:
        EXTRA_COMMANDS[argv[0]](argv[1:])
        return None
    DS2CLI._argv = argv
    return DS2CLI(
        DeepSpeech2Task,
        SpeechDataModule,
        args=None if args is None else argv,  # None: LightningCLI reads sys.argv (no warning)
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
