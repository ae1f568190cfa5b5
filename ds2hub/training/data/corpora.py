"""Corpus layouts that `datasets.load_dataset` cannot read by itself (the release folders of
AISHELL-1 and Common Voice, see the data guide), as `datasets.Dataset`s with the same columns:
`audio` (`Audio(decode=False)`: a path or bytes), `text`, `speaker_id` and, where the layout says
it, `duration`. Plugins add layouts through the `ds2hub.corpora` entry-point group: a function
`(root: Path, split: str) -> datasets.Dataset` registered under the layout's name.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import datasets

from ds2hub.plugins import CORPORA, load_group

Loader = Callable[[Path, str], datasets.Dataset]


def _dataset(audio: list[str], text: list[str], speaker: list[str]) -> datasets.Dataset:
    ds = datasets.Dataset.from_dict({"audio": audio, "text": text, "speaker_id": speaker})
    return ds.cast_column("audio", datasets.Audio(decode=False))


def load_aishell(root: Path, split: str) -> datasets.Dataset:
    """AISHELL-1 in its release layout; `split` is `train`, `dev` or `test` (`validation` = dev)."""
    base = root / "data_aishell" if (root / "data_aishell").is_dir() else root
    split = {"validation": "dev"}.get(split, split)
    transcripts: dict[str, str] = {}
    for path in sorted((base / "transcript").glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            utt, _, text = line.strip().partition(" ")
            if utt:
                transcripts[utt] = text.strip()
    wavs = sorted((base / "wav" / split).glob("*/*.wav"))
    if not wavs:
        raise FileNotFoundError(f"no AISHELL audio under {base / 'wav' / split}")
    # Utterances without a transcript exist in the release; they cannot train, so they are left out.
    kept = [w for w in wavs if w.stem in transcripts]
    return _dataset(
        [str(w) for w in kept], [transcripts[w.stem] for w in kept], [w.parent.name for w in kept]
    )


def load_commonvoice(root: Path, split: str) -> datasets.Dataset:
    """A Common Voice release folder; `split` is a TSV name (`train`, `dev`, `test`, `validated` ...)."""
    split = {"validation": "dev"}.get(split, split)
    tsv = root / f"{split}.tsv"
    if not tsv.exists():
        raise FileNotFoundError(f"no {tsv.name} in the Common Voice folder {root}")
    audio, text, speaker = [], [], []
    with open(tsv, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            audio.append(str(root / "clips" / row["path"]))
            text.append(row.get("sentence") or "")
            speaker.append(row.get("client_id") or "")
    return _dataset(audio, text, speaker)


def available_layouts() -> dict[str, Loader]:
    """Release-folder layouts by name: the built-in ones and those of plugins."""
    # A plugin that fails to import or reuses a name is logged by name; the others still load.
    return load_group(CORPORA)[0]


def detect_layout(path: str) -> str | None:
    """The release layout of a local folder, or None for anything `datasets` reads itself."""
    root = Path(path)
    if not root.is_dir():
        return None
    if (root / "data_aishell" / "transcript").is_dir() or (
        (root / "transcript").is_dir() and (root / "wav").is_dir()
    ):
        return "aishell"
    if (root / "clips").is_dir() and any(
        (root / f"{s}.tsv").exists() for s in ("train", "dev", "test")
    ):
        return "commonvoice"
    return None
