import pytest
import torch

from ds2hub.decoding import DecoderConfig, greedy_decode, text_decoder
from ds2hub.errors import ConfigError
from ds2hub.inference.recognizer import SpeechRecognizer
from ds2hub.model import DeepSpeech2Config
from ds2hub.tokenizers import CharTokenizer, PinyinTokenizer


def LexiconBeamSearch(tokenizer, config=None):  # noqa: N802 - the flashlight lexicon search
    return text_decoder(tokenizer, config or DecoderConfig())


WORDS = ["是 900", "事 300", "市 200", "十 250", "市场 80", "学生 60", "学 40", "生 50", "中国 70"]


@pytest.fixture
def pinyin_tokenizer(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    return PinyinTokenizer(lexicon=str(path), lexicon_min_count=1)


def emissions(tokenizer, frames: list[dict[str, float]]) -> torch.Tensor:
    """(1, T, V) logits from per-frame token probabilities (the rest share what is left)."""
    vocab = tokenizer.vocab
    probs = torch.full((len(frames), len(vocab)), 1e-4)
    for t, frame in enumerate(frames):
        for tok, p in frame.items():
            probs[t, vocab.index(tok)] = p
    return probs.log()[None]


def spell(text: str) -> list[dict[str, float]]:
    """One confident frame per letter, with a blank between letters."""
    frames = []
    for ch in text:
        frames += [{ch: 0.9}, {"<blank>": 0.9}]
    return frames


def test_beam_search_fixes_a_letter_greedy_gets_wrong(pinyin_tokenizer):
    frames = spell("shi4 chang3")
    frames[2 * "shi4 chan".index("n") + 2] = {"q": 0.5, "g": 0.4}  # the g is heard as q
    logits = emissions(pinyin_tokenizer, frames)
    lengths = torch.tensor([logits.shape[1]])
    greedy = text_decoder(pinyin_tokenizer)(logits, lengths)[0]
    beam = LexiconBeamSearch(pinyin_tokenizer, config=DecoderConfig(beam_size=20))
    assert greedy != "市场"
    assert beam(logits, lengths) == ["市场"]


def test_beam_search_uses_the_lm_between_homophones(pinyin_tokenizer):
    logits = emissions(pinyin_tokenizer, spell("shi4"))
    lengths = torch.tensor([logits.shape[1]])
    assert LexiconBeamSearch(pinyin_tokenizer)(logits, lengths) == ["是"]  # the likeliest shi4


def test_beam_search_on_batches_with_padding(pinyin_tokenizer):
    a, b = spell("xue2 sheng1"), spell("zhong1 guo2")
    pad = [{"<blank>": 0.99}] * (len(a) - len(b))
    logits = torch.cat([emissions(pinyin_tokenizer, a), emissions(pinyin_tokenizer, b + pad)])
    lengths = torch.tensor([len(a), len(b)])
    assert LexiconBeamSearch(pinyin_tokenizer)(logits, lengths) == ["学生", "中国"]


def test_english_words_with_a_given_lexicon(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("one\ntwo\nthree\ntree\n")
    tok = CharTokenizer()
    logits = emissions(tok, spell("two three"))
    out = LexiconBeamSearch(tok, DecoderConfig(lexicon=str(words)))(
        logits, torch.tensor([logits.shape[1]])
    )
    assert out == ["two three"]


def test_a_lexicon_the_vocabulary_cannot_spell_is_an_error(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("学\n")
    with pytest.raises(ConfigError, match="no word of the lexicon can be spelled"):
        LexiconBeamSearch(CharTokenizer(), DecoderConfig(lexicon=str(words)))
    with pytest.raises(ConfigError, match="needs an LM"):
        LexiconBeamSearch(CharTokenizer())


def test_transcribe_with_beam_search_writes_only_lexicon_words(pinyin_tokenizer):
    torch.manual_seed(0)
    arch = DeepSpeech2Config(conv_channels=(4, 4), rnn_layers=1, rnn_hidden=16).to_dict()
    model = SpeechRecognizer(arch=arch, tokenizer=pinyin_tokenizer).eval()
    output_layer = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # an untrained model that never says blank: it babbles letters
        output_layer.bias[0] = -20.0
    waves = [0.1 * torch.randn(16000 * s) for s in (1, 3)]
    texts = model.transcribe(waves, sample_rate=16000, decoding=DecoderConfig(beam_size=8))
    words = {w.split()[0] for w in WORDS}
    # built once per setting: a real lexicon takes seconds to load
    assert model.text_decoder(DecoderConfig(beam_size=8)) is model.text_decoder(
        DecoderConfig(beam_size=8)
    )
    greedy = model.transcribe(waves, sample_rate=16000)
    assert all("⁇" in text for text in greedy)  # babble is no pinyin
    assert any(texts)
    for text in texts:  # beam search still writes words of the lexicon, and only them
        rest = text
        while rest:
            word = next(
                (w for w in sorted(words, key=len, reverse=True) if rest.startswith(w)), None
            )
            assert word is not None, text
            rest = rest[len(word) :]


def test_a_word_list_from_the_recipe_constrains_english(tmp_path):
    words = tmp_path / "digits.txt"
    words.write_text("zero\none\ntwo\nthree\nseven\n")
    tok = CharTokenizer()
    frames = spell("sevn two")  # a letter dropped: greedy writes a non-word
    logits = emissions(tok, frames)
    lengths = torch.tensor([logits.shape[1]])
    assert tok.decode(greedy_decode(logits, lengths)[0]) == "sevn two"
    beam = LexiconBeamSearch(tok, DecoderConfig(lexicon=str(words)))
    assert beam(logits, lengths) == ["seven two"]


def test_a_reweighted_search_decodes_as_a_fresh_one(pinyin_tokenizer):
    """`ds2hub lm tune` reweights one decoder across its grid instead of reloading the LM: each
    (alpha, beta) must decode exactly as a decoder built with them."""
    torch.manual_seed(0)
    logits = torch.randn(3, 30, pinyin_tokenizer.vocab_size) * 3
    lengths = torch.tensor([30, 24, 18])
    base = DecoderConfig(beam_size=20)
    reused = text_decoder(pinyin_tokenizer, base)
    outputs = set()
    # (alpha > 0: at 0, homophones tie and flashlight breaks ties arbitrarily, run to run)
    for alpha, beta in [(0.5, 0.0), (3.0, -1.0), (1.0, 2.0), (0.5, 0.0)]:
        fresh = text_decoder(pinyin_tokenizer, base.replace(lm_weight=alpha, word_score=beta))
        expected = fresh(logits, lengths)
        assert reused.reweight(alpha, beta)(logits, lengths) == expected, (alpha, beta)
        outputs.add(tuple(expected))
    assert len(outputs) > 1  # the weights matter for these emissions
