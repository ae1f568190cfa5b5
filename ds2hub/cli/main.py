"""The `ds2hub` command.

`fit`, `validate`, `test` and `predict` are LightningCLI over recipes (`--config` takes a file or
the name of an installed recipe); `transcribe` and `push` are thin wrappers over the public API
(`from_pretrained`, `ds2hub.publish.push`); `recipes` lists the installed recipes (`ds2hub.cli.recipes`).

Two entry points:

- `main(args) -> int` is the console script. It behaves like a Unix tool: exit status 0 on
  success; 2 with one `ds2hub: error: ...` line on stderr (no traceback) for a mistake in the
  command or the files it names (a missing `--config` file, data path, checkpoint or audio file,
  an output folder it must not touch); 2 with usage and an error for options jsonargparse rejects;
  1 with a traceback for anything unexpected (a bug: please report it). `DS2HUB_DEBUG=1` shows
  the traceback of user errors too. (The same one-line treatment covers a missing file found
  later, e.g. a lexicon, and an unreachable hub.)
- `run_cli(args)` runs the same commands in-process and returns the `DS2CLI` object (None for
  `transcribe` and `push`); errors are raised, as Python APIs do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ds2hub.cli.args import check_config_files, require_file
from ds2hub.errors import ConfigError, UsageError
from ds2hub.paths import looks_local
from ds2hub.tokenizers.registry import TokenizerFileError

if TYPE_CHECKING:
    from ds2hub.cli.lightning import DS2CLI

# Lightning, `datasets` and the training code are imported only by the commands that train or
# evaluate (`fit`, `validate`, ...): `transcribe`, `serve`, `export` and `lm` start without them.

DEBUG_ENV = "DS2HUB_DEBUG"
USAGE_STATUS = 2  # what argparse and jsonargparse exit with for a bad command line


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
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=20.0,
        help="recognise longer recordings in overlapping windows this long (at least 1)",
    )
    parser.add_argument(
        "--overlap-seconds",
        type=float,
        default=None,
        help="overlap of those windows (default: 2, at most a quarter window)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps ...")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: `file<TAB>transcript`; json: one object per file with word timestamps",
    )
    parser.add_argument("--json", action="store_true", help="same as --format json")
    parser.add_argument(
        "--num-workers", type=int, default=0, help="processes decoding audio ahead of the model"
    )
    # Decoding: the model's stored default (its LM, if the folder carries one) unless told.
    parser.add_argument(
        "--greedy", action="store_true", help="best-path decoding, even if the model has an LM"
    )
    parser.add_argument("--beam-size", type=int, default=0, help="beam search with this beam")
    parser.add_argument("--backend", choices=["flashlight", "pyctcdecode"], default=None)
    parser.add_argument("--lm", default=None, help="n-gram LM file (ARPA or KenLM binary)")
    parser.add_argument("--lm-weight", type=float, default=None, help="alpha: weight of the LM")
    parser.add_argument("--word-score", type=float, default=None, help="beta: per-word bonus")
    args = parser.parse_args(argv)
    for path in args.files:  # before the model loads: a typo should not cost its loading time
        require_file(path, "audio file")
    if looks_local(args.model) and not Path(args.model).expanduser().exists():
        raise UsageError(f"model {args.model!r} (--model) does not exist")
    if args.batch_size < 1 or args.num_workers < 0:
        raise UsageError("--batch-size must be at least 1 and --num-workers at least 0")
    if args.lm:
        require_file(args.lm, "language model (--lm)")
    from ds2hub.decoding import GREEDY, DecoderConfig
    from ds2hub.inference.recognizer import from_pretrained, usable_device
    from ds2hub.inference.transcribe import iter_transcripts, plan_windows

    as_json = args.json or args.format == "json"
    device = usable_device(args.device)
    model = from_pretrained(args.model, revision=args.revision).to(device)
    plan_windows(model, args.chunk_seconds, args.overlap_seconds)  # bad values: before any audio
    changes = {
        k: v
        for k, v in (
            ("beam_size", args.beam_size or None),
            ("backend", args.backend),
            ("lm", args.lm),
            ("lm_weight", args.lm_weight),
            ("word_score", args.word_score),
        )
        if v is not None
    }
    if args.lm:  # another LM file: its own order, whatever the folder's LM had
        changes["lm_order"] = None
    decoding = (
        GREEDY
        if args.greedy
        else (model.decoding or DecoderConfig()).replace(**changes)
        if changes
        else None
    )
    results = iter_transcripts(
        model,
        args.files,
        batch_size=args.batch_size,
        chunk_seconds=args.chunk_seconds,
        overlap_seconds=args.overlap_seconds,
        decoding=decoding,
        timestamps=as_json,
        num_workers=args.num_workers,
        skip_errors=True,
        progress=len(args.files) > 10 and sys.stderr.isatty(),
    )
    failed = 0
    for path, result in zip(args.files, results):
        if result.error is not None:
            failed += 1
            print(f"ds2hub: skipped {path}: {result.error}", file=sys.stderr)
        if as_json:
            print(json.dumps({"file": path, **result.to_dict()}, ensure_ascii=False), flush=True)
        elif result.error is None:
            print(f"{path}\t{result.text}", flush=True)
    if failed:
        raise UsageError(f"{failed} of {len(args.files)} files could not be read (see above)")


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
        "--output-dir",
        default=None,
        help="where to write the folder (default: a new temp dir); an existing folder must be "
        "empty or an earlier export (then pass --overwrite)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export in --output-dir"
    )
    parser.add_argument(
        "--redact",
        action="store_true",
        help="replace local paths, the user and host name in recipe.yaml and the card",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write the folder only, upload nothing"
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    parser.add_argument(
        "--decoding",
        default=None,
        help="folder with the decoding setup to ship (decoding.json, language_model/: what "
        "`ds2hub lm tune` writes; default: the run's decoding/ folder, else the recipe's)",
    )
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
    require_file(args.checkpoint, "checkpoint")
    if args.config:
        require_file(args.config, "recipe (--config)")
    import tempfile

    from ds2hub.publish.push import export, local_details, push, summarize

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
        overwrite=args.overwrite,
        redact=args.redact,
        decoding=args.decoding,
    )
    print(f"wrote {folder}")
    # What the files will tell the world about this machine, shown before anything is uploaded.
    details = local_details(folder, args.repo_id)
    if details:
        print(
            f"recipe.yaml and README.md in {folder} publish these local details "
            "(--redact replaces them):",
            file=sys.stderr,
        )
        print(summarize(details), file=sys.stderr)
    if args.dry_run:
        return
    print(push(folder, args.repo_id, token=args.token, private=args.private or None))


def recipes_main(argv: list[str]) -> None:
    from ds2hub.cli.recipes import main as list_recipes

    list_recipes(argv)


def lm_main(argv: list[str]) -> None:
    """`ds2hub lm ...` (imported on use: decoding needs none of the training stack)."""
    from ds2hub.lm.main import lm_main as run

    run(argv)


def export_main(argv: list[str]) -> None:
    """`ds2hub export ...` (ONNX; imported only when asked for)."""
    from ds2hub.export.onnx import main as run

    run(argv)


def serve_main(argv: list[str]) -> None:
    """`ds2hub serve ...` (imported when used: the server's libraries are an optional extra)."""
    from ds2hub.cli.serve import main as run

    run(argv)


EXTRA_COMMANDS = {
    "transcribe": transcribe_main,
    "push": push_main,
    "recipes": recipes_main,
    "lm": lm_main,
    "export": export_main,
    "serve": serve_main,
}
# Errors that mean "change the command, the files it names, or the network"; anything else is a
# bug and keeps its traceback.
USER_ERRORS = (
    UsageError,
    ConfigError,  # (and its kinds: a missing extra, a refused export) a refused setting: no test data, sortagrad on a stream, a budget too small ...
    TokenizerFileError,
    FileNotFoundError,  # also `datasets`' DatasetNotFoundError
    FileExistsError,
    ConnectionError,  # a hub id while offline or unreachable
)


def run_cli(args: list[str] | None = None) -> DS2CLI | None:
    """Runs a `ds2hub` command in-process and returns the LightningCLI object (None for
    `transcribe` and `push`); errors are raised.

    Args:
        args: the command line without the program name (None: `sys.argv[1:]`).
    """
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):  # LightningCLI's help knows only its own commands
        others = ", ".join(sorted(EXTRA_COMMANDS))
        print(
            f"ds2hub commands: fit, validate, test, predict (below); {others} (ds2hub COMMAND -h)"
        )
    resolved = argv
    if not (argv and argv[0] in EXTRA_COMMANDS):
        from ds2hub.cli.recipes import resolve_recipe_names

        resolved = resolve_recipe_names(argv)  # `--config digits`: an installed recipe by name
        if args is None:
            sys.argv[1:] = resolved  # LightningCLI reads sys.argv itself (see below)
    check_config_files(resolved)
    if argv and argv[0] in EXTRA_COMMANDS:
        EXTRA_COMMANDS[argv[0]](argv[1:])
        return None
    from ds2hub.cli.lightning import DS2CLI
    from ds2hub.training.data import SpeechDataModule
    from ds2hub.training.task import DeepSpeech2Task

    return DS2CLI(
        DeepSpeech2Task,
        SpeechDataModule,
        argv=argv,  # as typed (recipe names, not their paths) for model cards
        args=None if args is None else resolved,  # None: LightningCLI reads sys.argv (no warning)
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def main(args: list[str] | None = None) -> int:
    """Entry point of the `ds2hub` console script; returns the exit status (see the module doc).

    Args:
        args: the command line without the program name (None: `sys.argv[1:]`).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_cli(args)
    except Exception as error:
        if not isinstance(error, USER_ERRORS):
            raise
        if os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__  # always one line
        print(f"ds2hub: error: {message}", file=sys.stderr)
        return USAGE_STATUS
    return 0
