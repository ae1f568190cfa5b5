"""Named architectures: the paper's sizes next to models that train on a laptop CPU."""

from __future__ import annotations

from dataclasses import replace

from ds2hub.model.config import DeepSpeech2Config

# Paper, English characters: 3 x 2D conv + 7 bidirectional GRU layers (about 100M parameters).
PAPER = DeepSpeech2Config(
    conv_channels=(32, 32, 96),
    conv_kernel_freq=(41, 21, 21),
    conv_kernel_time=(11, 11, 11),
    conv_stride_freq=(2, 2, 2),
    conv_stride_time=(2, 1, 1),
    rnn_layers=7,
    rnn_hidden=1024,
    fc_hidden=1024,
)

PRESETS: dict[str, DeepSpeech2Config] = {
    # The demo size: trains on spoken digits on 2 CPU cores in minutes.
    "tiny": DeepSpeech2Config(
        conv_channels=(16, 16),
        conv_kernel_freq=(21, 11),
        conv_kernel_time=(11, 5),
        rnn_layers=2,
        rnn_hidden=192,
    ),
    # A small CPU/GPU model for development corpora (~6M parameters).
    "small": DeepSpeech2Config(rnn_layers=3, rnn_hidden=320),
    "paper": PAPER,
    # Paper, English bigrams: the same network with a total time stride of 4.
    "paper-bigram": replace(PAPER, conv_stride_time=(2, 2, 1)),
    # Paper, deployment: forward-only GRUs with a row convolution looking 20 frames ahead. It
    # streams (`recognizer.stream()`) when trained with data.features.normalization: global.
    "paper-streaming": replace(
        PAPER, rnn_hidden=1536, fc_hidden=1536, bidirectional=False, lookahead=20
    ),
}


def available_presets() -> list[str]:
    """Names accepted by `get_preset`."""
    return sorted(PRESETS)


def get_preset(name: str) -> DeepSpeech2Config:
    """The architecture registered under `name`."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose from {available_presets()}") from None


def size_tag(num_parameters: int) -> str:
    """A coarse model-size tag for comparing runs (`size-1M`, `size-100M`)."""
    m = num_parameters / 1e6
    return f"size-{m:.0f}M" if m >= 1 else f"size-{num_parameters / 1e3:.0f}K"
