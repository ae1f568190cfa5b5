"""The `ds2hub` command.

`fit`, `validate`, `test` and `predict` are LightningCLI over recipes (`--config` takes a file or
the name of an installed recipe); the other verbs (`EXTRA_COMMANDS`) are thin wrappers over the
public API. `main` is the console script (exit statuses: docs/guide/recipes-and-cli.md); `run_cli`
runs the same commands in-process and raises errors, as Python APIs do.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ds2hub.arguments import ArgumentParser, closest_option
from ds2hub.cli.args import check_config_files, lightning_spelling, require_file
from ds2hub.cli.recipes import resolve_recipe_names
from ds2hub.errors import ConfigError, UsageError
from ds2hub.paths import missing_local

if TYPE_CHECKING:
    from ds2hub.cli.lightning import DS2CLI

DEBUG_ENV = "DS2HUB_DEBUG"
USAGE_STATUS = 2  # what argparse and jsonargparse exit with for a bad command line


def transcribe_main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="ds2hub transcribe", description="Transcribe audio files.")
    add = parser.add_argument
    add("files", nargs="+", help="audio files (any format soundfile or FFmpeg reads)")
    add(
        "--model",
        required=True,
        help="hub id, local folder, .ckpt from ds2hub fit, or a shipped model (digits-demo)",
    )
    add("--revision", help="hub revision (branch, tag or commit)")
    add("--batch-size", type=int, default=8, help="windows per forward pass")
    add(
        "--chunk-seconds",
        type=float,
        default=20.0,
        help="recognise longer recordings in overlapping windows this long (at least 1)",
    )
    add(
        "--overlap-seconds",
        type=float,
        help="overlap of those windows (default: 2, at most a quarter window)",
    )
    add("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps ...")
    add(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: `file<TAB>transcript`; json: one object per file with word timestamps",
    )
    add("--json", action="store_true", help="same as --format json")
    add("--num-workers", type=int, default=0, help="processes decoding audio ahead of the model")
    # Decoding: the model's stored default (its LM, if the folder carries one) unless told.
    add("--greedy", action="store_true", help="best-path decoding, even if the model has an LM")
    add("--beam-size", type=int, default=0, help="beam search with this beam")
    add("--backend", choices=["flashlight", "pyctcdecode"])
    add("--lm", help="n-gram LM file (ARPA or KenLM binary)")
    add("--lm-weight", type=float, help="alpha: weight of the LM")
    add("--word-score", type=float, help="beta: per-word bonus")
    args = parser.parse_args(argv)
    for path in args.files:  # before the model loads: a typo should not cost its loading time
        require_file(path, "audio file")
    if missing_local(args.model):
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
    given = ("backend", "lm", "lm_weight", "word_score")
    changes = {k: getattr(args, k) for k in given if getattr(args, k) is not None}
    if args.beam_size:  # 0: not given
        changes["beam_size"] = args.beam_size
    if args.lm:  # another LM file: its own order, whatever the folder's LM had
        changes["lm_order"] = None
    decoding = None  # the model's stored default
    if args.greedy:
        decoding = GREEDY
    elif changes:
        decoding = (model.decoding or DecoderConfig()).replace(**changes)
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
    parser = ArgumentParser(
        prog="ds2hub push",
        description="Evaluate a checkpoint, write its hub folder and model card, upload it.",
    )
    add = parser.add_argument
    add("checkpoint", help=".ckpt written by ds2hub fit")
    add("--repo-id", required=True, help="user/name on the Hugging Face Hub")
    add("--config", help="the run's recipe (default: config.yaml of the run)")
    add(
        "--output-dir",
        help="where to write the folder (default: a new temp dir); an existing folder must be "
        "empty or an earlier export (then pass --overwrite)",
    )
    add("--overwrite", action="store_true", help="replace an earlier export in --output-dir")
    add(
        "--redact",
        action="store_true",
        help="replace local paths, the user and host name in recipe.yaml and the card",
    )
    add("--dry-run", action="store_true", help="write the folder only, upload nothing")
    add("--no-eval", action="store_true", help="skip the evaluation")
    add(
        "--decoding",
        help="folder with the decoding setup to ship (decoding.json, language_model/: what "
        "`ds2hub lm tune` writes; default: the run's decoding/ folder, else the recipe's)",
    )
    add("--language")
    add("--license", default="apache-2.0")
    add("--dataset-id", help="hub id of the evaluation dataset for the card")
    add("--private", action="store_true")
    add("--token", help="hub token (default: HF_TOKEN or `hf auth login`)")
    args = parser.parse_args(argv)
    require_file(args.checkpoint, "checkpoint")
    if args.config:
        require_file(args.config, "recipe (--config)")
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
            f"(--redact replaces them):\n{summarize(details)}",
            file=sys.stderr,
        )
    if args.dry_run:
        return
    print(push(folder, args.repo_id, token=args.token, private=args.private or None))


# verb -> (module, function), imported when used: `transcribe`, `lm`, `export` and `serve` start
# without Lightning, and the server's libraries are an optional extra.
EXTRA_COMMANDS = {
    "transcribe": (__name__, "transcribe_main"),
    "push": (__name__, "push_main"),
    "recipes": ("ds2hub.cli.recipes", "main"),
    "lm": ("ds2hub.lm.main", "lm_main"),
    "export": ("ds2hub.export.onnx", "main"),
    "serve": ("ds2hub.cli.serve", "main"),
}
COMMANDS_HELP = """usage: ds2hub COMMAND [options]     (ds2hub COMMAND -h: the command's options)

Train and evaluate (LightningCLI; --config takes a recipe file or an installed recipe's name):
  fit         train a model: ds2hub fit --config digits
  validate    a checkpoint on the recipe's validation split
  test        a checkpoint on the recipe's test split
  predict     a checkpoint's transcripts of the recipe's predict split
Use a model:
  transcribe  audio files to text (or JSON with word timestamps)
  serve       a model over WebSocket streams and HTTP uploads, with Batch Dispatch
  export      a model to ONNX
  push        evaluate a checkpoint, write its hub folder and model card, upload it
Language models and recipes:
  lm          build an n-gram LM, tune its weights in a model's beam search
  recipes     list the installed recipes

  -V, --version   ds2hub's version"""

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# What may come before a LightningCLI command (`ds2hub --config all.yaml fit`), besides ds2hub's
# own -h and -V: LightningCLI's top-level options.
TOP_OPTIONS = ("-h", "--help", "-V", "--version", "-c", "--config", "--print-config")


def _check_command(word: str) -> None:
    """Raises `UsageError` naming the closest command (or top-level option) unless `word`, the
    first of the command line, is one: LightningCLI would list only its own four commands."""
    name = word.split("=", 1)[0]
    if name in (*LIGHTNING_COMMANDS, *EXTRA_COMMANDS, *TOP_OPTIONS, "--print_config"):
        return
    if word.startswith("-c") and len(word) > 2:  # `-cFILE`, argparse's joined short option
        return
    if word.startswith("-"):
        what, valid = "option", [o for o in TOP_OPTIONS if o.startswith("--")]
    else:
        what, valid = "command", [*LIGHTNING_COMMANDS, *EXTRA_COMMANDS]
    near = closest_option(name, valid)
    hint = f" (did you mean {near}?)" if near else ""
    raise UsageError(f"unknown {what} {name!r}{hint}; ds2hub --help lists the commands")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ds2hub")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        from ds2hub import __version__

        return __version__


# Errors that mean "change the command, the files it names, or the network" (a missing extra is
# a `ConfigError`, `datasets`' DatasetNotFoundError a FileNotFoundError); anything else is a bug.
USER_ERRORS = (UsageError, ConfigError, FileNotFoundError, FileExistsError, ConnectionError)


def run_cli(args: list[str] | None = None) -> DS2CLI | None:
    """Runs a `ds2hub` command in-process and returns the LightningCLI object (None for the
    other verbs); errors are raised.

    Args:
        args: the command line without the program name (None: `sys.argv[1:]`).
    """
    argv = sys.argv[1:] if args is None else list(args)
    if not argv:  # as git and argparse: the usage, and a usage error's status
        print(COMMANDS_HELP, file=sys.stderr)
        raise UsageError("a command is required (ds2hub --help lists them)")
    if argv[0] in ("-h", "--help"):  # LightningCLI's help knows only its own commands
        print(COMMANDS_HELP)
        return None
    if argv[0] in ("-V", "--version"):
        print(f"ds2hub {_version()}")
        return None
    _check_command(argv[0])
    if argv[0] in EXTRA_COMMANDS:
        check_config_files(argv)
        module, function = EXTRA_COMMANDS[argv[0]]
        getattr(importlib.import_module(module), function)(argv[1:])
        return None
    # `--config digits`: an installed recipe by name; `--ckpt-path`: Lightning's `--ckpt_path`
    resolved = resolve_recipe_names(lightning_spelling(argv))
    if args is None:
        sys.argv[1:] = resolved  # LightningCLI reads sys.argv itself (see below)
    check_config_files(resolved)
    try:
        return _lightning_cli(argv, None if args is None else resolved)
    except argparse.ArgumentError as error:  # (exit_on_error=False) e.g. a --ckpt-path's settings
        raise UsageError(" ".join(str(error).split())) from None


def _lightning_cli(argv: list[str], args: list[str] | None) -> DS2CLI:
    from ds2hub.cli.lightning import DS2CLI
    from ds2hub.training.data import SpeechDataModule
    from ds2hub.training.task import DeepSpeech2Task

    return DS2CLI(
        DeepSpeech2Task,
        SpeechDataModule,
        argv=argv,  # as typed (recipe names, not their paths) for model cards
        args=args,  # None: LightningCLI reads sys.argv (no warning)
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        # `--trainer.max_epoch 1` must be an error, not a full epoch of `max_epochs`.
        parser_kwargs={"allow_abbrev": False, "exit_on_error": False},
    )


def main(args: list[str] | None = None) -> int:
    """Entry point of the `ds2hub` console script (`args` as for `run_cli`); returns the exit
    status: 0 on success; 2 with one `ds2hub: error: ...` line on stderr for `USER_ERRORS` (with
    the traceback if `DS2HUB_DEBUG=1`); otherwise the exception propagates (a bug)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Lightning 2.6 builds torch's LeafSpec, which torch 2.15 deprecates, at every step: nothing
    # a ds2hub user can act on.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    if (callbacks := sys.modules.get("ds2hub.training.callbacks")) is not None:
        callbacks.STOPPED_BY.clear()  # (an earlier command in this process was stopped)
    try:
        run_cli(args)
    except SystemExit:
        if (stopped := _stopped_by()) is not None:
            _reap_loader_workers()
            return 128 + stopped
        raise
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__  # always one line
        print(f"ds2hub: error: {message}", file=sys.stderr)
        return USAGE_STATUS
    if (stopped := _stopped_by()) is not None:
        _reap_loader_workers()
        return 128 + stopped
    return 0


def _reap_loader_workers() -> None:
    """Kills the DataLoader worker processes still alive when a stopped fit ends. They ignore
    SIGTERM and SIGINT (`training.data.datamodule.worker_init`: a signal sent to the process
    group must stop only the main process, cleanly), so multiprocessing's exit handler, which
    terminates daemonic children with SIGTERM and then joins them, would wait for ever for the
    persistent workers of a loader the stop left open. They only prefetch batches."""
    import multiprocessing

    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(5)


def _stopped_by() -> int | None:
    """The signal that stopped a fit in this process (`StopOnSignal` wrote its checkpoint): the
    exit status is 128 + it, not Lightning's 0 (SIGTERM) or 1 (SIGINT), so job chains stop."""
    callbacks = sys.modules.get("ds2hub.training.callbacks")
    return callbacks.STOPPED_BY[0] if callbacks is not None and callbacks.STOPPED_BY else None
