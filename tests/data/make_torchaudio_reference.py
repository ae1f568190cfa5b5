"""Writes torchaudio_reference.npz: what ds2hub computed through torchaudio (ds2hub cd12eda,
torch/torchaudio 2.11) for one shipped utterance, so tests can check that the torch-only front end
and augmentation give the same numbers. Needs torchaudio, which ds2hub no longer depends on:
    uv run --with torchaudio==2.11.0 python tests/data/make_torchaudio_reference.py
"""

from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from torchaudio.transforms import Spectrogram

from ds2hub.audio import load_audio

HERE = Path(__file__).parent
CONFIGS = {  # name -> FeatureConfig fields
    "linear": {},
    "mel40": {"n_mels": 40},
    "mel64_8k": {"n_mels": 64, "max_frequency_hz": 7600.0, "window_ms": 32.0},
    "linear_4k": {"max_frequency_hz": 4000.0},
    "odd_window": {"window_ms": 25.0, "hop_ms": 12.5},
}


EQ_BANDS = [(1000.0, 9.0, 2.0), (300.0, -6.0, 0.7)]  # (centre Hz, gain dB, Q)
ALIGNMENTS = [  # name, frames, target labels (blank 0), uniform scores
    ("random", 40, [1, 2, 2, 3, 5], False),
    ("tied_one", 3, [1], True),
    ("tied_two", 6, [2, 3], True),
    ("tied_repeat", 7, [4, 4], True),
]


def power(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    return Spectrogram(n_fft=n_fft, hop_length=hop, window_fn=torch.hamming_window, power=2.0)(wave)


def main() -> None:
    from ds2hub.features import FeatureConfig

    wave = load_audio(HERE.parents[1] / "recipes/digits/test/test_0000.opus")[
        2000:6000
    ]  # 0.25 s of speech
    arrays = {"wave": wave.numpy()}
    for name, fields in CONFIGS.items():
        cfg = FeatureConfig(**fields)
        arrays[f"power_{name}"] = power(wave, cfg.n_fft, cfg.hop_length).numpy()
        if cfg.n_mels:
            arrays[f"fbanks_{name}"] = AF.melscale_fbanks(
                cfg.n_fft // 2 + 1,
                0.0,
                cfg.top_frequency_hz,
                cfg.n_mels,
                cfg.sample_rate,
                mel_scale="htk",
            ).numpy()
    # ds2hub's tempo change: the phase vocoder at 32 ms windows, 8 ms hops.
    window = torch.hann_window(512)
    spec = torch.stft(wave, 512, 128, window=window, return_complex=True)
    advance = torch.linspace(0, torch.pi * 128, spec.shape[0])[:, None]
    for rate in (0.8, 1.25):
        stretched = AF.phase_vocoder(spec, rate, advance)
        length = int(round(wave.numel() / rate))
        arrays[f"tempo_{rate}"] = torch.istft(
            stretched, 512, 128, window=window, length=length
        ).numpy()
    # ds2hub's equaliser as it ran on torchaudio: peaking filters in series, then the output
    # scaled down to the input's peak if it rose above it.
    from ds2hub.training.data.augment import peaking_filter

    out = wave
    for centre, gain, q in EQ_BANDS:
        b, a = (torch.tensor(c, dtype=torch.float32) for c in peaking_filter(centre, gain, q))
        out = AF.lfilter(out, a, b, clamp=False)
    peak, out_peak = float(wave.abs().max()), float(out.abs().max())
    arrays["equalize"] = (out * (peak / out_peak) if out_peak > peak > 0 else out).numpy()
    # CTC forced alignments: random scores, and uniform ones (every path ties).
    g = torch.Generator().manual_seed(0)
    for name, frames, targets, uniform in ALIGNMENTS:
        scores = torch.zeros(frames, 6) if uniform else torch.randn(frames, 6, generator=g) * 3
        log_probs = scores.log_softmax(-1)
        labels = torch.tensor([targets], dtype=torch.int32)
        path, _ = AF.forced_align(log_probs[None], labels, blank=0)
        arrays[f"align_{name}_scores"] = log_probs.numpy()
        arrays[f"align_{name}_path"] = path[0].numpy()
    np.savez_compressed(HERE / "torchaudio_reference.npz", **arrays)


if __name__ == "__main__":
    main()
