"""Finding 4 (Deep Speech 2, sections 3.3 and 3.5, Tables 3 and 4): GRUs against simple
(clipped-ReLU) RNNs at a comparable parameter budget, and 1, 2 or 3 layers of 2D convolution.

Every network has base.yaml's parameter count (rnn_hidden is sized to it); BN and SortaGrad on.
The paper also compares 1D (time-only) convolutions; ds2hub's front end is 2D only, so that half
of its Table 4 is not measured here.

    uv run python experiments/training_findings/architecture.py [--seeds 0 1]
"""

from __future__ import annotations

import argparse

from common import compare_networks

VARIANTS = {
    # Recurrence: the paper's Table 3 (GRU ahead at every depth it tried).
    "rnn3-bn": dict(rnn_type="rnn", rnn_layers=3),
    "gru3-bn": dict(rnn_type="gru", rnn_layers=3),
    # Convolution front end (paper's Table 4), in front of 3 GRU layers.
    "conv1-gru3": dict(
        rnn_layers=3,
        conv_channels=(8,),
        conv_kernel_freq=(21,),
        conv_kernel_time=(11,),
        conv_stride_freq=(2,),
        conv_stride_time=(2,),
    ),
    "conv3-gru3": dict(
        rnn_layers=3,
        conv_channels=(8, 8, 8),
        conv_kernel_freq=(21, 11, 11),
        conv_kernel_time=(11, 5, 5),
        conv_stride_freq=(2, 2, 2),
        conv_stride_time=(2, 1, 1),
    ),
}
HEADER = ["network", "params", "hidden", "final train loss (per seed)", "val CER % at step 100",
          "test CER %", "test WER %", "minutes (per seed)"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    compare_networks(VARIANTS, args.seeds)


if __name__ == "__main__":
    main()
