"""`ds2hub lm build` and `ds2hub lm tune`.

`build` writes `lm.arpa`, `unigrams.txt` (pyctcdecode's word list) and `.ds2hub-lm.json` (how it
was built; hidden, because pyctcdecode's folder loader counts the visible files). Mistakes raise
`ConfigError` (the console prints one line and exits with status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from ds2hub.arguments import ArgumentParser
from ds2hub.errors import ConfigError
from ds2hub.lm.ngram import UNITS, NGramModel, TextUnits, build_ngram
from ds2hub.plugins import get_normalizer

LM_FILE = "lm.arpa"
UNIGRAMS_FILE = "unigrams.txt"
BUILD_MARKER = ".ds2hub-lm.json"  # written with every build: marks the files as ds2hub's
OUTPUT_FILES = (LM_FILE, UNIGRAMS_FILE)


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuses an output folder whose LM files ds2hub must not replace; changes nothing.
    Existing `lm.arpa`/`unigrams.txt` are replaced only when an earlier `ds2hub lm build` wrote
    them (its marker is there) and `overwrite` is set; other files stay untouched."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    present = [name for name in OUTPUT_FILES if (out / name).exists()]
    if not present:
        return
    if not (out / BUILD_MARKER).is_file():
        raise ConfigError(
            f"--out {out} already holds {', '.join(present)} that ds2hub did not write; "
            "nothing was changed: choose another folder"
        )
    if not overwrite:
        raise ConfigError(
            f"--out {out} holds an LM from an earlier `ds2hub lm build`; pass --overwrite to "
            "replace it, or choose another folder"
        )


def _read_lines(paths: list[str]) -> list[str]:
    lines: list[str] = []
    for path in paths:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(f"text file {path!r} does not exist or is not a file")
        try:
            lines += file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ConfigError(f"text file {path!r} is not UTF-8: {error}") from None
    return lines


def _word_list(lines: list[str], paths: list[str]) -> tuple[list[str], list[int]]:
    """`word [count [anything]]` lines (ds2hub's lexicon files, jieba's `dict.txt`) -> the
    words, each a sentence, and their counts (default 1)."""
    words, counts = [], []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            count = int(fields[1]) if len(fields) > 1 else 1
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigError(
                f"--word-list: line {number} of {', '.join(paths)}: count {fields[1]!r} is not a "
                "positive integer"
            )
        words.append(fields[0])
        counts.append(count)
    return words, counts


def _units(args: argparse.Namespace) -> TextUnits:
    normalize = {"none": None, "lower": str.lower}.get(args.normalize)
    if args.normalize not in ("none", "lower"):  # any registered normaliser, plugins' included
        normalize = get_normalizer(args.normalize)
    if args.tokenizer:
        if args.normalize != "none":
            raise ConfigError("give --tokenizer or --normalize, not both")
        from ds2hub.tokenizers.registry import load_tokenizer

        if not Path(args.tokenizer).is_dir():
            raise ConfigError(f"--tokenizer {args.tokenizer!r} is not a folder")
        normalize = load_tokenizer(args.tokenizer).normalize
    return TextUnits(
        unit=args.unit, normalize=normalize, segment=args.segment, keep_spaces=args.keep_spaces
    )


def build_main(argv: list[str]) -> None:
    """`ds2hub lm build`: estimate an n-gram LM from text files and write it to a folder."""
    parser = ArgumentParser(
        prog="ds2hub lm build",
        description="Estimate an interpolated modified Kneser-Ney n-gram LM (ARPA) from text, "
        "one sentence a line.",
    )
    parser.add_argument("text", nargs="+", help="UTF-8 text files, one sentence a line")
    parser.add_argument("--order", type=int, required=True, help="n of the n-grams (KenLM: >= 2)")
    parser.add_argument("--unit", choices=UNITS, default="word", help="tokens: words or characters")
    parser.add_argument("--out", required=True, help="folder for lm.arpa and unigrams.txt")
    parser.add_argument(
        "--normalize",
        default="none",
        help="text normalisation before splitting: none, lower, or a registered normaliser "
        "(english: a-z, apostrophe; mandarin: Han characters, ASCII letters and digits; "
        "plugins add theirs, e.g. german)",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="model folder whose saved tokenizer normalises the text"
    )
    parser.add_argument(
        "--segment", choices=("jieba",), default=None, help="words: segment Chinese with jieba"
    )
    parser.add_argument(
        "--keep-spaces", action="store_true", help="characters: keep word boundaries as '|'"
    )
    parser.add_argument(
        "--word-list",
        action="store_true",
        help="TEXT holds `word [count]` lines (a lexicon, jieba's dict.txt): each word is a "
        "sentence counted count times",
    )
    parser.add_argument("--heldout", default=None, help="text file to report perplexity on")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an LM an earlier build wrote in --out"
    )
    args = parser.parse_args(argv)
    if args.order < 1:
        raise ConfigError(f"--order must be at least 1, not {args.order}")
    out = Path(args.out).expanduser()
    check_out_dir(out, args.overwrite)  # before the work: refuse early
    units = _units(args)
    lines = _read_lines(args.text)
    heldout = _read_lines([args.heldout]) if args.heldout else None
    start = time.perf_counter()
    repeats = None
    if args.word_list:
        lines, repeats = _word_list(lines, args.text)
    model = build_ngram(lines, args.order, units, repeats=repeats)
    seconds = time.perf_counter() - start
    _write(model, out, args, lines, seconds)
    _summary(model, out, units, heldout, seconds)


def _write(
    model: NGramModel, out: Path, args: argparse.Namespace, lines: list[str], seconds: float
) -> None:
    record = {
        "created_by": "ds2hub lm build",
        "text": [os.path.abspath(p) for p in args.text],
        "lines": len(lines),
        "order": model.order,
        "unit": args.unit,
        "normalize": "tokenizer" if args.tokenizer else args.normalize,
        "segment": args.segment,
        "keep_spaces": args.keep_spaces,
        "word_list": args.word_list,
        "counts": model.counts,
        "discounts": model.discounts,
        "seconds": round(seconds, 3),
    }
    check_out_dir(out, args.overwrite)  # again: the folder may have changed meanwhile
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / BUILD_MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        model.write_arpa(out / LM_FILE)
        tmp = out / f".{UNIGRAMS_FILE}.tmp"
        tmp.write_text("".join(f"{w}\n" for w in model.vocabulary), encoding="utf-8")
        os.replace(tmp, out / UNIGRAMS_FILE)
    except OSError as error:  # read-only folder, full disk ...
        raise ConfigError(f"cannot write the LM to {out}: {error.strerror or error}") from None


def _summary(
    model: NGramModel, out: Path, units: TextUnits, heldout: list[str] | None, seconds: float
) -> None:
    counts = ", ".join(f"{n}-grams {c:,}" for n, c in enumerate(model.counts, 1))
    print(f"order {model.order} {units.unit} LM: {counts}")
    print(f"vocabulary: {len(model.vocabulary):,} {units.unit}s (+ <s>, </s>, <unk>)")
    for n, (d1, d2, d3) in enumerate(model.discounts, 1):
        print(f"discounts {n}-grams: D1 {d1:.3f}  D2 {d2:.3f}  D3+ {d3:.3f}")
    print(f"estimated in {seconds:.1f} s")
    print(f"wrote {out / LM_FILE} and {out / UNIGRAMS_FILE}")
    if model.order < 2:
        print("note: KenLM (flashlight, pyctcdecode) loads models of order 2 or more only")
    if heldout is not None:
        ppl = model.perplexity(tokens for tokens in map(units.split, heldout) if tokens)
        share = 100 * ppl.oov / max(1, ppl.tokens)
        print(
            f"held-out: {ppl.sentences:,} sentences, {ppl.tokens:,} {units.unit}s, "
            f"OOV {ppl.oov:,} ({share:.1f} %), perplexity {ppl.perplexity:.1f} "
            f"(excluding OOV {ppl.perplexity_known:.1f})"
        )


def _tune(argv: list[str]) -> None:
    from ds2hub.lm.tune import tune_main  # imported on use: it loads the training stack

    tune_main(argv)


# One entry per subcommand: `ds2hub lm NAME ARGS...` calls SUBCOMMANDS[NAME](ARGS).
SUBCOMMANDS: dict[str, Callable[[list[str]], None]] = {"build": build_main, "tune": _tune}
SUMMARIES = {  # `ds2hub lm --help`: a line each
    "build": "estimate an n-gram LM (ARPA) from text files, one sentence a line",
    "tune": "grid-search a model's LM weight and word score; store the best with the model",
}


def lm_main(argv: list[str]) -> None:
    """`ds2hub lm SUBCOMMAND ...`: dispatches to `SUBCOMMANDS`."""
    names = ", ".join(SUBCOMMANDS)
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: ds2hub lm {{{names}}} ...  (ds2hub lm SUBCOMMAND --help for its options)\n")
        print("\n".join(f"  {name:<7}{SUMMARIES[name]}" for name in SUBCOMMANDS))
        return
    if not argv:
        raise ConfigError(f"ds2hub lm needs a subcommand: one of {names}")
    if argv[0] not in SUBCOMMANDS:
        raise ConfigError(f"ds2hub lm: unknown subcommand {argv[0]!r}; choose one of: {names}")
    SUBCOMMANDS[argv[0]](argv[1:])
