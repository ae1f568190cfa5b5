"""What LM decoding gains, and what it costs: error rates greedy vs each backend, and decoding
real-time factor per CPU core at several beam sizes (issue 9).

    uv run python experiments/lm_decoding/decoding.py --model CKPT --config RECIPE \
        --lm LM [--lexicon WORDS] [--backends flashlight,pyctcdecode] [--beams 16,64,256] \
        [--alphas 0.5,1,2 --betas 0,1,2]

The model runs once per split; decoders then share its log-probabilities. α and β are chosen per
backend on the validation split (grid, beam 32), then the test split is decoded at each beam.
Real-time factor per core = decoding CPU seconds (this process, torch and numpy held to one
thread) / seconds of test audio; building a decoder (loading the LM) is not counted.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: the figure is per core

import torch  # noqa: E402
import yaml  # noqa: E402

from ds2hub.decoding import DecoderConfig, text_decoder  # noqa: E402
from ds2hub.errors import ConfigError  # noqa: E402
from ds2hub.inference.evaluate import word_metric  # noqa: E402
from ds2hub.inference.recognizer import from_pretrained  # noqa: E402
from ds2hub.lm.tune import cache_logits, error_rate, grid_search  # noqa: E402
from ds2hub.training.runs import datamodule_from_config  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--lm", default=None)
    parser.add_argument("--lexicon", default=None)
    parser.add_argument("--backends", default="flashlight,pyctcdecode")
    parser.add_argument("--beams", default="16,64,256")
    parser.add_argument("--alphas", default="0.5,1,1.5,2")
    parser.add_argument("--betas", default="0,1,2")
    parser.add_argument("--tune-beam", type=int, default=32)
    parser.add_argument("--metric", choices=("wer", "cer"), default=None)
    parser.add_argument("--max-utterances", type=int, default=None, help="per split")
    parser.add_argument(
        "--max-val", type=int, default=None, help="validation utterances to tune on"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    recognizer = from_pretrained(args.model)
    tok = recognizer.tokenizer
    recipe = yaml.safe_load(open(args.config))
    metric = args.metric or ("wer" if word_metric(tok) == "wer" else "cer")
    cached = {
        stage: cache_logits(
            recognizer, datamodule_from_config(recipe, recognizer), stage, args.max_utterances
        )
        for stage in ("val", "test")
    }
    test = cached["test"]
    print(f"model {args.model} ({tok.kind}); LM {args.lm}; lexicon {args.lexicon}")
    print(
        f"test: {test.utterances} utterances, {test.audio_seconds:.0f} s of audio; "
        f"validation: {cached['val'].utterances} utterances"
    )

    def timed(decode, data):
        start = time.process_time()
        rate = error_rate(decode, data, metric)
        return rate, time.process_time() - start

    greedy_val, _ = timed(text_decoder(tok), cached["val"])
    greedy, seconds = timed(text_decoder(tok), test)
    print(
        f"greedy: val {metric.upper()} {100 * greedy_val:.2f} %, test {metric.upper()} "
        f"{100 * greedy:.2f} %, RTF/core {seconds / test.audio_seconds:.4f}"
    )
    rows = [("greedy", "-", "-", "-", greedy, seconds / test.audio_seconds)]
    for backend in args.backends.split(","):
        base = DecoderConfig(
            backend=backend, lm=args.lm, lexicon=args.lexicon, beam_size=args.tune_beam
        )
        try:
            text_decoder(tok, base)
        except ConfigError as e:
            print(f"{backend}: not measured: {e}")
            continue
        surface = grid_search(
            base,
            cached["val"],
            metric,
            floats(args.alphas),
            floats(args.betas),
            log=lambda line: None,
        )
        alpha, beta, best = min(surface, key=lambda s: s[2])
        print(
            f"{backend}: alpha {alpha:g}, beta {beta:g} chosen on validation "
            f"({metric.upper()} {100 * best:.2f} %)"
        )
        for beam in map(int, args.beams.split(",")):
            decode = text_decoder(
                tok, base.replace(beam_size=beam, lm_weight=alpha, word_score=beta)
            )
            rate, seconds = timed(decode, test)
            rtf = seconds / test.audio_seconds
            rows.append((backend, beam, alpha, beta, rate, rtf))
            print(
                f"{backend} beam {beam}: test {metric.upper()} {100 * rate:.2f} %, "
                f"RTF/core {rtf:.4f}",
                flush=True,
            )
    print(f"\n| decoding | beam | alpha | beta | test {metric.upper()} | RTF per core |")
    print("|---|---|---|---|---|---|")
    for name, beam, alpha, beta, rate, rtf in rows:
        print(f"| {name} | {beam} | {alpha} | {beta} | {100 * rate:.2f} % | {rtf:.4f} |")


if __name__ == "__main__":
    main()
