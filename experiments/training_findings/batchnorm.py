"""Finding 1 (Deep Speech 2, *Batch Normalization for Deep RNNs*, Table 1): sequence-wise batch norm helps, more for
deeper recurrent stacks; and where it sits (on the layer input, ds2hub's default, or on W x inside
the recurrence, the paper's placement).

Simple clipped-ReLU RNNs (the paper's Table 1 networks) of 1, 3 and 5 bidirectional layers, each
at base.yaml's parameter count, with and without BN; BN on W x for 3 layers.

    uv run python experiments/training_findings/batchnorm.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse

from common import compare_networks


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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    compare_networks(variants(), args.seeds)


if __name__ == "__main__":
    main()
