"""Pinyin -> characters, now a decoding concern: the greedy search over the word list, and the
lexicon that lists every reading of every word for the LM beam search."""

import pytest
import torch

from ds2hub.decoding import greedy_text_decoder
from ds2hub.decoding.hanzi import HanziLexicon, pinyin_lexicon
from ds2hub.tokenizers import PinyinTokenizer


@pytest.fixture
def small_lexicon(tmp_path):
    """A word-frequency file in jieba's format, with homophones of different frequencies."""
    path = tmp_path / "words.txt"
    lines = [
        "是 900 v",
        "事 300 n",
        "市 200 n",
        "十 250 m",
        "市场 80 n",
        "学生 60 n",
        "学 40 v",
        "生 50 v",
        "中国 70 ns",
        "了 400 ul",
        "AT&T 3 nz",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _one_hot(tok, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 2L, V) logits spelling `text` letter by letter, a blank after each letter."""
    ids = [tok.vocab.index(ch) for ch in text]
    logits = torch.full((2 * len(ids), tok.vocab_size), -10.0)
    for t, i in enumerate(ids):
        logits[2 * t, i] = 0.0
        logits[2 * t + 1, 0] = 0.0
    return logits[None], torch.tensor([logits.shape[0]])


def test_greedy_pinyin_decoding_writes_the_most_probable_words(small_lexicon):
    tok = PinyinTokenizer(lexicon=str(small_lexicon), lexicon_min_count=1)
    decode = greedy_text_decoder(tok)

    def hanzi(pinyin: str) -> str:
        return decode(*_one_hot(tok, pinyin))[0]

    assert hanzi("shi4") == "是"  # the most frequent of 是/事/市
    assert hanzi("shi2") == "十"  # the tone decides
    assert hanzi("shi4 chang3") == "市场"  # a known word beats two likelier characters
    assert hanzi("xue2sheng1") == "学生"  # a tone digit also ends a syllable
    assert hanzi("zhong guo") == "中国"  # missing tones fall back to the toneless reading
    assert hanzi("liao3") == "了"  # every reading of a single character is indexed
    assert hanzi("qqq xue2") == "⁇学"  # nothing explains qqq


def test_the_tokenizer_itself_only_maps_ids_to_pinyin(small_lexicon):
    tok = PinyinTokenizer(lexicon=str(small_lexicon), lexicon_min_count=1)
    assert tok.decode([tok.vocab.index(ch) for ch in "shi4"]) == "shi4"


def test_lexicon_needs_han_words():
    with pytest.raises(ValueError, match="no Han words"):
        HanziLexicon([("AT&T", 3)])


def test_the_beam_search_lexicon_keeps_every_homophone():
    counts = {"是": 900, "事": 300, "市": 200, "了": 400, "AT&T": 3}
    words = pinyin_lexicon(counts)
    shi4 = {w.word for w in words if w.syllables == ("shi4",)}
    assert shi4 == {"是", "事", "市"}  # no reading keeps only its likeliest word
    assert {w.syllables for w in words if w.word == "了"} == {("le5",)}
    others = pinyin_lexicon(counts, other_readings=True)
    assert {w.syllables for w in others if w.word == "了"} >= {("le5",), ("liao3",)}
    assert all(w.word != "AT&T" for w in words)
    # labels are plain words, as a word LM over characters writes them
    assert all("/" not in w.word for w in words)
