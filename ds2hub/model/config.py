"""`DeepSpeech2Config`: the one JSON-able description of the network (recipe `arch`, hub
`config.json` and checkpoints all store exactly this)."""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

RNNType = Literal["gru", "lstm", "rnn"]
BatchNormPlacement = Literal["input", "projection"]

# The `conv_kernel_freq` of a 1D (time-only) layer: its window spans every frequency bin it
# receives, unpadded (the paper's Table 4 compares such layers with 2D ones).
FULL_BAND = 0

# Sane bounds (inclusive) per integer field, conv fields per entry: generous for every preset
# (`paper-streaming`: rnn_hidden 1536, fc_hidden 1536, lookahead 20, 96 channels, kernels 41), and
# refusing, before anything is allocated, the sizes a hostile `config.json` would ask for
# (`rnn_hidden: 60000` is a 43 GB GRU).
BOUNDS: dict[str, tuple[int, int]] = {
    "n_features": (1, 4096),
    "conv_channels": (1, 1024),
    "conv_kernel_freq": (FULL_BAND, 255),
    "conv_kernel_time": (1, 255),
    "conv_stride_freq": (1, 16),
    "conv_stride_time": (1, 16),
    "rnn_layers": (1, 7),
    "rnn_hidden": (1, 8192),
    "lookahead": (0, 1000),
    "fc_hidden": (0, 8192),
}
# Fields within bounds can still multiply into a huge network: models are refused past this many
# parameters (4 GB in float32, ten times the paper's ~100M) before their weights are allocated.
MAX_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class DeepSpeech2Config:
    """Architecture of a Deep Speech 2 network (vocabulary size comes from the tokenizer).

    Conv fields hold one entry per convolution layer (1 to 3 layers). Kernels and strides are
    given separately for frequency and time, as in the paper's Table 4; a `conv_kernel_freq` of 0
    makes that layer 1D (time-only: its window spans every frequency bin it receives).
    """

    n_features: int = 161  # spectrogram bins (20 ms windows at 16 kHz)
    conv_channels: tuple[int, ...] = (32, 32)
    conv_kernel_freq: tuple[int, ...] = (41, 21)
    conv_kernel_time: tuple[int, ...] = (11, 11)
    conv_stride_freq: tuple[int, ...] = (2, 2)
    conv_stride_time: tuple[int, ...] = (2, 1)  # product = total time stride (2 chars, 4 bigrams)
    rnn_type: RNNType = "gru"  # "rnn" is the paper's vanilla RNN with clipped ReLU
    rnn_layers: int = 5  # 1 to 7
    rnn_hidden: int = 512  # per direction; directions are summed (paper eq. 3)
    bidirectional: bool = True  # False for forward-only (streaming) models
    batch_norm: bool = True  # sequence-wise BN on conv outputs and on recurrent layers (below)
    # Where a recurrent layer's BN sits: on its input x ("input"), or on W x inside the
    # recurrence, h_t = f(B(W x_t) + U h_{t-1}) ("projection", the paper's eq. 5; rnn_type "rnn"
    # only, whose input projection is explicit). experiments/training_findings/README.md
    # compares them.
    batch_norm_placement: BatchNormPlacement = "input"
    lookahead: int = 0  # row-convolution future context in frames (forward-only models)
    fc_hidden: int = 0  # width of a fully connected layer before the output (0: none)

    def __post_init__(self) -> None:
        conv = tuple(f.name for f in fields(self) if f.name.startswith("conv_"))
        for name in conv:  # JSON and YAML give lists; keep the dataclass hashable
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{name} must be a list of integers, got {value!r}")
            object.__setattr__(self, name, tuple(_integer(name, v) for v in value))
        for name, (low, high) in BOUNDS.items():
            values = getattr(self, name) if name in conv else (_integer(name, getattr(self, name)),)
            if any(not low <= v <= high for v in values):
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is out of bounds: {low} to {high} supported"
                )
        for name in ("bidirectional", "batch_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        n = len(self.conv_channels)
        if not 1 <= n <= 3:
            raise ValueError(f"1 to 3 conv layers are supported, got {n}")
        if any(len(getattr(self, name)) != n for name in conv):
            raise ValueError(f"all of {conv} need one entry per conv layer ({n})")
        if any(k % 2 == 0 for k in self.conv_kernel_time + self.conv_kernel_freq if k != FULL_BAND):
            raise ValueError(
                "conv kernels must have odd sizes (centred 'same' padding; conv_kernel_freq 0 "
                "spans the whole band)"
            )
        if any(
            k == FULL_BAND and s != 1 for k, s in zip(self.conv_kernel_freq, self.conv_stride_freq)
        ):
            raise ValueError(
                "a 1D layer (conv_kernel_freq 0) spans the whole band: its conv_stride_freq must be 1"
            )
        if self.rnn_type not in ("gru", "lstm", "rnn"):
            raise ValueError(f"rnn_type must be gru, lstm or rnn, got {self.rnn_type!r}")
        if self.batch_norm_placement not in ("input", "projection"):
            raise ValueError(
                f"batch_norm_placement must be input or projection, got {self.batch_norm_placement!r}"
            )
        if self.batch_norm_placement == "projection" and self.rnn_type != "rnn":
            raise ValueError(
                "batch_norm_placement: projection needs rnn_type: rnn (torch's fused GRU and LSTM "
                "project their input inside the kernel)"
            )
        if self.lookahead and self.bidirectional:
            raise ValueError(
                "row convolution (lookahead) is for forward-only models: set bidirectional: false"
            )

    @property
    def time_stride(self) -> int:
        """Input frames per output frame."""
        return math.prod(self.conv_stride_time)

    @property
    def streaming(self) -> bool:
        """Whether the network only looks a bounded number of frames into the future."""
        return not self.bidirectional

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeepSpeech2Config:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown DeepSpeech2Config fields: {sorted(unknown)}")
        return cls(**data)


def _integer(name: str, value: Any) -> int:
    """`value` as an int (ints and numpy integers; not floats, strings or booleans)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
