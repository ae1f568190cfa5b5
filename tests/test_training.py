"""Training that does what it says, seen through real `Trainer.fit` runs: the order in which the
model receives its batches (SortaGrad, then shuffled; resumed mid-epoch without repeats), steps that
never return None, the gradient norm, the CTC reduction and mixed precision."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml
from recorders import read_order

from ds2hub.cli.main import run_cli
from ds2hub.tokenizers import CharTokenizer
from ds2hub.training.data import SpeechDataModule

CONF = Path(__file__).parent / "conf" / "digits_tiny.yaml"


def _fit(data: Path, root: Path, *options: str, record: Path | None = None, every_step=False):
    """`ds2hub fit` in-process on the tiny digits config, optionally recording the batch order."""
    callbacks = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True, **({"every_n_train_steps": 1} if every_step else {})},
        }
    ]
    if record is not None:
        callbacks.append(
            {"class_path": "recorders.OrderRecorder", "init_args": {"path": str(record)}}
        )
    root.mkdir(parents=True, exist_ok=True)
    overlay = root / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return run_cli(
        [
            "fit", "--config", str(CONF), "--config", str(overlay), "--data.path", str(data),
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
            *options,
        ]
    )  # fmt: skip


def _epochs(records: list[dict]) -> dict[int, list[list[int]]]:
    out: dict[int, list[list[int]]] = {}
    for r in records:
        out.setdefault(r["epoch"], []).append(r["ids"])
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_fit_runs_sortagrad_once_then_new_shuffled_batches(tiny_digits, tmp_path, workers):
    record = tmp_path / "order.jsonl"
    cli = _fit(
        tiny_digits, tmp_path, "--trainer.max_epochs", "3", "--data.num_workers", str(workers),
        "--data.sortagrad", "true", "--data.bucketing", "false", record=record,
    )  # fmt: skip
    durations = cli.datamodule.datasets["train"].durations
    epochs = _epochs(read_order(record))
    assert sorted(epochs) == [0, 1, 2]
    for batches in epochs.values():  # every utterance exactly once per epoch
        assert sorted(i for b in batches for i in b) == list(range(len(durations)))
    longest = [max(durations[i] for i in b) for b in epochs[0]]
    assert longest == sorted(longest), "epoch 0 must go shortest-first (SortaGrad)"
    for epoch in (1, 2):
        later = [max(durations[i] for i in b) for b in epochs[epoch]]
        assert later != sorted(later), f"epoch {epoch} is still sorted: SortaGrad never ended"
    # New batches every epoch, not the same batches in another order.
    assert {tuple(sorted(b)) for b in epochs[1]} != {tuple(sorted(b)) for b in epochs[2]}


def test_duration_batches_cover_every_epoch_and_validate_every_epoch(tiny_digits, tmp_path):
    """With a padded-seconds budget each epoch packs a different number of batches; every epoch
    must still deliver every utterance once and end with its validation."""
    record = tmp_path / "order.jsonl"
    cli = _fit(
        tiny_digits, tmp_path, "--trainer.max_epochs", "4", "--data.max_batch_seconds", "6",
        "--data.bucketing", "false", "--data.batch_size", "16", "--data.num_workers", "1",
        record=record,
    )  # fmt: skip
    n = len(cli.datamodule.datasets["train"])
    records = read_order(record)
    epochs = _epochs(records)
    # The per-epoch reload (to recount batches) keeps the same worker process: no restart cost.
    workers = {tuple(r["workers"]) for r in records}
    assert len(workers) == 1 and len(next(iter(workers))) == 1, workers
    assert sorted(epochs) == [0, 1, 2, 3]
    for batches in epochs.values():
        assert sorted(i for b in batches for i in b) == list(range(n))
    assert len({len(b) for b in epochs.values()}) > 1, "the test needs varying batch counts"
    rows = list(csv.DictReader(open(Path(cli.trainer.logger.log_dir) / "metrics.csv")))
    assert sorted({r["epoch"] for r in rows if r.get("val/wer")}) == ["0", "1", "2", "3"]


def test_sortagrad_off_shuffles_every_epoch_differently(tiny_digits, tmp_path):
    record = tmp_path / "order.jsonl"
    _fit(
        tiny_digits,
        tmp_path,
        "--trainer.max_epochs",
        "2",
        "--data.sortagrad",
        "false",
        record=record,
    )
    epochs = _epochs(read_order(record))
    assert epochs[0] != epochs[1]


def test_resume_mid_epoch_neither_repeats_nor_skips_batches(tiny_digits, tmp_path):
    """A run stopped after step 6 (mid-epoch 1 of 4-batch epochs) and resumed from its checkpoint
    receives exactly the batches of an uninterrupted run, in the same order."""
    whole = tmp_path / "whole.jsonl"
    _fit(tiny_digits, tmp_path / "a", "--trainer.max_epochs", "3", record=whole)
    reference = [(r["epoch"], r["ids"]) for r in read_order(whole)]
    assert len(reference) == 12

    parts = tmp_path / "parts.jsonl"
    first = _fit(
        tiny_digits, tmp_path / "b", "--trainer.max_epochs", "3", "--trainer.max_steps", "6",
        record=parts, every_step=True,
    )  # fmt: skip
    last = Path(first.trainer.checkpoint_callback.last_model_path)
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 6
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 2}
    ]
    resumed = _fit(
        tiny_digits, tmp_path / "b", "--trainer.max_epochs", "3", "--ckpt_path", str(last),
        record=parts, every_step=True,
    )  # fmt: skip
    assert resumed.trainer.global_step == 12
    assert [(r["epoch"], r["ids"]) for r in read_order(parts)] == reference


def test_a_batch_in_which_nothing_decodes_still_steps(tiny_digits):
    """`training_step` returns a zero loss that reaches every parameter (never None): under DDP
    every rank must join each step's gradient all-reduce."""
    from ds2hub.model import DeepSpeech2Config
    from ds2hub.training.data.dataset import collate
    from ds2hub.training.task import DeepSpeech2Task

    task = DeepSpeech2Task(CharTokenizer(), DeepSpeech2Config(conv_channels=(4, 4), rnn_hidden=8))
    loss = task.training_step(collate([None, None]), 0)
    assert isinstance(loss, torch.Tensor) and float(loss.detach()) == 0.0
    loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in task.parameters())
    # After a real batch, an empty one also runs the forward pass (SyncBatchNorm's collectives).
    calls = []
    task.model.register_forward_hook(lambda *_: calls.append(1))
    task._last_inputs = (torch.randn(1, 161, 100), torch.tensor([100]))
    task.zero_grad()
    task.training_step(collate([None]), 1).backward()
    assert calls and all(not p.grad.any() for p in task.parameters() if p.grad is not None)


def test_evaluation_gives_every_rank_a_batch_without_repeating_any():
    from ds2hub.training.data.sampler import DurationBatchSampler

    ranks = [
        DurationBatchSampler([1.0, 1.2, 0.8], 100.0, num_replicas=3, rank=r, pad=False)
        for r in range(3)
    ]
    per_rank = [list(s) for s in ranks]
    assert all(per_rank)
    seen = sorted(i for batches in per_rank for b in batches for i in b)
    assert seen == [0, 1, 2]


# --- loss and optimisation ---------------------------------------------------------------------
def test_ctc_reduction_utterance_is_the_papers_cost():
    """`utterance`: -log p(y|x) per utterance, averaged over the batch; `token` divides each by its
    transcript length first."""
    from ds2hub.training.task import ctc_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 40, 10)
    lengths, targets = torch.tensor([40, 30]), torch.randint(1, 10, (2, 12))
    target_lengths = torch.tensor([12, 6])
    nll = torch.nn.functional.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1), targets, lengths, target_lengths, reduction="none"
    )
    per_utt = ctc_loss(logits, lengths, targets, target_lengths, reduction="utterance")
    per_token = ctc_loss(logits, lengths, targets, target_lengths, reduction="token")
    torch.testing.assert_close(per_utt, nll.mean())
    torch.testing.assert_close(per_token, (nll / target_lengths).mean())
    with pytest.raises(ValueError, match="utterance"):
        ctc_loss(logits, lengths, targets, target_lengths, reduction="sum")


def test_grad_norm_is_logged_before_clipping(tiny_digits, tmp_path):
    cli = _fit(
        tiny_digits, tmp_path, "--trainer.max_steps", "4", "--trainer.gradient_clip_val", "0.001"
    )
    rows = list(csv.DictReader(open(Path(cli.trainer.logger.log_dir) / "metrics.csv")))
    norms = [float(r["train/grad_norm"]) for r in rows if r.get("train/grad_norm")]
    assert len(norms) == 4 and all(math.isfinite(n) for n in norms)
    assert min(norms) > 0.001  # the norm the clip saw, not the clipped one


# --- evaluation -----------------------------------------------------------------------------------
def test_evaluation_keeps_long_utterances_and_scores_every_word(tiny_digits, tmp_path):
    """`max_duration` filters training only; references keep words the tokenizer cannot write."""
    dm = SpeechDataModule(CharTokenizer(), str(tiny_digits), max_duration=1.0, batch_size=4)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.datasets["val"]) == 4 and len(dm.datasets["test"]) == 4  # none dropped
    assert max(dm.datasets["val"].durations) > 1.0
    assert all(d <= 1.0 for d in dm.datasets["train"].durations)
    assert CharTokenizer().reference("Call 911, now!") == "call 911 now"


@pytest.mark.parametrize(
    "ref, hyp",
    [
        ("Über die Brücke.", "über die brücke"),
        ("Он пошёл в музей", "он пошёл в музей"),
        ("नमस्ते दुनिया", "नमस्ते दुनिया"),
        ("Don't STOP—now!", "don't stop now"),
    ],
)
def test_scoring_normalises_both_sides_alike_and_keeps_every_letter(ref, hyp):
    """Only real differences count: a correct hypothesis in any script scores zero errors, and no
    letter or combining mark is stripped from either side."""
    from ds2hub.inference.evaluate import edit_counts

    tok = CharTokenizer()
    assert tok.reference(ref) == tok.reference(hyp)
    assert edit_counts([tok.reference(hyp)], [tok.reference(ref)], "wer")[0] == 0
    assert len(tok.reference(ref).replace(" ", "")) >= len(hyp.replace(" ", "").replace("'", ""))


def test_no_test_split_is_refused_rather_than_scoring_validation_as_test(tiny_digits):
    dm = SpeechDataModule(CharTokenizer(), str(tiny_digits), test_split=None)
    assert not dm.has_stage("test")
    with pytest.raises(ValueError, match="no test data"):
        dm.setup("test")


def test_validation_and_test_groups_are_disjoint_and_never_trained_on(tmp_path):
    from standins import make_audiofolder

    corpus = make_audiofolder(tmp_path / "hsk", mandarin=True)
    from ds2hub.tokenizers import MandarinTokenizer

    dm = SpeechDataModule(
        MandarinTokenizer(), str(corpus), text_column="transcription", test_split=None,
        holdout_column="transcription", holdout_fraction=0.25, test_holdout_fraction=0.25,
    )  # fmt: skip
    dm.setup("fit")
    dm.setup("test")
    words = {s: set(dm.datasets[s].data["transcription"]) for s in ("train", "val", "test")}
    assert words["val"] and words["test"]
    assert not words["val"] & words["test"]
    assert not (words["val"] | words["test"]) & words["train"]
    assert "held-out transcription groups" in dm.describe("test")


PAIRS = [  # (hypothesis, reference), normalised
    ("one two three", "one two three"),
    ("one to three four", "one two three"),
    ("", "nine"),
    ("seven", ""),
    ("eight eight", "eight"),
    ("你好世界", "你好 世界"),
]


def test_error_counts_are_torchmetrics_word_and_character_error_rates():
    """The one scoring rule (`ds2hub.inference.evaluate`) gives the figures torchmetrics gave
    earlier versions, to the float32 bit."""
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    from ds2hub.inference.evaluate import edit_counts, rate

    for pairs in (PAIRS, PAIRS[:2], PAIRS[1:3], PAIRS[-1:]):
        hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
        assert rate(edit_counts(hyps, refs, "wer")) == float(word_error_rate(hyps, refs))
        assert rate(edit_counts(hyps, refs, "ser")) == float(word_error_rate(hyps, refs))
        assert rate(edit_counts(hyps, refs, "cer")) == float(char_error_rate(hyps, refs))


def test_validate_push_and_lm_tune_score_batches_alike(monkeypatch):
    """`validate`/`test` (a Lightning metric summed per batch), `push` (`evaluate`) and `lm tune`
    (`error_rate` over its cached logits) score the same transcripts with the same rule and
    normaliser."""
    from ds2hub.inference.evaluate import evaluate
    from ds2hub.inference.recognizer import SpeechRecognizer
    from ds2hub.model import DeepSpeech2Config
    from ds2hub.training.task import DeepSpeech2Task

    arch = DeepSpeech2Config(conv_channels=(4, 4), rnn_hidden=8)
    tok = CharTokenizer()
    refs = [["Call 911, now!", "one two three"], ["Four, five."]]
    hyps = [["call now", "one to three"], ["for five"]]
    task = DeepSpeech2Task(tok, arch)
    for h, r in zip(hyps, refs):
        for name, counts in task.scoring.score(h, r)[2].items():
            task.metrics[f"val_{name}"].update(counts)
    trained = {name: float(task.metrics[f"val_{name}"].compute()) for name in ("wer", "cer")}

    def replay(decoding=None):  # a decoder that answers `hyps`, batch by batch
        answers = iter(hyps)
        return lambda logits, lengths: next(answers)

    rec = SpeechRecognizer(arch.to_dict(), {}, tok).eval()
    monkeypatch.setattr(rec, "text_decoder", replay)
    batches = [
        {"features": torch.zeros(len(r), 161, 20), "feature_lengths": torch.full((len(r),), 20),
         "texts": r}
        for r in refs
    ]  # fmt: skip
    pushed = evaluate(rec, batches)
    assert pushed == {**trained, "utterances": 3}
    from ds2hub.lm.tune import CachedLogits, error_rate

    cached = CachedLogits([(torch.zeros(1), torch.zeros(1), r) for r in refs], tok)
    for name in ("wer", "cer"):
        assert error_rate(replay(), cached, name) == trained[name]


def test_mandarin_word_level_error_is_called_ser():
    from ds2hub.model import DeepSpeech2Config
    from ds2hub.tokenizers import MandarinTokenizer
    from ds2hub.training.task import DeepSpeech2Task

    arch = DeepSpeech2Config(conv_channels=(4, 4), rnn_hidden=8)
    zh = DeepSpeech2Task(MandarinTokenizer(characters=["你", "好"]), arch)
    assert {"val_ser", "val_cer"} == {k for k in zh.metrics if k.startswith("val")}
    en = DeepSpeech2Task(CharTokenizer(), arch)
    assert {"val_wer", "val_cer"} == {k for k in en.metrics if k.startswith("val")}


# --- mixed precision ---------------------------------------------------------------------------------
def test_bf16_mixed_fit_on_cpu(tiny_digits, tmp_path):
    cli = _fit(
        tiny_digits, tmp_path, "--trainer.max_steps", "3", "--trainer.precision", "bf16-mixed"
    )
    assert cli.trainer.precision == "bf16-mixed" and cli.trainer.global_step == 3
    rows = list(csv.DictReader(open(Path(cli.trainer.logger.log_dir) / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses and all(math.isfinite(x) for x in losses)
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())  # fp32 master weights


# --- every recipe's optimiser and schedule, actually run -------------------------------------------
# The paper's SGD recipe runs in the default suite; the others with `pytest -m slow` (~40 s each).
RECIPES = [
    pytest.param(p, marks=() if p.stem == "librispeech" else pytest.mark.slow)
    for p in sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_optimiser_and_schedule_lower_the_loss(recipe, tiny_digits, tmp_path):
    """The recipe's optimiser, schedule, CTC reduction and gradient clip, unchanged except that the
    schedule's step counts are divided by 20 (a 1,000-step warm-up becomes 50), train the tiny
    model on shipped digit audio: the loss falls."""
    config = yaml.safe_load(recipe.read_text())
    model = config["model"]
    scheduler = model.get("scheduler")
    if scheduler:
        args = scheduler.setdefault("init_args", {})
        for key in ("warmup_steps", "anneal_steps"):
            if key in args:
                args[key] = max(1, int(args[key]) // 20)
    overlay = tmp_path / "optim.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "optimizer": model["optimizer"],
                    "scheduler": scheduler,
                    "ctc_reduction": model.get("ctc_reduction", "utterance"),
                },
                "trainer": {"gradient_clip_val": config["trainer"].get("gradient_clip_val")},
            }
        )
    )
    cli = _fit(
        tiny_digits, tmp_path, "--config", str(overlay), "--trainer.max_steps", "60",
        "--trainer.max_epochs", "100", "--data.sortagrad", "false",
        "--trainer.check_val_every_n_epoch", "100", "--trainer.num_sanity_val_steps", "0",
    )  # fmt: skip
    rows = list(csv.DictReader(open(Path(cli.trainer.logger.log_dir) / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 60 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:12]) / 12, sum(losses[-12:]) / 12
    norms = [float(r["train/grad_norm"]) for r in rows if r.get("train/grad_norm")]
    clip = config["trainer"].get("gradient_clip_val")
    clipped = sum(n > clip for n in norms) if clip else 0
    print(
        f"{recipe.name}: loss {first:.1f} -> {last:.1f} (mean of first/last 12 steps); "
        f"grad norm median {sorted(norms)[len(norms) // 2]:.1f}, max {max(norms):.1f}; "
        f"clipped {clipped}/{len(norms)} steps at {clip}"
    )
    assert last < 0.8 * first, f"{recipe.name}: loss {first:.1f} -> {last:.1f}"


def test_validation_scores_references_the_tokenizer_cannot_write(tiny_digits, tmp_path):
    """An utterance whose transcript has no character of the vocabulary (e.g. "911" for a-z) is
    still validated: its words count as errors instead of vanishing from the figure."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_digits, data)
    meta = data / "validation" / "metadata.csv"
    rows = list(csv.DictReader(meta.open()))
    rows[0]["text"] = "911"
    with meta.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cli = run_cli(
        [
            "validate", "--config", str(CONF), "--data.path", str(data),
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
        ]
    )  # fmt: skip
    assert len(cli.datamodule.datasets["val"]) == len(rows)
    assert not cli.datamodule.dropped["val"]
    metrics = cli.trainer.callback_metrics
    assert float(metrics["val/utterances"]) == len(rows)
    assert torch.isfinite(metrics["val/loss"]) and float(metrics["val/wer"]) > 0


def test_a_named_predict_split_wins_over_the_test_holdout(tiny_digits):
    held = {"holdout_column": "voice", "holdout_fraction": 0.25, "test_holdout_fraction": 0.25}
    named = SpeechDataModule(CharTokenizer(), str(tiny_digits), predict_split="validation", **held)
    named.setup("predict")
    assert len(named.datasets["predict"]) == 4  # the validation split's 4 rows
    assert named.describe("predict").startswith("validation of")
    default = SpeechDataModule(CharTokenizer(), str(tiny_digits), **held)
    assert default.describe("predict").startswith("held-out voice groups")
