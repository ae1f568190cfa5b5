"""Fine-tuning: start a training run from a published model (the recipe's `model.finetune`,
`FineTuneConfig`) instead of random weights.

The model is loaded as `from_pretrained` loads it. Every layer but the output layer is copied; the
output layer is made for the recipe's tokenizer, keeping the rows of tokens both vocabularies
share. The recipe's `model.arch` and `data.features` must equal the model's (`check_compatible`):
features computed differently would feed it input it never saw. Only the network's weights are
copied: a front end with `normalization: global` estimates its statistics again, as any fit does.
The kept layers may be frozen for the first `freeze_steps`, so that the new output layer first
learns to read the pretrained features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ds2hub.errors import ConfigError
from ds2hub.features import FeatureConfig
from ds2hub.inference.recognizer import SpeechRecognizer, from_pretrained
from ds2hub.model import DeepSpeech2, DeepSpeech2Config
from ds2hub.paths import missing_local

log = logging.getLogger(__name__)

OUTPUT_LAYER = "output"  # the DeepSpeech2 submodule whose size is the vocabulary's


@dataclass(frozen=True)
class FineTuneConfig:
    """Which model a run starts from and how (the recipe's `model.finetune`).

    Args:
        source: what `from_pretrained` takes: hub id (`user/name`), model folder or `.ckpt`.
        revision: the hub revision (branch, tag or commit) of a hub id.
        freeze_steps: optimizer steps during which the `freeze` layers keep their weights (0: none).
        freeze: submodules frozen then (`conv`, `rnns`, `rowconv`, `head_norm`, `fc`; batch norm
            statistics still adapt).
        copy_shared_tokens: start the output rows of tokens both vocabularies have from the model's.
    """

    source: str
    revision: str | None = None
    freeze_steps: int = 0
    freeze: tuple[str, ...] = ("conv", "rnns")
    copy_shared_tokens: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "freeze", tuple(self.freeze))
        if not str(self.source).strip():
            raise ConfigError("model.finetune.source must name a model (hub id, folder or .ckpt)")
        if self.freeze_steps < 0:
            raise ConfigError(f"model.finetune.freeze_steps must be >= 0, not {self.freeze_steps}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "freeze": list(self.freeze)}

    @property
    def description(self) -> str:
        """What the model card says the run started from (`user/name@rev`, a folder, a .ckpt)."""
        return f"{self.source}@{self.revision}" if self.revision else str(self.source)


def check_freeze_names(model: DeepSpeech2, names: Sequence[str]) -> None:
    """Refuses `freeze` entries that are not layers of `model` (a typo would freeze nothing)."""
    present = {name for name, module in model.named_children() if module is not None}
    unknown = [n for n in names if n not in present]
    if unknown:
        raise ConfigError(
            f"model.finetune.freeze names {unknown}, which this network does not have; "
            f"its layers are {sorted(present)}"
        )


def _differences(source: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
    return [
        f"{key} is {source.get(key)!r} in the model but {recipe.get(key)!r} in the recipe"
        for key in sorted(set(source) | set(recipe))
        if source.get(key) != recipe.get(key)
    ]


def check_compatible(
    source: SpeechRecognizer, arch: DeepSpeech2Config, features: FeatureConfig, name: str
) -> None:
    """Raises `ConfigError` naming every setting in which the front end or architecture of
    `source` (the user's `name` for it) differs from the recipe's `features` and `arch`."""
    front_end = _differences(source.features.to_dict(), features.to_dict())
    if front_end:
        raise ConfigError(
            f"cannot fine-tune from {name!r}: its front end differs from the recipe's "
            f"(data.features): {'; '.join(front_end)}. Set data.features to the model's values "
            "(audio of any sample rate is resampled to features.sample_rate)"
        )
    network = _differences(source.arch.to_dict(), arch.to_dict())
    if network:
        raise ConfigError(
            f"cannot fine-tune from {name!r}: its architecture differs from the recipe's "
            f"(model.arch): {'; '.join(network)}. Copy the model's arch into the recipe"
        )


def load_source(config: FineTuneConfig) -> SpeechRecognizer:
    """The model to start from, loaded exactly as `ds2hub.from_pretrained` loads it."""
    source = str(config.source)
    path = Path(source).expanduser()
    # A missing path: clearer than the hub client's "repo id must be in the form ...".
    if missing_local(source):
        raise ConfigError(f"model.finetune.source {source!r} does not exist")
    if path.exists():
        return from_pretrained(str(path))
    try:
        return from_pretrained(source, revision=config.revision)
    except (OSError, ValueError) as error:  # huggingface_hub's not-found, offline and HTTP errors
        raise ConfigError(
            f"model.finetune.source {source!r} is not a local folder or file, and loading it from "
            f"the hub failed: {' '.join(str(error).split())}"
        ) from error


@torch.no_grad()
def transfer_weights(
    source: SpeechRecognizer,
    target: DeepSpeech2,
    target_vocab: Sequence[str],
    copy_shared_tokens: bool = True,
) -> int:
    """Copies every layer of `source` except the output layer into `target`; the output layer is
    copied whole when the vocabularies are equal, else row by row for the tokens both have.

    Returns:
        how many output rows were copied (0: the output layer keeps its fresh initialisation).
    """
    src_state, dst_state = source.model.state_dict(), target.state_dict()
    prefix = f"{OUTPUT_LAYER}."
    body = {k: v for k, v in src_state.items() if not k.startswith(prefix)}
    expected = {k for k in dst_state if not k.startswith(prefix)}
    if set(body) != expected or any(body[k].shape != dst_state[k].shape for k in body):
        # check_compatible compares the configs; this catches a state dict that disagrees with
        # its own config.json.
        raise ConfigError("the model's weights do not fit the network its config.json describes")
    new_state = {**dst_state, **body}
    index = {token: i for i, token in enumerate(source.tokenizer.vocab)}
    rows = [(row, index[token]) for row, token in enumerate(target_vocab) if token in index]
    if not copy_shared_tokens and list(source.tokenizer.vocab) != list(target_vocab):
        rows = []
    for key in (f"{prefix}weight", f"{prefix}bias"):
        new_state[key] = dst_state[key].clone()
        for row, src_row in rows:  # (V_new, H) rows follow the target's ids
            new_state[key][row] = src_state[key][src_row]
    target.load_state_dict(new_state, strict=True)
    return len(rows)


def start_from(
    config: FineTuneConfig,
    target: DeepSpeech2,
    arch: DeepSpeech2Config,
    features: FeatureConfig,
    target_vocab: Sequence[str],
) -> None:
    """Loads `config.source`, checks it against the recipe and copies its weights into `target`."""
    source = load_source(config)
    check_compatible(source, arch, features, config.description)
    copied = transfer_weights(source, target, target_vocab, config.copy_shared_tokens)
    log.info(
        "fine-tuning from %s: conv and recurrent layers copied; %d of %d output rows copied "
        "(tokens both vocabularies have), the rest start fresh",
        config.description,
        copied,
        len(target_vocab),
    )


def drop_frozen_gradients(model: nn.Module, names: Sequence[str]) -> None:
    """Removes the gradients of the `names` submodules, so the optimizer leaves them unchanged.

    Why gradients are dropped instead of setting `requires_grad=False`: DDP builds its gradient
    all-reduce once, from the parameters that require gradients at wrap time, and would never
    synchronise layers unfrozen later. torch optimizers skip parameters whose `grad` is None (no
    step, no weight decay, no momentum), and gradient clipping ignores them.
    """
    for name in names:  # layers of `model` (`check_freeze_names`)
        for p in getattr(model, name).parameters():
            p.grad = None
