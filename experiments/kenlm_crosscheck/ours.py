"""Our pyctcdecode LM scorer (flashlight-text KenLM) side: decodes 4 utterances; compare with
theirs.py, run in a venv with the compiled `kenlm` module + pyctcdecode (see README there)."""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ds2hub.decoding import DecoderConfig, text_decoder
from ds2hub.decoding.vocabulary import decoding_vocabulary
from ds2hub.tokenizers import CharTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tests/
from tests.lm_files import write_arpa  # noqa: E402

arpa = write_arpa(
    Path("/tmp/i9b/x/en.arpa"),
    {"one": -1.0, "two": -1.0, "three": -1.2, "tree": -1.5, "on": -2.0, "to": -1.3, "the": -0.8},
    {("two", "three"): -0.1, ("the", "tree"): -0.3},
    backoff=-0.2,
)
tok = CharTokenizer()
rng = np.random.default_rng(0)
texts = ["two three", "the tree", "one two", "to the tree"]
out = []
logits = []
for t in texts:
    ids = tok.encode(t)
    T = 2 * len(ids) + 2
    x = rng.normal(0, 1.5, size=(T, tok.vocab_size))
    for i, k in enumerate(ids):
        x[2 * i + 1, k] += 4.0
    x[::2, 0] += 3.0
    logits.append(x.astype(np.float32))
np.save("/tmp/i9b/x/logits.npy", np.array(logits, dtype=object), allow_pickle=True)
json.dump(list(decoding_vocabulary(tok).pyctcdecode_labels), open("/tmp/i9b/x/labels.json", "w"))
d = text_decoder(
    tok,
    DecoderConfig(backend="pyctcdecode", lm=str(arpa), lm_weight=0.5, word_score=1.5, beam_size=20),
)
for x in logits:
    lp = torch.log_softmax(torch.tensor(x), -1)[None]
    out.append(d(lp, torch.tensor([x.shape[0]]))[0])
    beams = d._decoder.decode_beams(lp[0].numpy(), beam_width=20)
    print(
        "ours",
        out[-1],
        "|",
        beams[0][0],
        round(beams[0].lm_score, 4) if hasattr(beams[0], "lm_score") else beams[0][-1],
    )
