"""Finding 4 (Deep Speech 2, its comparison of simple RNNs and GRUs, Table 3, and of
frequency convolutions, Table 4): GRUs against simple
(clipped-ReLU) RNNs at a comparable parameter budget, and 1, 2 or 3 layers of 2D convolution
against 1 or 2 layers of 1D (time-only) convolution.

Every network has base.yaml's parameter count (rnn_hidden is sized to it); BN and SortaGrad on.
A 1D layer (`conv_kernel_freq: 0`) spans all 161 bins; it has 128 channels (this experiment's choice:
as many channels as the 2D stack has outputs, 328, would take half the parameter budget), kernel
11 then 5 in time; `conv_stride_freq` is 1.

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
    "conv1d1-gru3": dict(
        rnn_layers=3,
        conv_channels=(128,),
        conv_kernel_freq=(0,),
        conv_kernel_time=(11,),
        conv_stride_freq=(1,),
        conv_stride_time=(2,),
    ),
    "conv1d2-gru3": dict(
        rnn_layers=3,
        conv_channels=(128, 128),
        conv_kernel_freq=(0, 0),
        conv_kernel_time=(11, 5),
        conv_stride_freq=(1, 1),
        conv_stride_time=(2, 1),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    compare_networks(VARIANTS, args.seeds)


if __name__ == "__main__":
    main()
