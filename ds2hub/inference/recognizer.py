"""Hugging Face Hub folders: `config.json`, `model.safetensors`, tokenizer files, the decoding setup
(LM, lexicon) and a model card.

`SpeechRecognizer` (features + network + tokenizer + default decoding) uses huggingface_hub's
`PyTorchModelHubMixin`, so the folder follows the hub's conventions: weights as safetensors (never
pickles), a root `config.json` (which the hub counts downloads by), and `from_pretrained` /
`save_pretrained` / `push_to_hub` with revisions, caching and `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin, snapshot_download
from safetensors import SafetensorError
from torch import nn

from ds2hub.audio import AudioSource
from ds2hub.decoding import (
    GREEDY,
    DecoderConfig,
    Decoding,
    TextDecoder,
    describe_decoding,
    text_decoder,
)
from ds2hub.decoding.bundle import HUB_PATTERNS, load_decoding, save_decoding
from ds2hub.decoding.decoder import best_path_text
from ds2hub.errors import ConfigError
from ds2hub.features import FeatureConfig, LogSpectrogram, check_network_input
from ds2hub.inference.streaming import StreamSession
from ds2hub.inference.transcribe import DEFAULT_CHUNK_SECONDS, Transcript, iter_transcripts
from ds2hub.model import DeepSpeech2, DeepSpeech2Config
from ds2hub.model.config import MAX_PARAMETERS
from ds2hub.paths import new_file_mode, read_json, shipped_model
from ds2hub.tokenizers import Tokenizer, load_tokenizer, tokenizer_from_config
from ds2hub.tokenizers.base import CONFIG_NAME as TOKENIZER_FILE
from ds2hub.tokenizers.pinyin import LEXICON_NAME

logger = logging.getLogger(__name__)
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
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Bytes per element of each safetensors dtype (the format's own names).
SAFETENSORS_DTYPES = {
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2"), 1),
    **dict.fromkeys(("U16", "I16", "F16", "BF16"), 2),
    **dict.fromkeys(("U32", "I32", "F32"), 4),
    **dict.fromkeys(("U64", "I64", "F64"), 8),
}


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
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        progress: bool | None = None,
        decoding: Decoding = None,
        timestamps: bool = False,
    ) -> str | Transcript | list[str] | list[Transcript]:
        """Transcribes one source or a list of them.

        Args:
            audio: file path(s), encoded bytes, (T,), (C, T) or (T, C) float or int16 arrays
                (then give `sample_rate`), or the audio values of `datasets` and transformers
                (`{"array", "sampling_rate"}`, `{"path", "bytes"}`, `{"raw", "sampling_rate"}`,
                torchcodec's `AudioDecoder`; see `ds2hub.audio.unwrap_source`); a `datasets`
                audio column is a list of them. The model's device is used.
            batch_size: windows decoded together.
            sample_rate: the rate of raw arrays; files and audio dicts carry their own.
            chunk_seconds: longer recordings are recognised in overlapping windows this long
                (`ds2hub.inference.transcribe`).
            progress: show a progress bar (default: for more than 10 inputs).
            decoding: as for `text_decoder`.
            timestamps: return `Transcript`s (`.text`, `.duration`, `.words` with each word's
                start and end in seconds, from the CTC alignment) instead of strings.
        Returns:
            the transcript, or a list of transcripts for a list input.
        Raises:
            AudioDecodeError: a source that is missing, a folder, or not audio.
        """
        single = (
            isinstance(audio, (str, Path, bytes, Mapping))
            or hasattr(audio, "shape")  # an array
            or hasattr(audio, "get_all_samples")  # an AudioDecoder
        )
        sources = [audio] if single else list(audio)
        results = list(
            iter_transcripts(
                self,
                sources,
                batch_size=batch_size,
                sample_rate=sample_rate,
                chunk_seconds=chunk_seconds,
                decoding=decoding,
                timestamps=timestamps,
                progress=progress if progress is not None else len(sources) > 10,
            )
        )
        out = results if timestamps else [r.text for r in results]
        return out[0] if single else out

    def stream(self, keep_logits: bool | None = None) -> StreamSession:
        """A `StreamSession` (`keep_logits` as there): feed audio chunks with `accept`, end with
        `finish`. Models that cannot stream raise `StreamingError` saying why."""
        return StreamSession(self, keep_logits)

    # --- hub folder -----------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)  # model.safetensors
        # safetensors writes it private (0600); the folder's other files get the usual mode.
        os.chmod(Path(save_directory, WEIGHTS_FILE), new_file_mode())
        self.tokenizer.save(save_directory)
        if self.decoding is not None:
            save_decoding(save_directory, self.decoding, self.tokenizer)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        **model_kwargs: Any,
    ) -> SpeechRecognizer:
        """Loads a folder written by `save_pretrained`, a hub repo id (`user/name`) or a shipped
        model's name (`ds2hub.paths.shipped_model`), checked before any weight is allocated
        (`_from_pretrained`).

        Replaces the hub mixin's, which reads `config.json` itself and fails with a traceback on
        a folder without one or with one that is not JSON; `model_kwargs` (`arch`, `features`,
        `map_location`, `strict`) override the folder's as they do there.

        Raises:
            ConfigError: (one line) a malformed folder: see `_from_pretrained`.
        """
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            **model_kwargs,
        )

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
        """Builds the recogniser of a model folder (downloaded first for a hub id).

        Nothing is allocated before the folder is checked: `config.json` is parsed and its `arch`
        held to `DeepSpeech2Config`'s bounds, the tokenizer loaded, the network built on the meta
        device (at most `MAX_PARAMETERS`) and its state_dict names and shapes compared with the
        header of `model.safetensors`; only then are the weights allocated and loaded.

        Raises:
            ConfigError: (one line naming the file) a missing or non-JSON `config.json`, an arch
                out of bounds, a tokenizer file that cannot be loaded, a missing, truncated or
                malformed `model.safetensors`, or weights whose names or shapes the config does
                not imply.
        """
        folder = str(shipped_model(model_id) or model_id)
        if not os.path.isdir(folder):
            folder = snapshot_download(
                model_id,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                local_files_only=local_files_only,
                token=token,
                allow_patterns=HUB_FILES,
            )
        config_file = Path(folder) / CONFIG_FILE
        config = {"arch": None, "features": None, **_read_config(folder)}
        config = {k: model_kwargs.get(k, config[k]) for k in ("arch", "features")}
        if not isinstance(config["arch"], dict):
            raise ConfigError(f"{config_file} has no 'arch' object: not a ds2hub model config")
        tokenizer = load_tokenizer(folder)
        try:
            expected = _expected_state(config["arch"], config["features"], tokenizer)
        except ConfigError as error:
            raise ConfigError(f"{config_file}: {error}") from None
        except (TypeError, ValueError) as error:  # wrong types, out of bounds
            raise ConfigError(f"{config_file}: not a valid ds2hub model config: {error}") from None
        size = sum(math.prod(shape) for shape in expected.values())
        if size > MAX_PARAMETERS:
            raise ConfigError(
                f"{config_file}: arch describes {size:,} parameters; ds2hub loads at most "
                f"{MAX_PARAMETERS:,}"
            )
        weights = Path(folder) / WEIGHTS_FILE
        _check_weights(weights, expected, strict)
        model = cls(**config, tokenizer=tokenizer)
        try:
            model = cls._load_as_safetensor(model, str(weights), map_location, strict)
        except SafetensorError as error:  # what the header check cannot see
            raise ConfigError(f"{weights}: {error}") from None
        model.decoding = load_decoding(folder)
        return model

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> SpeechRecognizer:
        """Builds the recogniser from a Lightning `.ckpt` written by `ds2hub fit`. Its default
        decoding is the one its run validated with (the recipe's `model.beam_search`: lexicon,
        LM and weights, whose files must still be where the recipe named them), else greedy.

        Training checkpoints are pickles: load only checkpoints you trust (published hub folders
        hold safetensors and never execute code).
        """
        ckpt = read_checkpoint(path, map_location)
        extra = ckpt.get(CHECKPOINT_KEY)
        if extra is None:
            raise ConfigError(f"{path} was not written by ds2hub (no {CHECKPOINT_KEY!r} entry)")
        try:
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
                raise ValueError(f"it lacks weights for {missing[:3]}...")
            state.update(weights)
            recognizer.load_state_dict(state, strict=True)
        except KeyError as error:
            raise ConfigError(f"{path} is not a complete ds2hub checkpoint (no {error})") from None
        except (TypeError, ValueError, RuntimeError) as error:  # bounds, shapes, missing weights
            reason = " ".join(str(error).split())[:300]
            raise ConfigError(f"{path} does not hold a usable model: {reason}") from None
        recognizer.decoding = _validated_decoding(path, extra.get("decoding"), recognizer.tokenizer)
        return recognizer.eval()

    @property
    def num_parameters(self) -> int:
        return self.model.num_parameters()


def _validated_decoding(
    path: str | Path, stored: dict[str, Any] | None, tokenizer: Tokenizer
) -> DecoderConfig | None:
    """The decoding a checkpoint's run validated with (its recipe's `model.beam_search`), said
    in a warning, or None (greedy) when it had none; when its LM or lexicon file is gone or its
    settings are unknown to this version, greedy with a warning saying why."""
    if not stored:
        return None
    try:
        decoding = DecoderConfig.from_dict(stored)
    except (ConfigError, TypeError) as error:
        logger.warning("%s: decoding greedily; its stored decoding is unusable: %s", path, error)
        return None
    missing = [f for f in (decoding.lm, decoding.lexicon) if f and not Path(f).is_file()]
    if missing:
        logger.warning(
            "%s: decoding greedily; its run validated with a beam search whose files are gone "
            "(%s): pass decoding=DecoderConfig(...) to use others",
            path,
            ", ".join(missing),
        )
        return None
    logger.warning(
        "%s decodes as its run validated: %s (for best path: decoding='greedy', or --greedy "
        "on the command line)",
        path,
        describe_decoding(decoding, tokenizer),
    )
    return decoding


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The dict in a Lightning `.ckpt` file, loaded with `weights_only=True` (no code runs).

    Raises:
        ConfigError: the file is missing, cut short, not a torch checkpoint, or not a dict.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:  # not a pickle at all
            reason = " ".join(str(error).split())[:200]
            raise ConfigError(f"{path} is not a readable checkpoint: {reason}") from None
        what = f" ({found.group(1)})"  # weights_only refused an object
        raise ConfigError(
            f"{path} holds Python objects other than tensors and plain data{what}: ds2hub does "
            "not unpickle them (a checkpoint from `ds2hub fit` holds none)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        reason = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(error).split()))[:200]
        reason = reason or type(error).__name__
        raise ConfigError(f"{path} is not a readable checkpoint (cut short?): {reason}") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{path} holds a {type(ckpt).__name__}, not a Lightning checkpoint")
    return ckpt


def _read_config(folder: str | Path) -> dict[str, Any]:
    """The JSON object in `folder`'s `config.json`.

    Raises:
        ConfigError: it is missing, not JSON, or not an object.
    """
    path = Path(folder) / CONFIG_FILE
    missing = f"{folder} has no {CONFIG_FILE}: not a ds2hub model folder"
    config = read_json(path, ConfigError, missing)
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(config).__name__}")
    return config


def _expected_state(
    arch: dict[str, Any], features: dict[str, Any] | None, tokenizer: Tokenizer
) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the state_dict that `SpeechRecognizer(arch, features, tokenizer)` would
    have (`frontend.*` and `model.*`, as `from_checkpoint` relies on too), without allocating the
    network: it is built on the meta device once `arch` is within `DeepSpeech2Config`'s bounds.
    The front end is built for real (`FeatureConfig` bounds the sizes that would make it large).

    Raises:
        ConfigError, TypeError, ValueError: settings out of bounds or of the wrong type.
    """
    network_config = DeepSpeech2Config.from_dict(arch)
    feature_config = FeatureConfig(**dict(features or {}))
    check_network_input(network_config.n_features, feature_config)
    frontend = LogSpectrogram(feature_config)
    with torch.device("meta"):
        network = DeepSpeech2(network_config, tokenizer.vocab_size)
    parts = {"frontend.": frontend, "model.": network}
    return {
        prefix + name: tuple(tensor.shape)
        for prefix, part in parts.items()
        for name, tensor in part.state_dict().items()
    }


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the header of a safetensors file (an 8-byte little-endian
    length, that many bytes of JSON, then the data), without reading any tensor.

    Raises:
        ConfigError: the file is missing, truncated (the header or a tensor's bytes run past its
            end) or not safetensors (a header that is not JSON, an entry without a known dtype,
            a shape or offsets that disagree).
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            prefix = file.read(8)
            length = int.from_bytes(prefix, "little")
            if len(prefix) < 8 or length > size - 8:
                raise ConfigError(
                    f"{path} is truncated or not a safetensors file: its header claims {length} "
                    f"bytes, the file has {size}"
                )
            header = json.loads(file.read(length))
    except FileNotFoundError:
        raise ConfigError(f"{path.parent} has no {path.name}: not a ds2hub model folder") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path}: its safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: its safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data = size - 8 - length
    shapes = {}
    for name, entry in header.items():
        try:
            shape = tuple(entry["shape"])
            start, end = entry["data_offsets"]
            width = SAFETENSORS_DTYPES[entry["dtype"]]
            numbers = (*shape, start, end)
            valid = all(type(n) is int and n >= 0 for n in numbers) and start <= end
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            raise ConfigError(f"{path}: malformed safetensors header entry for {name!r}")
        if end > data:
            raise ConfigError(
                f"{path} is truncated: {name} ends at byte {end} of the data, which has {data}"
            )
        if end - start != math.prod(shape) * width:
            raise ConfigError(f"{path}: {name} has {end - start} bytes for its shape {shape}")
        shapes[name] = shape
    return shapes


def _check_weights(path: Path, expected: dict[str, tuple[int, ...]], strict: bool) -> None:
    """Raises `ConfigError` unless the safetensors file at `path` holds a tensor of the expected
    shape for each name of `expected` (the state_dict that `config.json` implies) that it holds,
    and, if `strict`, exactly those names."""
    shapes = safetensors_shapes(path)
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if strict and (missing or extra):
        raise ConfigError(
            f"{path} does not hold the network its config.json describes: missing "
            f"{missing[:3]}, unexpected {extra[:3]}"
        )
    for name in sorted(set(expected) & set(shapes)):
        if shapes[name] != expected[name]:
            raise ConfigError(
                f"{path}: {name} has shape {list(shapes[name])} but config.json and the "
                f"tokenizer imply {list(expected[name])}"
            )


def from_pretrained(
    name_or_path: str | Path, revision: str | None = None, map_location: str = "cpu", **kwargs: Any
) -> SpeechRecognizer:
    """Loads a recogniser from a hub repo id (`user/name`), a local folder saved with
    `save_pretrained`, a Lightning `.ckpt` from `ds2hub fit`, or the name of a model shipped with
    ds2hub (`available_models()`: `digits-demo`; a local path of that name comes first).

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
