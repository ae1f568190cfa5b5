#!/usr/bin/env python3
"""Padding and training throughput with and without length bucketing, measured in one run.

Reads the utterance durations of a corpus through `SpeechDataModule` (any layout), builds the
training batches of an epoch with `DurationBatchSampler` (same padded-seconds budget) with
bucketing on and off, and prints the padded fraction of each. Then it trains a model on
spectrogram-shaped inputs of exactly those lengths for `--batches` batches of each kind and prints
audio seconds trained per second and the speed-up (features are synthetic so that only the
padding differs between the two runs).

    python experiments/batching/batching.py --path ../shared/data/hsk_words --text-column transcription
    python experiments/batching/batching.py --path recipes/digits
"""

from __future__ import annotations

import argparse
import time

import torch

from ds2hub.model import DeepSpeech2, get_preset
from ds2hub.tokenizers import CharTokenizer, MandarinTokenizer
from ds2hub.training.data import SpeechDataModule
from ds2hub.training.data.sampler import DurationBatchSampler
from ds2hub.training.task import ctc_loss


def train_rate(model: DeepSpeech2, durations: list[float], batches: list[list[int]]) -> float:
    """Audio seconds per second of full training steps over `batches`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    audio, elapsed = 0.0, 0.0
    for batch in batches:
        frames = torch.tensor([int(durations[i] * 100) + 1 for i in batch])
        x = torch.randn(len(batch), 161, int(frames.max()))
        x *= (torch.arange(x.size(-1))[None, :] < frames[:, None])[:, None, :]
        targets = torch.randint(1, 29, (len(batch), 4))
        t0 = time.perf_counter()
        logits, out_lengths = model(x, frames)
        loss = ctc_loss(logits, out_lengths, targets, torch.full((len(batch),), 4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - t0
        audio += sum(durations[i] for i in batch)
    return audio / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--mandarin", action="store_true")
    parser.add_argument("--max-batch-seconds", type=float, default=30.0)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per setting")
    args = parser.parse_args()
    tokenizer = MandarinTokenizer() if args.mandarin else CharTokenizer()
    dm = SpeechDataModule(
        tokenizer, args.path, train_split=args.split, text_column=args.text_column, sortagrad=False
    )
    durations = dm._dataset("train").durations
    print(
        f"{args.path}: {len(durations)} utterances, {sum(durations) / 3600:.2f} h, budget {args.max_batch_seconds:g} padded s/batch"
    )
    torch.manual_seed(0)
    model = DeepSpeech2(get_preset(args.preset), 29).train()
    rates = {}
    for bucketing in (False, True):
        sampler = DurationBatchSampler(
            durations, args.max_batch_seconds, bucketing=bucketing, sortagrad=False, seed=1
        )
        batches = sampler.batches(1)
        rates[bucketing] = train_rate(model, durations, batches[: args.batches])
        print(
            f"bucketing={'on ' if bucketing else 'off'}: {len(batches)} batches/epoch, "
            f"padded fraction {sampler.padding_fraction(1):.1%}, {rates[bucketing]:.1f} audio s/s ({args.preset})"
        )
    print(f"throughput with bucketing: x{rates[True] / rates[False]:.2f}")


if __name__ == "__main__":
    main()
