"""Finding 2 (Deep Speech 2, *SortaGrad*, Table 2): SortaGrad (the first epoch in increasing
order of length) improves early training and the final error, with and without batch norm.

3 clipped-ReLU RNN layers at base.yaml's parameter count; sorted vs shuffled first epoch, with
and without BN, over several seeds (the seed sets both the weights and the batch order).

    uv run python experiments/training_findings/sortagrad.py --steps 100 --seeds 0 1 2   # the first epoch
    uv run python experiments/training_findings/sortagrad.py --steps 250 --seeds 0 1 2   # 2.5 epochs

The measures that compare the arms are on the validation set at a given step (loss and CER). The
training loss over the first epoch is printed too, but it is biased towards the sorted arm: the
per-utterance CTC loss grows with length, and the sorted epoch sees the short utterances first.
"""

from __future__ import annotations

import argparse

from common import arch_overrides, at_step, budgeted, mean_sd, run, seeded, table

HEADER = ["BN", "first epoch", "val loss at step 100", "val CER % at step 100",
          "val CER % at step 100 per seed", "test CER % (last step)", "test CER % per seed",
          "test WER %", "train loss, first epoch (length-biased)"]  # fmt: skip
FIRST_EPOCH = 100  # steps: base.yaml's 1,600 training utterances in batches of 16


def first_epoch_loss(result: dict) -> float:
    """Mean training loss over the first epoch's logged steps."""
    values = [v for s, v in result["train_loss"] if s < FIRST_EPOCH]
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--steps", type=int, default=250, help="training steps (100: the sorted epoch alone)"
    )
    args = parser.parse_args()
    steps = [] if args.steps == 250 else [f"--trainer.max_steps={args.steps}"]
    suffix = "" if args.steps == 250 else f"-{args.steps}steps"
    rows, curves = [], {}
    for bn in (True, False):
        arch = arch_overrides(budgeted(rnn_type="rnn", rnn_layers=3, batch_norm=bn))
        for sorta in (True, False):
            tag = f"rnn3-{'bn' if bn else 'nobn'}-{'sorta' if sorta else 'shuffled'}"
            options = [*steps, *([] if sorta else ["--data.sortagrad=false"])]
            results = [
                run(f"{tag}{suffix}-s{s}", [*seeded(s), *arch, *options]) for s in args.seeds
            ]
            curves[tag] = results
            rows.append([
                "yes" if bn else "no", "sorted" if sorta else "shuffled",
                mean_sd([at_step(r["val_loss"], FIRST_EPOCH) for r in results], scale=1),
                mean_sd([at_step(r["val_cer"], FIRST_EPOCH) for r in results]),
                " / ".join(f"{100 * at_step(r['val_cer'], FIRST_EPOCH):.1f}" for r in results),
                mean_sd([r["test_cer"] for r in results]),
                " / ".join(f"{100 * r['test_cer']:.1f}" for r in results),
                mean_sd([r["test_wer"] for r in results]),
                mean_sd([first_epoch_loss(r) for r in results], scale=1),
            ])  # fmt: skip
            print(table(HEADER, rows[-1:]), flush=True)
    print(f"\nseeds {args.seeds}\n" + table(HEADER, rows))
    print("\nvalidation CER % by step (mean over seeds)")
    steps = [s + 1 for s, _ in curves[next(iter(curves))][0]["val_cer"]]
    print(table(["run", *map(str, steps)], [
        [tag, *(f"{100 * sum(r['val_cer'][i][1] for r in rs) / len(rs):.1f}"
                for i in range(len(steps)))]
        for tag, rs in curves.items()
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
