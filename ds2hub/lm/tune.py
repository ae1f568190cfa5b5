"""`ds2hub lm tune`: choose α (LM weight) and β (word score) on validation data.

The acoustic model runs once; every (α, β) of the grid then decodes the same log-probabilities,
so the grid costs only decoding time. The surface goes to `DIR/tune.csv` and the best setting to a
decoding setup in DIR (`ds2hub.decoding.bundle`), which `ds2hub push` ships with the model. A grid,
not Bayesian search: two parameters and a few dozen points are cheap, and it shows the whole
surface.
"""

from __future__ import annotations

import csv
import itertools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ds2hub.arguments import ArgumentParser
from ds2hub.decoding.bundle import FOLDER_ENTRIES, save_decoding
from ds2hub.decoding.config import DecoderConfig
from ds2hub.decoding.decoder import text_decoder
from ds2hub.errors import ConfigError
from ds2hub.inference.evaluate import ErrorRates, error_rates, model_outputs, word_metric
from ds2hub.tokenizers import Tokenizer
from ds2hub.training.runs import datamodule_from_config, find_run_config, stage_batches

SURFACE_FILE = "tune.csv"
DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
DEFAULT_BETAS = (-1.0, 0.0, 1.0, 2.0, 3.0)


@dataclass
class CachedLogits:
    """A stage's model outputs, kept so every setting decodes the same frames."""

    batches: list[tuple[torch.Tensor, torch.Tensor, list[str]]]  # log-probs, lengths, references
    tokenizer: Tokenizer
    audio_seconds: float = 0.0  # of speech behind the logits (feature frames x hop)

    @property
    def utterances(self) -> int:
        return sum(len(refs) for _, _, refs in self.batches)


@torch.inference_mode()
def cache_logits(
    recognizer, datamodule, stage: str = "val", max_utterances: int | None = None
) -> CachedLogits:
    """Runs the model once over a stage of `datamodule` (as `ds2hub push` evaluates it)."""
    batches, frames = [], 0
    outputs = model_outputs(recognizer, stage_batches(datamodule, stage), max_utterances)
    for logits, lengths, batch in outputs:
        batches.append((torch.log_softmax(logits.float(), dim=-1), lengths, batch["texts"]))
        frames += int(batch["feature_lengths"].sum())
    if not batches:
        raise ConfigError(f"no {stage} utterances to tune on")
    return CachedLogits(batches, recognizer.tokenizer, frames * recognizer.features.hop_ms / 1000)


def error_rate(decode: Callable, cached: CachedLogits, metric: str) -> float:
    """The `metric` error rate of `decode` over the cached outputs (`error_rates`)."""
    return error_rates(decode, cached.batches, ErrorRates(cached.tokenizer, [metric]))[metric]


def grid_search(
    base: DecoderConfig,
    cached: CachedLogits,
    metric: str,
    alphas: Sequence[float],
    betas: Sequence[float],
    log: Callable[[str], None] = print,
    decoder: Callable | None = None,
) -> list[tuple[float, float, float]]:
    """(α, β, error rate) for every grid point, in grid order. The LM and lexicon are loaded
    once: each point reweights the same decoder (`reweight`; `decoder`, if given, is `base`'s),
    where its backend can."""
    surface = []
    decoder = decoder or text_decoder(cached.tokenizer, base)
    try:
        for alpha, beta in itertools.product(alphas, betas):
            if hasattr(decoder, "reweight"):
                decode = decoder.reweight(alpha, beta)
            else:
                config = base.replace(lm_weight=alpha, word_score=beta)
                decode = text_decoder(cached.tokenizer, config)
            rate = error_rate(decode, cached, metric)
            surface.append((alpha, beta, rate))
            log(f"alpha {alpha:5.2f}  beta {beta:5.2f}  {metric.upper()} {100 * rate:6.2f} %")
    finally:  # a decoder someone else holds (a recogniser's cache) gets its weights back
        if hasattr(decoder, "reweight"):
            decoder.reweight(base.lm_weight, base.word_score)
    return surface


def format_surface(surface: list[tuple[float, float, float]], metric: str) -> str:
    """The surface as a table: rows α, columns β, error rates in percent."""
    betas = sorted({b for _, b, _ in surface})
    table = {(a, b): r for a, b, r in surface}
    lines = [f"{metric.upper()} %  " + "".join(f"b={b:<7g}" for b in betas)]
    for a in sorted({a for a, _, _ in surface}):
        lines.append(f"a={a:<6g} " + "".join(f"{100 * table[(a, b)]:<9.2f}" for b in betas))
    return "\n".join(lines)


def edge_warnings(
    alpha: float, beta: float, alphas: Sequence[float], betas: Sequence[float]
) -> list[str]:
    """A warning for the best α and for the best β that is the smallest or largest value of a
    grid of several (the optimum may lie beyond it); none for values inside their grids."""
    return [
        f"warning: the best {name} ({value:g}) is on the edge of the grid: the optimum may lie "
        f"beyond it; widen --{name}s"
        for name, value, grid in (("alpha", alpha, alphas), ("beta", beta, betas))
        if len(set(grid)) > 1 and value in (min(grid), max(grid))
    ]


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, not {text!r}") from None


def _check_out(out: Path) -> None:
    """`out` may be new, empty, or hold only what an earlier tune wrote."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if out.is_dir():
        foreign = sorted({p.name for p in out.iterdir()} - {*FOLDER_ENTRIES, SURFACE_FILE})
        if foreign:
            raise ConfigError(
                f"--out {out} holds files ds2hub lm tune did not write ({', '.join(foreign)}); "
                "nothing was changed: choose a new or empty folder"
            )
        if (out / "README.md").exists():
            raise ConfigError(f"--out {out} is a published model folder")
        if any(out.iterdir()) and not (out / SURFACE_FILE).is_file():
            # Same names as ours, but no surface file: not an earlier tune's output.
            raise ConfigError(
                f"--out {out} holds decoding files that ds2hub lm tune did not write (no "
                f"{SURFACE_FILE}); nothing was changed: choose a new or empty folder"
            )


def tune_main(argv: list[str]) -> None:
    """`ds2hub lm tune`: see the module doc."""
    parser = ArgumentParser(
        prog="ds2hub lm tune",
        description="Grid-search the LM weight (alpha) and word score (beta) on validation data "
        "and store the best decoding setup with the model.",
    )
    parser.add_argument("model", help=".ckpt from ds2hub fit (or a local model folder)")
    parser.add_argument("--lm", required=True, help="ARPA or KenLM binary (ds2hub lm build)")
    parser.add_argument("--lexicon", help="word list for the flashlight search")
    parser.add_argument("--backend", choices=("flashlight", "pyctcdecode"), default="flashlight")
    parser.add_argument("--beam-size", type=int, default=32)
    parser.add_argument("--alphas", default=",".join(map(str, DEFAULT_ALPHAS)))
    parser.add_argument("--betas", default=",".join(map(str, DEFAULT_BETAS)))
    parser.add_argument("--config", help="the run's recipe (default: its config.yaml)")
    parser.add_argument(
        "--stage",
        choices=("val", "test"),
        default="val",
        help="data to tune on (val; test only to reproduce a published figure)",
    )
    parser.add_argument("--max-utterances", type=int)
    parser.add_argument(
        "--out", help="folder for the setup (default: decoding/ beside the checkpoint)"
    )
    args = parser.parse_args(argv)

    import yaml

    from ds2hub.inference.recognizer import from_pretrained

    model = Path(args.model).expanduser()
    if not model.exists():
        raise ConfigError(f"model {args.model!r} does not exist")
    if not Path(args.lm).expanduser().is_file():
        raise ConfigError(f"language model {args.lm!r} (--lm) does not exist")
    is_ckpt = model.suffix == ".ckpt"
    config = Path(args.config) if args.config else (find_run_config(model) if is_ckpt else None)
    if config is None or not config.is_file():
        raise ConfigError("no recipe to read the validation data from: pass --config")
    out = Path(args.out) if args.out else (model.parent.parent / "decoding" if is_ckpt else None)
    if out is None:
        raise ConfigError("pass --out: a model folder's card would no longer match its decoding")
    _check_out(out)
    base = DecoderConfig(
        backend=args.backend, beam_size=args.beam_size, lm=str(args.lm), lexicon=args.lexicon
    )
    recognizer = from_pretrained(model)
    decoder = text_decoder(recognizer.tokenizer, base)  # a bad LM or lexicon: before the model
    datamodule = datamodule_from_config(yaml.safe_load(config.read_text()), recognizer)
    cached = cache_logits(recognizer, datamodule, args.stage, args.max_utterances)
    metric = "wer" if word_metric(recognizer.tokenizer) == "wer" else "cer"
    print(f"tuning on {cached.utterances} {args.stage} utterances ({metric.upper()})")
    greedy = error_rate(text_decoder(recognizer.tokenizer), cached, metric)
    print(f"greedy: {metric.upper()} {100 * greedy:.2f} %")
    alphas, betas = _floats(args.alphas), _floats(args.betas)
    surface = grid_search(base, cached, metric, alphas, betas, decoder=decoder)
    print(format_surface(surface, metric))
    alpha, beta, best = min(surface, key=lambda s: s[2])
    print(
        f"best: alpha {alpha:g}, beta {beta:g}: {metric.upper()} {100 * best:.2f} % "
        f"(greedy {100 * greedy:.2f} %)"
    )
    for warning in edge_warnings(alpha, beta, alphas, betas):
        print(warning, file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    save_decoding(out, base.replace(lm_weight=alpha, word_score=beta), recognizer.tokenizer)
    with (out / SURFACE_FILE).open("w", newline="") as f:
        csv.writer(f).writerows([("alpha", "beta", metric), *surface])
    print(f"wrote {out} (ds2hub push ships it with the model)")
