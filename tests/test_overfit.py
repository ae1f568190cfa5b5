"""Proof of learning: on a handful of real utterances, CTC loss and CER must fall."""

import lightning as L
import torch

from ds2hub.model import DeepSpeech2Config
from ds2hub.tokenizers import CharTokenizer
from ds2hub.training.data import SpeechDataModule
from ds2hub.training.task import DeepSpeech2Task


def test_overfits_a_handful_of_utterances(tiny_digits):
    L.seed_everything(0)
    data = SpeechDataModule(
        CharTokenizer(),
        str(tiny_digits),
        train_split="train[:6]",
        val_split="train[:6]",
        text_column="text",
        batch_size=6,
    )
    arch = DeepSpeech2Config(
        conv_channels=(16, 16),
        conv_kernel_freq=(21, 11),
        conv_kernel_time=(5, 3),
        rnn_layers=2,
        rnn_hidden=96,
    )
    task = DeepSpeech2Task(data.tokenizer, arch, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))

    def evaluate():
        return L.Trainer(
            logger=False, enable_progress_bar=False, enable_model_summary=False
        ).validate(task, data, verbose=False)[0]

    before = evaluate()
    trainer = L.Trainer(
        max_steps=150,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        gradient_clip_val=400,
    )
    trainer.fit(task, data)
    after = evaluate()
    assert after["val/loss"] < 0.2 * before["val/loss"]
    assert after["val/cer"] < 0.5 * before["val/cer"]
    assert after["val/cer"] < 0.3
