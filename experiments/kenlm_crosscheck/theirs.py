"""pyctcdecode with the real `kenlm` module on the same logits and ARPA as ours.py writes."""

import json

import numpy as np
from pyctcdecode import build_ctcdecoder

labels = json.load(open("/tmp/i9b/x/labels.json"))
d = build_ctcdecoder(labels, kenlm_model_path="/tmp/i9b/x/en.arpa", alpha=0.5, beta=1.5)
for x in np.load("/tmp/i9b/x/logits.npy", allow_pickle=True):
    x = x - np.log(np.exp(x).sum(-1, keepdims=True))
    beams = d.decode_beams(x, beam_width=20)
    print("kenlm", d.decode(x, beam_width=20), "|", beams[0][0], round(beams[0][-1], 4))
