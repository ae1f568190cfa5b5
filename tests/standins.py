"""Tiny local stand-ins for each corpus layout ds2hub reads, made from shipped digit audio.

Each builder writes a few utterances in the exact layout of the real corpus (file names,
columns, transcript conventions), so the tests run the real loaders on them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import datasets
import soundfile as sf

from ds2hub.audio import SAMPLE_RATE, load_audio

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "recipes" / "digits"
HANZI = dict(
    zip("zero one two three four five six seven eight nine".split(), "零一二三四五六七八九")
)


def digit_rows(split: str, n: int) -> list[dict[str, str]]:
    with open(DIGITS / split / "metadata.csv") as f:
        return list(csv.DictReader(f))[:n]


def encoded(row: dict[str, str], split: str, fmt: str) -> bytes:
    """The utterance re-encoded as FLAC/WAV/MP3 bytes at 16 kHz."""
    buf = io.BytesIO()
    sf.write(buf, load_audio(DIGITS / split / row["file_name"]).numpy(), SAMPLE_RATE, format=fmt)
    return buf.getvalue()


SPLITS = {"train": 8, "validation": 4, "test": 4}


def make_librispeech(root: Path) -> Path:
    """`openslr/librispeech_asr` as on the hub: parquet under `<config>/<split>/`, a README with the
    configs `clean` and `all` and their split names, columns file/audio/text/speaker_id/chapter_id/id,
    uppercase text."""
    features = datasets.Features(
        {
            "file": datasets.Value("string"),
            "audio": datasets.Audio(sampling_rate=SAMPLE_RATE),
            "text": datasets.Value("string"),
            "speaker_id": datasets.Value("int64"),
            "chapter_id": datasets.Value("int64"),
            "id": datasets.Value("string"),
        }
    )
    configs = {
        "clean": {"train.100": "train", "validation": "validation", "test": "test"},
        "all": {
            "train.clean.100": "train", "train.clean.360": "train", "train.other.500": "train",
            "validation.clean": "validation", "test.clean": "test",
        },
    }  # fmt: skip
    readme = "---\nconfigs:\n"
    for config, splits in configs.items():
        readme += f"- config_name: {config}\n  data_files:\n"
        for name, source in splits.items():
            rows = digit_rows(source, SPLITS[source])
            ids = [f"{100 + i}-{2000 + i}-{i:04d}" for i in range(len(rows))]
            data = {
                "file": [f"{u}.flac" for u in ids],
                "audio": [
                    {"bytes": encoded(r, source, "FLAC"), "path": f"{u}.flac"}
                    for r, u in zip(rows, ids)
                ],
                "text": [r["text"].upper() for r in rows],
                "speaker_id": [100 + i for i in range(len(rows))],
                "chapter_id": [2000 + i for i in range(len(rows))],
                "id": ids,
            }
            out = root / config / name
            out.mkdir(parents=True)
            datasets.Dataset.from_dict(data, features=features).to_parquet(
                str(out / "0000.parquet")
            )
            readme += f"  - split: {name}\n    path: {config}/{name}/*.parquet\n"
    (root / "README.md").write_text(readme + "---\n")
    return root


def make_fleurs(root: Path) -> Path:
    """FLEURS-style parquet (`<config>/<split>/*.parquet`; transcription/raw_transcription columns)."""
    for split, n in SPLITS.items():
        rows = digit_rows(split, n)
        data = {
            "id": list(range(len(rows))),
            "path": [r["file_name"].replace(".opus", ".wav") for r in rows],
            "audio": [{"bytes": encoded(r, split, "WAV"), "path": r["file_name"]} for r in rows],
            "raw_transcription": [r["text"].capitalize() + "." for r in rows],
            "transcription": [r["text"] for r in rows],
            "gender": ["FEMALE"] * len(rows),
            "language": ["English"] * len(rows),
        }
        out = root / "en_us" / split
        out.mkdir(parents=True)
        ds = datasets.Dataset.from_dict(data).cast_column(
            "audio", datasets.Audio(sampling_rate=SAMPLE_RATE)
        )
        ds.to_parquet(str(out / "0000.parquet"))
    return root


def make_aishell(root: Path) -> Path:
    """AISHELL-1's release layout with word-segmented Mandarin transcripts."""
    base = root / "data_aishell"
    lines = []
    for split, n in {"train": 8, "dev": 4, "test": 4}.items():
        source = {"dev": "validation"}.get(split, split)
        for i, row in enumerate(digit_rows(source, n)):
            speaker = f"S{(i % 2) + 2:04d}"
            utt = f"BAC009{speaker}W{i:04d}{split[0]}"
            (base / "wav" / split / speaker).mkdir(parents=True, exist_ok=True)
            (base / "wav" / split / speaker / f"{utt}.wav").write_bytes(encoded(row, source, "WAV"))
            lines.append(f"{utt} {' '.join(HANZI[w] for w in row['text'].split())}")
    (base / "transcript").mkdir(parents=True)
    (base / "transcript" / "aishell_transcript_v0.8.txt").write_text(
        "\n".join(lines) + "\n", encoding="utf-8"
    )
    return root


def make_commonvoice(root: Path) -> Path:
    """A Common Voice release folder: `clips/*.mp3` and tab-separated split files."""
    (root / "clips").mkdir(parents=True)
    header = [
        "client_id",
        "path",
        "sentence",
        "up_votes",
        "down_votes",
        "age",
        "gender",
        "accents",
        "locale",
        "segment",
    ]
    for split, tsv in {"train": "train", "validation": "dev", "test": "test"}.items():
        with open(root / f"{tsv}.tsv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(header)
            for i, row in enumerate(digit_rows(split, SPLITS[split])):
                clip = f"common_voice_en_{tsv}_{i}.mp3"
                (root / "clips" / clip).write_bytes(encoded(row, split, "MP3"))
                writer.writerow(
                    [
                        f"client{i % 3}",
                        clip,
                        row["text"].capitalize() + ".",
                        2,
                        0,
                        "",
                        "",
                        "",
                        "en",
                        "",
                    ]
                )
    return root


def make_audiofolder(root: Path, mandarin: bool = False) -> Path:
    """The `audiofolder` layout of the FSDD / HSK development sets: one metadata.csv with
    file_name,transcription,speaker_id,duration beside audio/."""
    (root / "audio").mkdir(parents=True)
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "transcription", "speaker_id", "duration"])
        rows = [(split, row) for split in ("train", "validation") for row in digit_rows(split, 8)]
        for i, (split, row) in enumerate(rows):
            name = f"audio/utt{i:03d}.flac"  # no split words: `datasets` reads "train_3.flac" as a split
            (root / name).write_bytes(encoded(row, split, "FLAC"))
            text = "".join(HANZI[w] for w in row["text"].split()) if mandarin else row["text"]
            writer.writerow([name, text, f"spk{i % 4}", row["duration"]])
    return root


# A tiny forward-only model with a row convolution: what streaming and serving tests run.
STREAMING_ARCH = dict(
    conv_channels=[4, 4],
    conv_kernel_freq=[21, 11],
    conv_kernel_time=[11, 5],
    conv_stride_time=[2, 1],
    rnn_layers=2,
    rnn_hidden=24,
    bidirectional=False,
    lookahead=5,
)
