"""Hugging Face Hub folders: `config.json`, `model.safetensors`, tokenizer files, the decoding setup
(LM, lexicon) and a model card.

`SpeechRecognizer` (features + network + tokenizer + default decoding) uses huggingface_hub's
`PyTorchModelHubMixin`, so the folder follows the hub's conventions: weights as safetensors (never
pickles), a root `config.json` (which the hub counts downloads by), and `from_pretrained` /
`save_pretrained` / `push_to_hub` with revisions, caching and `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin, snapshot_download
from torch import nn

from ds2hub.audio import AudioSource
from ds2hub.decoding import GREEDY, DecoderConfig, Decoding, TextDecoder, text_decoder
from ds2hub.decoding.bundle import HUB_PATTERNS, load_decoding, save_decoding
from ds2hub.decoding.decoder import best_path_text
from ds2hub.errors import ConfigError
from ds2hub.features import FeatureConfig, LogSpectrogram, check_network_input
from ds2hub.inference.streaming import StreamSession
from ds2hub.inference.transcribe import transcribe
from ds2hub.model import DeepSpeech2, DeepSpeech2Config
from ds2hub.tokenizers import Tokenizer, load_tokenizer, tokenizer_from_config
from ds2hub.tokenizers.base import CONFIG_NAME as TOKENIZER_FILE
from ds2hub.tokenizers.pinyin import LEXICON_NAME

CHECKPOINT_KEY = "ds2hub"  # where Lightning checkpoints keep the tokenizer, features and run facts
HUB_FILES = [
    "config.json",
    "model.safetensors",
    TOKENIZER_FILE,
    "tokenizer.model",
    LEXICON_NAME,  # a PinyinTokenizer's own word list
    *HUB_PATTERNS,  # the decoding setup (ds2hub.decoding.bundle)
    "README.md",
    "recipe.yaml",
]


class SpeechRecognizer(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ds2hub",
    pipeline_tag="automatic-speech-recognition",
    tags=["deepspeech2", "ctc", "ds2hub"],
    paper_url="https://arxiv.org/abs/1512.02595",
):
    """A ready-to-use Deep Speech 2 recogniser: audio in, text out.

    Args:
        arch: the network (`DeepSpeech2Config.to_dict()`), stored in `config.json`.
        features: the front end (`FeatureConfig.to_dict()`), stored in `config.json`.
        tokenizer: the output vocabulary, stored as `ds2hub_tokenizer.json` (+ `tokenizer.model`).

    `decoding` (a `DecoderConfig` or None) is the default decoding: the beam search and LM that
    `transcribe` uses unless told otherwise. It is saved with the folder (`decoding.json`,
    `alphabet.json`, `language_model/`) and set by `from_pretrained` when the folder has one.
    """

    def __init__(
        self, arch: dict, features: dict | None = None, tokenizer: Tokenizer | None = None
    ) -> None:
        super().__init__()
        if tokenizer is None:
            raise ValueError(
                "SpeechRecognizer needs a tokenizer (from_pretrained loads it from its folder)"
            )
        self.arch = DeepSpeech2Config.from_dict(arch)
        self.features = FeatureConfig(**(features or {}))
        check_network_input(self.arch.n_features, self.features)
        self.tokenizer = tokenizer
        self.frontend = LogSpectrogram(self.features)
        self.model = DeepSpeech2(self.arch, tokenizer.vocab_size)
        self.decoding: DecoderConfig | None = None  # the default decoding (see text_decoder)
        self._decoders: dict[DecoderConfig | str, TextDecoder] = {}
        self._best_path_text: Callable[[list[int]], str] | None = None
        self.eval()
        # config.json: the constructor arguments plus facts users and the hub look for.
        self._hub_mixin_config = {
            "arch": self.arch.to_dict(),
            "features": self.features.to_dict(),
            "sample_rate": self.features.sample_rate,
            "vocab_size": tokenizer.vocab_size,
            "tokenizer": {"kind": tokenizer.kind},
            "model_type": "deepspeech2",
        }

    # --- inference ------------------------------------------------------------------------------
    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, T) features, (B,) lengths -> (B, T', V) logits, (B,) output lengths."""
        return self.model(features, lengths)

    def text_decoder(self, decoding: Decoding = None) -> TextDecoder:
        """The decoder `(log_probs (B, T, V), lengths (B,)) -> list[str]` for `decoding`.

        Args:
            decoding: None for the model's default (its stored LM beam search if the folder
                carries one, else greedy); `"greedy"` (`ds2hub.decoding.GREEDY`) for best path
                whatever the default; or a `DecoderConfig`.
        Decoders are kept per setting: a beam search loads its whole lexicon and LM when built.

        Raises:
            ConfigError: a missing, corrupt or mismatched LM or lexicon.
        """
        key = decoding if decoding is not None else (self.decoding or GREEDY)
        if key not in self._decoders:
            self._decoders[key] = text_decoder(self.tokenizer, key)
        return self._decoders[key]

    def best_path_text(self) -> Callable[[list[int]], str]:
        """Best-path token ids (blanks and repeats removed) -> the greedy decoder's text; built
        once (a pinyin model's word list is loaded here)."""
        if self._best_path_text is None:
            self._best_path_text = best_path_text(self.tokenizer)
        return self._best_path_text

    def transcribe(
        self,
        audio: AudioSource | Sequence[AudioSource],
        batch_size: int = 8,
        sample_rate: int | None = None,
        chunk_seconds: float = 20.0,
        progress: bool | None = None,
        decoding: Decoding = None,
    ) -> str | list[str]:
        """Transcribes one source (path, bytes, array) or a list of them.

        Args:
            audio: file path(s), encoded bytes, or (T,), (C, T) or (T, C) float or int16 arrays
                (then give `sample_rate`); the model's device is used.
            batch_size: windows decoded together.
            sample_rate: the rate of raw arrays; files carry their own.
            chunk_seconds: longer recordings are recognised in overlapping windows this long
                (`ds2hub.inference.transcribe`).
            progress: show a progress bar (default: for more than 10 inputs).
            decoding: as for `text_decoder`.
        Returns:
            the transcript, or a list of transcripts for a list input.
        """
        single = isinstance(audio, (str, Path, bytes)) or hasattr(audio, "shape")  # an array
        sources = [audio] if single else list(audio)
        show = progress if progress is not None else len(sources) > 10
        texts = transcribe(self, sources, batch_size, sample_rate, chunk_seconds, show, decoding)
        return texts[0] if single else texts

    def stream(self, keep_logits: bool | None = None) -> StreamSession:
        """A `StreamSession` (`keep_logits` as there): feed audio chunks with `accept`, end with
        `finish`. Models that cannot stream raise `StreamingError` saying why."""
        return StreamSession(self, keep_logits)

    # --- hub folder -----------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)  # model.safetensors
        self.tokenizer.save(save_directory)
        if self.decoding is not None:
            save_decoding(save_directory, self.decoding, self.tokenizer)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ) -> SpeechRecognizer:
        folder = model_id
        if not os.path.isdir(model_id):
            folder = snapshot_download(
                model_id,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                local_files_only=local_files_only,
                token=token,
                allow_patterns=HUB_FILES,
            )
        config = {k: v for k, v in model_kwargs.items() if k in ("arch", "features")}
        model = cls(**config, tokenizer=load_tokenizer(folder))
        model = cls._load_as_safetensor(
            model, os.path.join(folder, "model.safetensors"), map_location, strict
        )
        model.decoding = load_decoding(folder)
        return model

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> SpeechRecognizer:
        """Builds the recogniser from a Lightning `.ckpt` written by `ds2hub fit`.

        Training checkpoints are pickles: load only checkpoints you trust (published hub folders
        hold safetensors and never execute code).
        """
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        extra = ckpt.get(CHECKPOINT_KEY)
        if extra is None:
            raise ValueError(f"{path} was not written by ds2hub (no {CHECKPOINT_KEY!r} entry)")
        recognizer = cls(
            arch=ckpt["hyper_parameters"]["arch"],
            features=extra["features"],
            tokenizer=tokenizer_from_config(extra["tokenizer"]),
        )
        # The network, and the front end's statistics (`features.normalization: global`).
        trained = ("model.", "frontend.")
        weights = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(trained)}
        state = recognizer.state_dict()
        missing = [k for k in state if k.startswith(trained) and k not in weights]
        if missing:
            raise ValueError(f"{path} lacks weights for {missing[:3]}...")
        state.update(weights)
        recognizer.load_state_dict(state, strict=True)
        return recognizer.eval()

    @property
    def num_parameters(self) -> int:
        return self.model.num_parameters()


def from_pretrained(
    name_or_path: str | Path, revision: str | None = None, map_location: str = "cpu", **kwargs: Any
) -> SpeechRecognizer:
    """Loads a recogniser from a hub repo id (`user/name`), a local folder saved with
    `save_pretrained`, or a Lightning `.ckpt` from `ds2hub fit`.

    Works offline from the local cache with `HF_HUB_OFFLINE=1`.
    """
    path = Path(name_or_path)
    if path.suffix == ".ckpt" and path.is_file():
        return SpeechRecognizer.from_checkpoint(path, map_location)
    return SpeechRecognizer.from_pretrained(
        str(name_or_path), revision=revision, map_location=map_location, **kwargs
    )


def usable_device(name: str) -> torch.device:
    """`name` (`cpu`, `cuda`, `cuda:1`, `mps` ...) as a device this machine can allocate on.

    Raises:
        ConfigError: the name is unknown or the device is absent.
    """
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:  # unknown or absent device
        raise ConfigError(f"device {name!r} (--device) is not usable: {error}") from None
    return device
