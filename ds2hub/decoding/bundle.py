"""The decoding setup inside a model folder, in the layout the hub's CTC models use.

    alphabet.json                 pyctcdecode's labels: {"labels": [...], "is_bpe": bool}
    language_model/attrs.json     {"alpha", "beta", "unk_score_offset", "score_boundary"}
    language_model/unigrams.txt   the LM's words, one a line
    language_model/<lm file>      ARPA or KenLM binary
    words.txt                     the lexicon (flashlight), when the setup names one
    decoding.json                 ds2hub's `DecoderConfig` with the paths above (backend, beam...)

`alphabet.json` and `language_model/` are pyctcdecode's `save_to_dir` layout. α and β are read
from `attrs.json`, so a tool that retunes them there is heard.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ds2hub.decoding.config import DecoderConfig
from ds2hub.decoding.lm import inspect_lm
from ds2hub.decoding.vocabulary import BPE_BOUNDARY, decoding_vocabulary
from ds2hub.errors import ConfigError
from ds2hub.paths import inside
from ds2hub.tokenizers.base import Tokenizer

DECODING_FILE = "decoding.json"
ALPHABET_FILE = "alphabet.json"
LM_DIR = "language_model"
ATTRS_FILE = "attrs.json"
UNIGRAMS_FILE = "unigrams.txt"
LEXICON_FILE = "words.txt"
# Top-level names a saved setup may create in a model folder.
FOLDER_ENTRIES = (DECODING_FILE, ALPHABET_FILE, LM_DIR, LEXICON_FILE)
# What a hub download fetches for it (snapshot_download's allow_patterns).
HUB_PATTERNS = (DECODING_FILE, ALPHABET_FILE, f"{LM_DIR}/*", LEXICON_FILE)
UNK_SCORE_OFFSET = -10.0  # pyctcdecode's default, written so attrs.json is complete


def save_decoding(directory: str | Path, config: DecoderConfig, tokenizer: Tokenizer) -> Path:
    """Writes `config`'s files into `directory` (see the module doc) and returns `decoding.json`.

    The LM is checked first (`inspect_lm`), so a folder never carries a file it cannot decode
    with; its order is recorded, and later loads refuse a replaced file of another order.
    """
    directory = Path(directory)
    stored = config.to_dict()
    vocab = decoding_vocabulary(tokenizer)
    if config.lm:
        info = inspect_lm(config.lm, config.lm_order)
        lm_dir = directory / LM_DIR
        if lm_dir.exists():
            shutil.rmtree(lm_dir)
        lm_dir.mkdir(parents=True)
        target = lm_dir / info.path.name
        shutil.copyfile(info.path, target)
        (lm_dir / UNIGRAMS_FILE).write_text(
            "".join(f"{w}\n" for w in sorted(info.vocabulary)), encoding="utf-8"
        )
        attrs = {
            "alpha": config.lm_weight,
            "beta": config.word_score,
            "unk_score_offset": UNK_SCORE_OFFSET,
            "score_boundary": True,
        }
        (lm_dir / ATTRS_FILE).write_text(json.dumps(attrs) + "\n")
        stored["lm"] = f"{LM_DIR}/{target.name}"
        stored["lm_order"] = info.order or config.lm_order
    if config.lexicon:
        shutil.copyfile(config.lexicon, directory / LEXICON_FILE)
        stored["lexicon"] = LEXICON_FILE
    if vocab.pyctcdecode_labels is not None:
        labels = list(vocab.pyctcdecode_labels)
        alphabet = {"labels": labels, "is_bpe": any(x.startswith(BPE_BOUNDARY) for x in labels)}
        (directory / ALPHABET_FILE).write_text(json.dumps(alphabet, ensure_ascii=False) + "\n")
    path = directory / DECODING_FILE
    path.write_text(json.dumps(stored, ensure_ascii=False, indent=2) + "\n")
    return path


def load_decoding(directory: str | Path) -> DecoderConfig | None:
    """The setup saved in `directory`, with absolute paths; None if it has none.

    Raises:
        ConfigError: an unreadable `decoding.json`, or one naming files outside the folder or
            missing from it.
    """
    directory = Path(directory)
    path = directory / DECODING_FILE
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from e
    for name in ("lm", "lexicon"):
        if stored.get(name) is not None:
            stored[name] = inside(directory, stored[name], f"{path}: {name}", ConfigError)
    attrs_path = directory / LM_DIR / ATTRS_FILE
    if stored.get("lm") and attrs_path.is_file():
        attrs = json.loads(attrs_path.read_text())
        stored["lm_weight"] = float(attrs.get("alpha", stored.get("lm_weight", 1.0)))
        stored["word_score"] = float(attrs.get("beta", stored.get("word_score", 0.0)))
    return DecoderConfig.from_dict(stored)
