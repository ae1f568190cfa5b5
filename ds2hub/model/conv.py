"""The convolution front of Deep Speech 2: spectrogram (B, F, T) -> features (B, T', C*F').

Each layer is 2D (a window over frequency and time) or 1D (time-only: the window spans every
frequency bin the layer receives, as a Conv1d over time with the bins as input channels; the
paper's Table 4 compares the two). A 1D layer is written `conv_kernel_freq: 0` (and `conv_stride_freq: 1`).
"""

from __future__ import annotations

import torch
from torch import nn

from ds2hub.model.batchnorm import SequenceWiseBatchNorm, lengths_to_mask
from ds2hub.model.config import FULL_BAND, DeepSpeech2Config

CLIP = 20.0  # the paper's clipped ReLU: min(max(x, 0), 20)


def conv_output_length(
    length: torch.Tensor | int, kernel: int, stride: int, pad: int | None = None
) -> torch.Tensor | int:
    """Outputs of one conv along an axis; `pad` defaults to centred ('same') padding, kernel // 2,
    which gives ceil(length / stride)."""
    pad = kernel // 2 if pad is None else pad
    return (length + 2 * pad - kernel) // stride + 1


class ConvStack(nn.Module):
    """1-3 conv layers over (frequency, time), each with sequence-wise BN and clipped ReLU.

    A 2D layer pads frequency and time to centred windows. A 1D layer (kernel_freq 0) is a Conv2d
    whose window is the whole band, unpadded in frequency, so its output has one frequency bin.

    Padded time frames are zeroed after every layer, so a convolution at an utterance's end reads
    zeros exactly as it would with no batch padding at all.
    """

    def __init__(self, config: DeepSpeech2Config) -> None:
        super().__init__()
        self.config = config
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_ch, freq = 1, config.n_features
        for ch, kf, kt, sf, st in zip(
            config.conv_channels,
            config.conv_kernel_freq,
            config.conv_kernel_time,
            config.conv_stride_freq,
            config.conv_stride_time,
        ):
            # 1D over time: the window spans the whole band, no frequency padding -> 1 bin out.
            kf, pf = (freq, 0) if kf == FULL_BAND else (kf, kf // 2)
            padding = (pf, kt // 2)  # centred windows in time
            conv = nn.Conv2d(in_ch, ch, (kf, kt), (sf, st), padding, bias=not config.batch_norm)
            self.convs.append(conv)
            self.norms.append(SequenceWiseBatchNorm(ch) if config.batch_norm else nn.Identity())
            in_ch, freq = ch, conv_output_length(freq, kf, sf, pf)
        self.output_size = in_ch * freq

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for kt, st in zip(self.config.conv_kernel_time, self.config.conv_stride_time):
            lengths = conv_output_length(lengths, kt, st)
        return lengths

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features: (B, F, T), zero beyond each length. Returns (B, T', C*F') and (B,) lengths."""
        x = features.unsqueeze(1)  # (B, 1, F, T)
        for conv, norm, kt, st in zip(
            self.convs, self.norms, self.config.conv_kernel_time, self.config.conv_stride_time
        ):
            x = conv(x)  # (B, C, F', T')
            lengths = conv_output_length(lengths, kt, st)
            mask = lengths_to_mask(lengths, x.size(-1))  # (B, T')
            if isinstance(norm, SequenceWiseBatchNorm):
                x = norm(x.permute(0, 3, 1, 2), mask).permute(0, 2, 3, 1)  # via (B, T', C, F')
            x = torch.clamp(x, 0.0, CLIP) * mask[:, None, None, :].to(x.dtype)
        b, c, f, t = x.shape
        return x.permute(0, 3, 1, 2).reshape(b, t, c * f), lengths  # (B, T', C*F')
