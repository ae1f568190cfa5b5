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
    # A peaking biquad (b, a) as ds2hub's equaliser ran it.
    b = torch.tensor([1.0428, -1.9193, 0.8895], dtype=torch.float32)
    a = torch.tensor([1.0, -1.9193, 0.9323], dtype=torch.float32)
    arrays["biquad"] = AF.lfilter(wave, a, b, clamp=False).numpy()
    np.savez_compressed(HERE / "torchaudio_reference.npz", **arrays)


if __name__ == "__main__":
    main()
