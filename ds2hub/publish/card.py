"""Model cards: the hub's structured metadata plus a human description, from `model_cards/`."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ds2hub import __version__
from ds2hub.features import FeatureConfig
from ds2hub.inference.recognizer import SpeechRecognizer
from ds2hub.inference.transcribe import DEFAULT_OVERLAP_SECONDS
from ds2hub.model.config import FULL_BAND, DeepSpeech2Config
from ds2hub.model.presets import size_tag
from ds2hub.paths import is_hub_id

TEMPLATE_NAME = "ds2hub.md"
# The card's words for ISO 639-1 codes (`Tokenizer.language`); other codes are shown as they are.
LANGUAGE_NAMES = {
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
    "ja": "Japanese",
    "nl": "Dutch",
    "pt": "Portuguese",
    "ru": "Russian",
    "zh": "Mandarin Chinese",
}
METRIC_NAMES = {
    "wer": "word error rate",
    "cer": "character error rate",
    "ser": "sentence error rate",  # for text without spaces between words
}
STAGE_LABELS = {"test": "Test", "val": "Validation"}


def describe_convolutions(arch: DeepSpeech2Config) -> str:
    """The convolution front end in words: "2 × 2D convolution", "1 × 1D (time-only)
    convolution", or each layer's kind when they differ ("1D + 2D convolution")."""
    kinds = ["1D (time-only)" if k == FULL_BAND else "2D" for k in arch.conv_kernel_freq]
    if len(set(kinds)) == 1:
        return f"{len(kinds)} × {kinds[0]} convolution"
    return " + ".join(kinds) + " convolution"


def template_path() -> Path:
    """`model_cards/ds2hub.md` from a checkout, or its copy packaged inside the wheel."""
    package = Path(__file__).resolve().parents[1]  # ds2hub/
    for folder in (package, package.parent):
        candidate = folder / "model_cards" / TEMPLATE_NAME
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"model card template {TEMPLATE_NAME} not found next to {package}")


@dataclass
class DecodingResult:
    """Figures measured with one decoding."""

    decoding: str  # how, in words (`ds2hub.decoding.describe_decoding` of the setting that ran)
    metrics: dict[str, float]
    short: str = "greedy"  # for metric names in the hub's model-index (`greedy`, `LM`)


@dataclass
class CardInfo:
    """What the card says beyond the model itself."""

    repo_id: str
    language: str
    dataset_id: str  # the evaluation data: its hub id, or the name of a local folder
    dataset_split: str  # which data the figures come from, in words (`test of ...`)
    metrics: dict[str, float]  # {"wer": 0.031, "cer": 0.012}, or "ser" instead of "wer"
    eval_utterances: int
    dataset_config: str | None = None
    # Whether `dataset_id` is a hub dataset: only then does the metadata name it (`datasets:`)
    # and carry the figures as `model-index` results, whose dataset must be a hub id.
    dataset_on_hub: bool = True
    # The `load_dataset` split the figures come from (model-index `split`); None: groups held out
    # of the train split, which no split names: the figures are then in the text only.
    split: str | None = "test"
    license: str = "apache-2.0"
    recipe: str = ""  # the run's resolved recipe, which the folder holds as recipe.yaml
    command: str = ""
    train_seconds: float | None = None
    hardware: str | None = None
    train_description: str = ""
    extra_tags: list[str] = field(default_factory=list)
    eval_stage: str = "test"  # `test`, or `val`: validation data, which also chose the checkpoint
    decoding: str = "greedy CTC decoding (best path), no language model"  # of `metrics`
    normalization: str = "the tokenizer's `normalize`"  # of the references, for scoring
    decoding_short: str = "greedy"  # `metrics`' decoding in model-index names
    # Figures with other decodings (e.g. greedy beside the default LM search), same data.
    more_results: list[DecodingResult] = field(default_factory=list)
    # What `transcribe` does by default (None: greedy), in words.
    default_decoding: str | None = None
    finetuned_from: str = ""  # the model `model.finetune.source` named (hub id, folder, .ckpt)

    @property
    def results(self) -> list[DecodingResult]:
        """Every decoding's figures, the default (`metrics`) first."""
        default = DecodingResult(self.decoding, self.metrics, self.decoding_short)
        return [default, *self.more_results] if self.metrics else []


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "unknown time"
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    minutes = seconds / 60
    return f"{minutes:.1f} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"


def front_end(features: FeatureConfig) -> str:
    """The card's name for the features, e.g. "log spectrogram (161 bins, 0-8 kHz)"."""
    top = f"0-{features.top_frequency_hz / 1000:g} kHz"
    if features.n_mels is not None:
        return f"log-mel filterbank ({features.n_mels} filters, {top})"
    return f"log spectrogram ({features.n_bins} bins, {top})"


def render_card(recognizer: SpeechRecognizer, info: CardInfo) -> ModelCard:
    """Fills the template; the metadata carries the results as the hub's `model-index`.

    Figures from validation data are labelled so (`Validation WER`, and the split says the
    data chose the checkpoint): a validation figure is never presented as a test result.
    """
    if info.eval_stage not in STAGE_LABELS:
        raise ValueError(f"eval_stage must be 'test' or 'val', not {info.eval_stage!r}")
    arch = recognizer.arch
    # The card states what `transcribe` does by default: read it from its signature.
    chunk_seconds = (
        inspect.signature(SpeechRecognizer.transcribe).parameters["chunk_seconds"].default
    )
    stage = STAGE_LABELS[info.eval_stage]
    several = len(info.results) > 1
    eval_results = [
        EvalResult(
            task_type="automatic-speech-recognition",
            task_name="Speech Recognition",
            dataset_type=info.dataset_id,
            dataset_name=info.dataset_id,
            dataset_config=info.dataset_config,
            dataset_split=info.split,
            metric_type=name,
            # Each figure names its decoding when there are several (`Test CER (greedy)`).
            metric_name=f"{stage} {name.upper()}" + (f" ({result.short})" if several else ""),
            metric_value=round(value * 100, 2),  # the hub shows WER in percent
        )
        for result in info.results
        for name, value in result.metrics.items()
    ]
    model_name = info.repo_id.split("/")[-1]
    tags = {"deepspeech2", "ctc", "ds2hub", "automatic-speech-recognition", *info.extra_tags}
    tags |= {f"tokenizer-{recognizer.tokenizer.kind}", size_tag(recognizer.num_parameters)}
    data = ModelCardData(
        language=[info.language],
        license=info.license,
        library_name="ds2hub",
        pipeline_tag="automatic-speech-recognition",
        tags=sorted(tags),
        datasets=[info.dataset_id] if info.dataset_on_hub else None,
        metrics=list(info.metrics),
        model_name=model_name,
        eval_results=eval_results if info.dataset_on_hub and info.split else None,
        # The hub links fine-tunes to their base model; only a hub id can be linked.
        base_model=info.finetuned_from.split("@")[0] if is_hub_id(info.finetuned_from) else None,
    )
    return ModelCard.from_template(
        data,
        template_path=str(template_path()),
        model_name=model_name,
        repo_id=info.repo_id,
        language_names=LANGUAGE_NAMES.get(info.language, info.language),
        front_end=front_end(recognizer.frontend.config),
        convolutions=describe_convolutions(arch),
        rnn_layers=arch.rnn_layers,
        rnn_type=arch.rnn_type,
        rnn_hidden=arch.rnn_hidden,
        direction="bidirectional" if arch.bidirectional else "forward-only",
        bidirectional=arch.bidirectional,
        batch_norm=arch.batch_norm,
        lookahead=arch.lookahead,
        time_stride=arch.time_stride,
        tokenizer_kind=recognizer.tokenizer.kind,
        vocab_size=recognizer.tokenizer.vocab_size,
        num_parameters_m=f"{recognizer.num_parameters / 1e6:.1f}",
        metrics=[
            {"name": k.upper(), "value": v, "meaning": METRIC_NAMES.get(k, k)}
            for k, v in info.metrics.items()
        ],
        dataset_id=info.dataset_id,
        dataset_config=info.dataset_config,
        dataset_split=info.dataset_split,
        dataset_on_hub=info.dataset_on_hub,
        eval_stage=info.eval_stage,
        eval_utterances=info.eval_utterances,
        results=[
            {
                "decoding": r.decoding,
                "figures": [f"{100 * r.metrics[k]:.2f} %" for k in info.metrics],
            }
            for r in info.results
        ],
        default_decoding=info.default_decoding,
        normalization=info.normalization,
        recipe=info.recipe.strip() or "(not recorded)",
        recorded_recipe=bool(info.recipe.strip()),
        command=info.command or "(not recorded)",
        training_time=_duration(info.train_seconds),
        hardware=info.hardware or "unknown hardware",
        train_description=info.train_description or info.dataset_id,
        chunk_seconds=chunk_seconds,
        overlap_seconds=DEFAULT_OVERLAP_SECONDS,
        streams=not arch.bidirectional and recognizer.frontend.config.normalization == "global",
        normalization_kind=recognizer.frontend.config.normalization,
        finetuned_from=info.finetuned_from,
        version=__version__,
        # pyctcdecode reads the folder's LM setup (`ds2hub.decoding.bundle`), given `kenlm`.
        pyctcdecode_layout=bool(recognizer.decoding is not None and recognizer.decoding.lm),
    )
