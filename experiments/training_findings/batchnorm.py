"""Finding 1 (Deep Speech 2, section 3.2, Table 1): sequence-wise batch norm helps, more for
deeper recurrent stacks; and where it sits (on the layer input, ds2hub's default, or on W x inside
the recurrence, the paper's placement).

Simple clipped-ReLU RNNs (the paper's Table 1 networks) of 1, 3 and 5 bidirectional layers, each
at base.yaml's parameter count, with and without BN; BN on W x for 3 layers.

    uv run python experiments/training_findings/batchnorm.py [--seeds 0 1]
"""

from __future__ import annotations

import argparse

from common import (
    arch_overrides,
    at_step,
    budgeted,
    last_loss,
    mean_sd,
    parameters,
    run,
    seeded,
    table,
)


def variants() -> dict[str, dict]:
    """Name -> architecture changes."""
    out = {}
    for depth in (1, 3, 5):
        out[f"rnn{depth}-nobn"] = dict(rnn_type="rnn", rnn_layers=depth, batch_norm=False)
        out[f"rnn{depth}-bn"] = dict(rnn_type="rnn", rnn_layers=depth)
    out["rnn3-bnproj"] = dict(rnn_type="rnn", rnn_layers=3, batch_norm_placement="projection")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    rows = []
    for name, changes in variants().items():
        arch = budgeted(**changes)
        results = [
            run(f"{name}-sorta-s{seed}", [*seeded(seed), *arch_overrides(arch)])
            for seed in args.seeds
        ]
        rows.append([
            name, f"{parameters(arch) / 1e6:.2f}M", arch.rnn_hidden,
            " / ".join(f"{last_loss(r):.1f}" for r in results),
            mean_sd([at_step(r["val_cer"], 100) for r in results]),
            mean_sd([r["test_cer"] for r in results]),
            mean_sd([r["test_wer"] for r in results]),
            " / ".join(f"{r['minutes']:.1f}" for r in results),
        ])  # fmt: skip
        print(table(HEADER, rows[-1:]), flush=True)
    print(f"\nseeds {args.seeds}\n" + table(HEADER, rows))


HEADER = ["network", "params", "hidden", "final train loss (per seed)", "val CER % at step 100",
          "test CER %", "test WER %", "minutes (per seed)"]  # fmt: skip


if __name__ == "__main__":
    main()
