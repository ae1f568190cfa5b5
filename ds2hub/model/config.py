"""`DeepSpeech2Config`: the one JSON-able description of the network (recipe `arch`, hub
`config.json` and checkpoints all store exactly this)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

RNNType = Literal["gru", "lstm", "rnn"]


@dataclass(frozen=True)
class DeepSpeech2Config:
    """Architecture of a Deep Speech 2 network (vocabulary size comes from the tokenizer).

    Conv fields hold one entry per 2D convolution (1 to 3 layers). Kernels and strides are given
    separately for frequency and time, as in the paper's Table 4.
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
    batch_norm: bool = True  # sequence-wise BN on conv and recurrent inputs (paper sec. 3.2)
    lookahead: int = 0  # row-convolution future context in frames (forward-only models)
    fc_hidden: int = 0  # width of a fully connected layer before the output (0: none)

    def __post_init__(self) -> None:
        conv = tuple(f.name for f in fields(self) if f.name.startswith("conv_"))
        for name in conv:  # JSON and YAML give lists; keep the dataclass hashable
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        n = len(self.conv_channels)
        if not 1 <= n <= 3:
            raise ValueError(f"1 to 3 conv layers are supported, got {n}")
        if any(len(getattr(self, name)) != n for name in conv):
            raise ValueError(f"all of {conv} need one entry per conv layer ({n})")
        if any(k % 2 == 0 for k in self.conv_kernel_time + self.conv_kernel_freq):
            raise ValueError("conv kernels must have odd sizes (centred 'same' padding)")
        if not 1 <= self.rnn_layers <= 7:
            raise ValueError(f"1 to 7 recurrent layers are supported, got {self.rnn_layers}")
        if self.rnn_type not in ("gru", "lstm", "rnn"):
            raise ValueError(f"rnn_type must be gru, lstm or rnn, got {self.rnn_type!r}")
        if self.lookahead < 0:
            raise ValueError("lookahead must be >= 0")
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
