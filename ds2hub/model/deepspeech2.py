"""Deep Speech 2 (Amodei et al., "Deep Speech 2: End-to-End Speech Recognition in English and
Mandarin", ICML 2016): spectrogram -> 2D (or 1D) convolutions -> (bi)directional recurrent
layers with sequence-wise batch norm -> optional row convolution -> fully connected -> CTC
logits."""

from __future__ import annotations

import torch
from torch import nn

from ds2hub.model.batchnorm import SequenceWiseBatchNorm, lengths_to_mask
from ds2hub.model.config import DeepSpeech2Config
from ds2hub.model.conv import CLIP, ConvStack
from ds2hub.model.recurrent import recurrent_stack
from ds2hub.model.rowconv import RowConvolution


class DeepSpeech2(nn.Module):
    """The Deep Speech 2 acoustic model.

    Args:
        config: the architecture.
        vocab_size: CTC output classes including the blank (the tokenizer's `vocab_size`).
    """

    def __init__(self, config: DeepSpeech2Config, vocab_size: int) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError("vocab_size must count the blank and at least one token")
        self.config = config
        self.vocab_size = vocab_size
        self.conv = ConvStack(config)
        self.rnns = recurrent_stack(self.conv.output_size, config)
        width = config.rnn_hidden
        self.rowconv = RowConvolution(width, config.lookahead) if config.lookahead else None
        self.head_norm = SequenceWiseBatchNorm(width) if config.batch_norm else None
        self.fc = nn.Linear(width, config.fc_hidden) if config.fc_hidden else None
        self.output = nn.Linear(config.fc_hidden or width, vocab_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for (B,) input frame counts: the single source of truth for strides."""
        return self.conv.output_lengths(lengths)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Computes CTC logits.

        Args:
            features: (B, F, T) spectrograms, zero-padded beyond each utterance's length.
            lengths: (B,) valid frames per utterance.
        Returns:
            logits (B, T', V) (unnormalised; apply log_softmax for CTC) and (B,) output lengths.
        """
        x, lengths = self.conv(features, lengths)  # (B, T', C*F')
        mask = lengths_to_mask(lengths, x.size(1))  # (B, T')
        for rnn in self.rnns:
            x = rnn(x, lengths, mask)  # (B, T', H)
        if self.rowconv is not None:
            x = self.rowconv(x, mask)
        if self.head_norm is not None:
            x = self.head_norm(x, mask)
        if self.fc is not None:
            x = torch.clamp(self.fc(x), 0.0, CLIP)
        return self.output(x), lengths

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
