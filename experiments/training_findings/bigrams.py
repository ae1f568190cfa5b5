"""Finding 3 (Deep Speech 2, *Striding*, Table 5): English bigram outputs allow a temporal stride
of 4, which cuts the computation with little or no loss against characters at stride 2, while
characters at stride 4 lose accuracy.

English sentences spoken by espeak-ng (experiments/lm_decoding/english_espeak.py makes them from
the shared LJ Speech text: 2,000 training sentences; test: the 200 held-out sentences every English
experiment uses, spoken by voice variants training never hears); training keeps sentences of at most
8 s. One network (2 x 2D conv,
2 bidirectional GRU layers of 192), three outputs: characters at time stride 2, characters at
stride 4, bigrams at stride 4. Greedy decoding (no LM), last weights, one seed.

    uv run python experiments/lm_decoding/english_espeak.py --text ../shared/data/text/ljspeech_sentences.txt \
        --out runs/findings/english --train 2000 --max-words 12 --threads 1
    uv run python experiments/training_findings/bigrams.py --data runs/findings/english
    uv run python experiments/training_findings/bigrams.py --steps 750 --outputs chars-stride4 bigrams-stride4
    uv run python experiments/training_findings/bigrams.py --timing   # FLOPs and step time alone

`--timing` counts each network's training-step FLOPs per audio second (torch.utils.flop_counter)
and times its steps on random 4-second batches in one process, the three networks in turn: run
it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import replace

from common import BASE_ARCH, REPO, arch_overrides, at_step, run, seeded, table

from ds2hub.tokenizers import BigramTokenizer, CharTokenizer

ARCH = replace(BASE_ARCH, conv_channels=(16, 16))  # the digits network, 16-channel convolutions
TOKENIZERS = {"chars": CharTokenizer, "bigrams": BigramTokenizer}
VARIANTS = {  # name -> (tokenizer, conv time strides, output tokens per second of speech)
    "chars-stride2": ("chars", (2, 1), 14.0),
    "chars-stride4": ("chars", (2, 2), 14.0),
    "bigrams-stride4": ("bigrams", (2, 2), 8.0),
}
STEPS = 250  # the budget of the first runs; --steps gives longer ones (named "-<steps>steps")


def run_name(name: str, steps: int) -> str:
    return f"english-{name}-s0" if steps == STEPS else f"english-{name}-{steps}steps-s0"


def options(name: str, data: str, steps: int = STEPS) -> list[str]:
    tokenizer, strides, _ = VARIANTS[name]
    return [
        *seeded(0),
        *arch_overrides(replace(ARCH, conv_stride_time=strides)),
        f"--data.tokenizer.class_path=ds2hub.tokenizers.{TOKENIZERS[tokenizer].__name__}",
        f"--data.path={data}",
        "--data.max_duration=8.0",
        "--data.bucketing=true",
        f"--trainer.max_steps={steps}",
        "--trainer.val_check_interval=125",
    ]


def accuracy(data: str, steps: int = STEPS, names: list[str] | None = None) -> None:
    header = ["output", "time stride", "val CER % at step 125", f"val CER % at step {steps}",
              "test CER %", "test WER %", "fit minutes"]  # fmt: skip
    rows = []
    for name in names or list(VARIANTS):
        tokenizer, strides, _ = VARIANTS[name]
        r = run(run_name(name, steps), options(name, data, steps))
        rows.append([
            tokenizer, strides[0] * strides[1], f"{100 * at_step(r['val_cer'], 125):.1f}",
            f"{100 * at_step(r['val_cer'], steps):.1f}", f"{100 * r['test_cer']:.1f}",
            f"{100 * r['test_wer']:.1f}", f"{r['minutes']:.1f}",
        ])  # fmt: skip
        print(table(header, rows[-1:]), flush=True)
    print("\n" + table(header, rows))


def timing(rounds: int = 3) -> None:
    spec = importlib.util.spec_from_file_location(
        "train_throughput", REPO / "experiments/train_throughput/train_throughput.py"
    )
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    header = ["output", "time stride", "GFLOP per audio s (train step)", "step s (16 x 4 s)",
              "audio s / s", "vs chars-stride2"]  # fmt: skip
    best: dict[str, dict] = {}
    for _ in range(rounds):  # interleaved, best of each: the machine is shared and noisy
        for name, (tokenizer, strides, rate) in VARIANTS.items():
            r = throughput.benchmark(
                replace(ARCH, conv_stride_time=strides), "cpu", "32-true", 16, 4.0, 3,
                vocab_size=TOKENIZERS[tokenizer]().vocab_size, tokens_per_second=rate,
            )  # fmt: skip
            if name not in best or r["step_s"] < best[name]["step_s"]:
                best[name] = r
    base = best["chars-stride2"]["step_s"]
    rows = [
        [VARIANTS[n][0], VARIANTS[n][1][0] * VARIANTS[n][1][1], f"{r['gflop_per_audio_s']:.2f}",
         f"{r['step_s']:.2f}", f"{r['audio_s_per_s']:.1f}", f"{r['step_s'] / base:.2f}"]
        for n, r in best.items()
    ]  # fmt: skip
    print(table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="runs/findings/english")
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps per run")
    parser.add_argument("--outputs", nargs="+", choices=list(VARIANTS), help="default: all three")
    args = parser.parse_args()
    timing() if args.timing else accuracy(args.data, args.steps, args.outputs)


if __name__ == "__main__":
    main()
