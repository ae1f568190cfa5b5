import sys
import textwrap

import pytest
import torch

from ds2hub.decoding import DecoderConfig, text_decoder
from ds2hub.errors import ConfigError
from ds2hub.tokenizers import (
    BLANK,
    BigramTokenizer,
    CharTokenizer,
    MandarinTokenizer,
    PinyinTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    available_tokenizers,
    load_tokenizer,
    normalize_english,
    normalize_mandarin,
    tokenizer_from_config,
)
from tests.lm_files import write_arpa


def test_bigram_split_matches_the_paper():
    tok = BigramTokenizer()
    ids = tok.encode("The cats sat")
    assert [tok.vocab[i] for i in ids] == ["th", "e", "_", "ca", "ts", "_", "sa", "t"]
    assert tok.decode(ids) == "the cats sat"


def test_bigrams_halve_the_token_count():
    text = "speech recognition in english and mandarin"
    assert len(BigramTokenizer().encode(text)) < 0.6 * len(CharTokenizer().encode(text))


@pytest.mark.parametrize("cls", [CharTokenizer, BigramTokenizer])
def test_english_round_trip_and_normalisation(cls):
    tok = cls()
    assert tok.vocab[0] == BLANK and tok.blank_id == 0
    ids = tok.encode("  Don't STOP—café au-lait! ")
    assert 0 not in ids
    assert tok.decode(ids) == "don't stop cafe au lait"


def test_char_tokenizer_vocabulary():
    tok = CharTokenizer()
    assert tok.vocab_size == 29
    assert tok.decode(tok.encode("four seven two nine")) == "four seven two nine"


def test_custom_alphabet():
    tok = CharTokenizer(alphabet=[" ", *"abcdefghijklmnopqrstuvwxyzñáéíóú"])
    assert tok.decode(tok.encode("Año Él")) == "año él"
    assert tokenizer_from_config(tok.to_config()).vocab == tok.vocab


def test_mandarin_vocabulary_and_unknowns():
    tok = MandarinTokenizer()
    assert tok.needs_fit
    tok.fit(["甚至 出现 交易 几乎 停滞 的 情况", "一二三 三"])
    assert not tok.needs_fit
    assert tok.vocab[:2] == [BLANK, "<unk>"]
    assert tok.vocab[2] == "三"  # the most frequent character comes first
    assert tok.decode(tok.encode("出现，交易！")) == "出现交易"
    ids = tok.encode("出现情形")  # 形 was never seen
    assert ids[-1] == tok.unk_id
    assert tok.decode(ids) == "出现情⁇"


def test_mandarin_fit_is_deterministic():
    texts = ["你好 世界", "世界 和平", "你们 好"]
    assert MandarinTokenizer().fit(texts).vocab == MandarinTokenizer().fit(reversed(texts)).vocab


def test_unfitted_tokenizer_fails_clearly():
    with pytest.raises(RuntimeError, match="fit"):
        MandarinTokenizer().encode("你好")


def test_normalizers():
    assert normalize_english("Hello, WORLD -- it's 'fine'") == "hello world it's fine"
    assert normalize_mandarin("甚至 出现。ＡＢ") == "甚至出现ab"


def test_sentencepiece_trains_saves_and_loads(tmp_path):
    texts = ["the cat sat on the mat", "a dog sat on a log", "the quick brown fox"] * 30
    tok = SentencePieceTokenizer(vocab_size=40, model_type="bpe").fit(texts)
    ids = tok.encode("The cat sat on a log")
    assert 0 not in ids
    assert tok.decode(ids) == "the cat sat on a log"
    tok.save(tmp_path)
    assert (tmp_path / "tokenizer.model").exists()
    again = load_tokenizer(tmp_path)
    assert isinstance(again, SentencePieceTokenizer)
    assert again.encode("the cat") == tok.encode("the cat") and again.vocab == tok.vocab


@pytest.mark.parametrize(
    "tok",
    [
        CharTokenizer(),
        BigramTokenizer(),
        MandarinTokenizer().fit(["你好世界"]),
        PinyinTokenizer(output="pinyin"),
    ],
    ids=["chars", "bigrams", "mandarin", "pinyin"],
)
def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert type(again) is type(tok) and again.vocab == tok.vocab
    assert again.get_config() == tok.get_config()


def test_pinyin_targets_are_toned_syllables():
    tok = PinyinTokenizer(output="pinyin")
    assert tok.vocab_size == 33  # blank, space, a-z (ü written v), tones 1-5
    ids = tok.encode("学生们，喜欢绿色！")  # punctuation is normalised away
    assert tok.decode(ids) == "xue2 sheng1 men5 xi3 huan1 lv4 se4"
    assert tok.uncovered("学生") == set()


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown tokenizer kind 'klingon'"):
        tokenizer_from_config({"kind": "klingon"})


def test_saved_configs_cannot_name_arbitrary_classes():
    with pytest.raises(KeyError, match="not registered"):
        tokenizer_from_config({"class_path": "os.system", "init_args": {}})


def test_plugin_tokenizer_registers_through_entry_points(tmp_path, monkeypatch):
    """A package installed with a `ds2hub.tokenizers` entry point is found by kind."""
    (tmp_path / "my_plugin.py").write_text(
        textwrap.dedent(
            """
            from ds2hub.tokenizers import CharTokenizer

            class UppercaseTokenizer(CharTokenizer):
                kind = "shouting"
            """
        )
    )
    dist = tmp_path / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ds2hub.tokenizers]\nshouting = my_plugin:UppercaseTokenizer\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = available_tokenizers()
    assert kinds["shouting"].__name__ == "UppercaseTokenizer"
    tok = tokenizer_from_config({"kind": "shouting", "init_args": {}})
    assert tok.decode(tok.encode("One Two")) == "one two"
    sys.modules.pop("my_plugin", None)


def test_example_plugin_package_registers_its_tokenizer(tmp_path, monkeypatch):
    """plugins/ds2hub-spanish, made visible the way pip installs it (a dist-info with its entry points)."""
    import tomllib
    from pathlib import Path

    plugin = Path(__file__).resolve().parents[1] / "plugins" / "ds2hub-spanish"
    meta = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]
    dist = tmp_path / f"ds2hub_spanish-{meta['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    )
    eps = meta["entry-points"]["ds2hub.tokenizers"]
    (dist / "entry_points.txt").write_text(
        "[ds2hub.tokenizers]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(plugin))
    tok = tokenizer_from_config({"kind": "spanish", "init_args": {}})
    assert tok.decode(tok.encode("¿Qué año es? ¡Mañana!")) == "qué año es mañana"
    assert tok.vocab_size == 36  # blank, space, apostrophe, a-z, áéíóúüñ (its README)
    assert tok.normalize("3 NIÑOS") == "niños"  # numbers are not spelled out: they go
    assert (tok.lm_unit, tok.word_boundary, tok.language) == ("word", " ", "es")
    tok.save(tmp_path / "saved")
    assert type(load_tokenizer(tmp_path / "saved")).__name__ == "SpanishTokenizer"
    sys.modules.pop("ds2hub_spanish", None)


# --- what decoders and model cards read --------------------------------------------------------
@pytest.mark.parametrize(
    ("tok", "unit", "boundary", "language"),
    [
        (CharTokenizer(), "word", " ", "en"),
        (CharTokenizer(alphabet=list(" abc")), "word", " ", None),
        (CharTokenizer(alphabet=list(" abc"), language="fr"), "word", " ", "fr"),
        (BigramTokenizer(), "word", "_", "en"),
        (SentencePieceTokenizer(language="de"), "word", None, "de"),
        (MandarinTokenizer(characters=list("中国")), "char", None, "zh"),
        (PinyinTokenizer(), "word", " ", "zh"),
    ],
    ids=["chars", "alphabet", "alphabet-fr", "bigrams", "sentencepiece", "mandarin", "pinyin"],
)
def test_each_tokenizer_states_its_lm_unit_word_boundary_and_language(
    tok, unit, boundary, language, tmp_path
):
    assert (tok.lm_unit, tok.word_boundary, tok.language) == (unit, boundary, language)
    if not tok.needs_fit:  # the language travels with the saved tokenizer
        tok.save(tmp_path)
        assert load_tokenizer(tmp_path).language == language


def test_decoder_labels_follow_the_lm_unit():
    assert CharTokenizer().decoder_labels()[:4] == ["", " ", "'", "a"]
    assert BigramTokenizer().decoder_labels()[:3] == ["", " ", "a"]
    # A character LM: every character is a word of its own; `<unk>` stays as it is.
    mandarin = MandarinTokenizer(characters=list("中国"))
    assert mandarin.decoder_labels() == ["", "<unk>", "▁中", "▁国"]
    assert PinyinTokenizer().decoder_labels() is None  # words only through its lexicon


class SyllableTokenizer(Tokenizer):
    """A third-party tokenizer written on the base class, stating no LM facts."""

    kind = "syllables"

    def __init__(self) -> None:
        self.vocab = [BLANK, "ba", "na"]

    def normalize(self, text: str) -> str:
        return text.lower()

    def _split(self, text: str) -> list[str]:
        return [text[i : i + 2] for i in range(0, len(text), 2)]

    def _join(self, tokens: list[str]) -> str:
        return "".join(tokens)


@pytest.mark.parametrize("backend", ["flashlight", "pyctcdecode"])
def test_a_tokenizer_without_an_lm_unit_says_so_in_one_line_when_the_decoder_is_built(
    backend, tmp_path
):
    tok = SyllableTokenizer()
    assert tok.lm_unit is None and tok.language is None  # the base class's defaults
    lm = write_arpa(tmp_path / "lm.arpa", {"banana": -1.0, "nab": -1.0})
    with pytest.raises(ConfigError) as error:
        text_decoder(tok, DecoderConfig(backend=backend, lm=str(lm)))
    assert str(error.value).splitlines() == [
        "SyllableTokenizer (kind 'syllables') cannot decode with a language model: it declares "
        "no lm_unit ('word' or 'char'); decode greedily"
    ]
    # Greedy decoding needs none of it.
    logits = torch.log(torch.tensor([[[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]]))
    assert text_decoder(tok)(logits, torch.tensor([3])) == ["bana"]
