"""LM decoding for every tokenizer and both backends, on emissions written by hand: the LM must
change what greedy decoding gets wrong, and bad LM files must fail when the decoder is built."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
import torch

from ds2hub.decoding import GREEDY, DecoderConfig, describe_decoding, text_decoder
from ds2hub.decoding.flashlight import FlashlightDecoder
from ds2hub.decoding.lm import inspect_lm, kenlm_scorer
from ds2hub.decoding.pyctc import PyCTCDecoder
from ds2hub.errors import ConfigError
from ds2hub.tokenizers import (
    BigramTokenizer,
    CharTokenizer,
    MandarinTokenizer,
    PinyinTokenizer,
    SentencePieceTokenizer,
)
from tests.lm_files import write_arpa

BACKENDS = ["flashlight", "pyctcdecode"]
ENGLISH = {"one": -1.0, "two": -1.0, "three": -1.0, "tree": -1.5, "cot": -2.0, "cat": -1.0}


def emissions(vocab: list[str], frames: list[dict[str, float]]) -> torch.Tensor:
    """(1, T, V) log-probabilities from per-frame token probabilities (the rest share 1e-4)."""
    probs = torch.full((len(frames), len(vocab)), 1e-4)
    for t, frame in enumerate(frames):
        for tok, p in frame.items():
            probs[t, vocab.index(tok)] = p
    return (probs / probs.sum(-1, keepdim=True)).log()[None]


def spelled(tokens: list[str], blank: str = "<blank>") -> list[dict[str, float]]:
    """One confident frame per token, a blank after each."""
    frames: list[dict[str, float]] = []
    for tok in tokens:
        frames += [{tok: 0.9}, {blank: 0.9}]
    return frames


def run(decoder, logits: torch.Tensor) -> str:
    return decoder(logits, torch.tensor([logits.shape[1]]))[0]


@pytest.fixture
def english_lm(tmp_path):
    return write_arpa(tmp_path / "en.arpa", ENGLISH, {("two", "three"): -0.1})


@pytest.mark.parametrize("backend", BACKENDS)
def test_chars_word_lm_fixes_a_letter_greedy_gets_wrong(backend, english_lm):
    tok = CharTokenizer()
    frames = spelled(list("two three"))
    frames[2 * "two th".index("h") + 2] = {"e": 0.5, "r": 0.4}  # the r of three heard as e
    logits = emissions(tok.vocab, frames)
    assert run(text_decoder(tok), logits) == "two theee"
    config = DecoderConfig(backend=backend, lm=str(english_lm), beam_size=16)
    assert run(text_decoder(tok, config), logits) == "two three"


@pytest.mark.parametrize("backend", BACKENDS)
def test_bigrams_boundary_token_and_word_lm(backend, english_lm):
    tok = BigramTokenizer()
    frames = spelled(["tw", "o", "_", "th", "re", "e"])
    frames[8] = {"ee": 0.5, "re": 0.4}
    logits = emissions(tok.vocab, frames)
    assert run(text_decoder(tok), logits) == "two theee"
    config = DecoderConfig(backend=backend, lm=str(english_lm), beam_size=16)
    assert run(text_decoder(tok, config), logits) == "two three"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sentencepiece_word_lm(backend, english_lm):
    tok = SentencePieceTokenizer(vocab_size=30, model_type="bpe").fit(
        ["two three one tree cat cot"] * 30
    )
    pieces = [tok.vocab[i] for i in tok.encode("two three")]
    frames = spelled(pieces)
    # the last piece heard as another piece that does not start a word
    wrong = next(
        p
        for p in tok.vocab[1:]
        if not p.startswith("▁") and p not in pieces and not p.startswith("<")
    )
    frames[-2] = {wrong: 0.5, pieces[-1]: 0.4}
    logits = emissions(tok.vocab, frames)
    assert run(text_decoder(tok), logits) != "two three"
    config = DecoderConfig(backend=backend, lm=str(english_lm), beam_size=16)
    assert run(text_decoder(tok, config), logits) == "two three"


@pytest.mark.parametrize("backend", BACKENDS)
def test_mandarin_characters_with_a_character_lm(backend, tmp_path):
    tok = MandarinTokenizer(characters=list("是事市学生中国"))
    lm = write_arpa(
        tmp_path / "zh.arpa",
        {"是": -0.5, "事": -1.5, "市": -2.0, "学": -1.0, "生": -1.0, "中": -1.0, "国": -1.0},
        {("中", "国"): -0.05},
    )
    frames = spelled(["中", "国"]) + [{"是": 0.3, "事": 0.35, "市": 0.35}, {"<blank>": 0.9}]
    logits = emissions(tok.vocab, frames)
    assert run(text_decoder(tok), logits) == "中国事"  # acoustics alone: 事 by a hair
    config = DecoderConfig(backend=backend, lm=str(lm), beam_size=16)
    assert run(text_decoder(tok, config), logits) == "中国是"


@pytest.fixture
def pinyin(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text(
        "是 900\n事 300\n市 200\n十 250\n市场 80\n学生 60\n中国 70\n", encoding="utf-8"
    )
    return PinyinTokenizer(lexicon=str(words), lexicon_min_count=1)


def test_pinyin_homophones_are_chosen_by_a_word_lm_over_characters(pinyin, tmp_path):
    logits = emissions(pinyin.vocab, spelled(list("shi4")))
    assert run(text_decoder(pinyin), logits) == "是"  # the word list's likeliest shi4
    assert run(text_decoder(pinyin, DecoderConfig(beam_size=16)), logits) == "是"
    # A standard word LM over characters (no `word/reading` labels) that prefers 事:
    lm = write_arpa(tmp_path / "hz.arpa", {"是": -2.0, "事": -0.3, "市": -2.0, "市场": -1.0})
    assert run(text_decoder(pinyin, DecoderConfig(beam_size=16, lm=str(lm))), logits) == "事"
    both = emissions(pinyin.vocab, spelled(list("shi4 chang3")))
    assert run(text_decoder(pinyin, DecoderConfig(beam_size=16, lm=str(lm))), both) == "市场"


def test_pinyin_has_no_pyctcdecode_decoding(pinyin):
    with pytest.raises(ConfigError, match="use backend flashlight"):
        text_decoder(pinyin, DecoderConfig(backend="pyctcdecode"))


def test_hotwords_boost_a_word_in_pyctcdecode():
    tok = CharTokenizer()
    logits = emissions(
        tok.vocab, spelled(["c"]) + [{"a": 0.5, "o": 0.4}, {"<blank>": 0.9}] + spelled(["t"])
    )
    assert run(text_decoder(tok, DecoderConfig(backend="pyctcdecode")), logits) == "cat"
    boosted = DecoderConfig(backend="pyctcdecode", hotwords=("cot",))
    assert run(text_decoder(tok, boosted), logits) == "cot"
    with pytest.raises(ConfigError, match="no hotwords"):
        text_decoder(tok, DecoderConfig(backend="flashlight", hotwords=("cot",)))


def test_pyctcdecode_scores_like_its_own_language_model(english_lm):
    """The KenLM scorer behind pyctcdecode: log10 -> ln, α, β, the unknown-word offset."""
    lm = kenlm_scorer(english_lm, ENGLISH, order=2, alpha=0.5, beta=1.5)
    ln10 = 2.302585092994046
    score, state = lm.score(lm.get_start_state(), "two")
    assert score == pytest.approx(0.5 * -1.0 * ln10 + 1.5, abs=1e-5)  # backs off from <s>
    score, _ = lm.score(state, "three")
    assert score == pytest.approx(0.5 * -0.1 * ln10 + 1.5, abs=1e-5)  # the bigram
    score, _ = lm.score(state, "three", is_last_word=True)  # + log10 p(</s> | three) = -1
    assert score == pytest.approx(0.5 * (-0.1 - 1.0) * ln10 + 1.5, abs=1e-5)
    score, _ = lm.score(lm.get_start_state(), "zebra")  # <unk> (-6) plus the offset (-10)
    assert score == pytest.approx(0.5 * (-6.0 - 10.0) * ln10 + 1.5, abs=1e-5)


# --- bad input: clear errors when the decoder is built ---------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_lm_is_an_error_at_build_time(backend, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        text_decoder(CharTokenizer(), DecoderConfig(backend=backend, lm=str(tmp_path / "no.arpa")))


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_lm_files_are_errors(backend, english_lm, tmp_path):
    garbage = tmp_path / "garbage.arpa"
    garbage.write_bytes(b"\x00\x01 not a language model")
    truncated = tmp_path / "truncated.arpa"
    truncated.write_text(english_lm.read_text()[: len(english_lm.read_text()) // 2])
    lying = tmp_path / "lying.arpa"
    lying.write_text(english_lm.read_text().replace("ngram 1=9", "ngram 1=12"))
    for path, message in (
        (garbage, "not an ARPA file"),
        (truncated, "truncated"),
        (lying, "declares 12 unigrams"),
    ):
        with pytest.raises(ConfigError, match=message):
            text_decoder(CharTokenizer(), DecoderConfig(backend=backend, lm=str(path)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_lm_of_the_wrong_order_is_an_error(backend, english_lm):
    config = DecoderConfig(backend=backend, lm=str(english_lm), lm_order=3)
    with pytest.raises(ConfigError, match="2-gram model; this decoder expects order 3"):
        text_decoder(CharTokenizer(), config)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_lm_of_another_vocabulary_is_an_error_not_an_unk_only_search(backend, tmp_path):
    chinese = write_arpa(tmp_path / "zh.arpa", {"是": -0.5, "事": -1.0})
    with pytest.raises(ConfigError, match="(knows none|no word of the LM)"):
        text_decoder(CharTokenizer(), DecoderConfig(backend=backend, lm=str(chinese)))
    english = write_arpa(tmp_path / "en.arpa", {"one": -1.0})
    with pytest.raises(ConfigError, match="knows none of the model's characters"):
        text_decoder(
            MandarinTokenizer(characters=list("是事")),
            DecoderConfig(backend=backend, lm=str(english)),
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_low_coverage_is_reported_with_its_figure(backend, tmp_path, caplog):
    lm = write_arpa(tmp_path / "mixed.arpa", {"one": -1.0, "是": -1.0, "事": -1.0, "市": -1.0})
    tok = CharTokenizer()
    with caplog.at_level(logging.WARNING):
        decoder = text_decoder(tok, DecoderConfig(backend=backend, lm=str(lm)))
    assert "25.0 %" in caplog.text
    assert decoder.coverage == pytest.approx(0.25) or isinstance(decoder, FlashlightDecoder)


def test_inspect_lm_reads_order_and_vocabulary(english_lm):
    info = inspect_lm(english_lm)
    assert info.order == 2 and info.vocabulary == frozenset(ENGLISH)


def test_a_character_model_needs_an_lm_file_for_flashlight():
    with pytest.raises(ConfigError, match="character LM"):
        text_decoder(MandarinTokenizer(characters=list("是事")), DecoderConfig())


def test_unknown_settings_are_config_errors():
    with pytest.raises(ConfigError, match="backend"):
        DecoderConfig(backend="kaldi")
    with pytest.raises(ConfigError, match="unknown decoding settings"):
        DecoderConfig.from_dict({"beam": 3})


def test_descriptions_name_what_ran(english_lm, pinyin):
    tok = CharTokenizer()
    assert describe_decoding(None, tok) == describe_decoding(GREEDY, tok)
    assert "no language model" in describe_decoding(GREEDY, tok)
    text = describe_decoding(
        DecoderConfig(backend="pyctcdecode", lm=str(english_lm), lm_order=2, beam_size=64), tok
    )
    assert text.startswith("pyctcdecode beam search, beam 64, 2-gram word LM `en.arpa`")
    assert "unigram search" in describe_decoding(GREEDY, pinyin)
    assert isinstance(text_decoder(tok, DecoderConfig(backend="pyctcdecode")), PyCTCDecoder)


def test_saved_setups_use_pyctcdecodes_layout_for_each_tokenizer(tmp_path, pinyin):
    import json

    from ds2hub.decoding.bundle import load_decoding, save_decoding

    zh = write_arpa(tmp_path / "zh.arpa", {"是": -0.5, "事": -1.0})
    mandarin = MandarinTokenizer(characters=list("是事"))
    config = DecoderConfig(backend="pyctcdecode", lm=str(zh), lm_weight=0.7, word_score=0.2)
    (tmp_path / "m").mkdir()
    save_decoding(tmp_path / "m", config, mandarin)
    alphabet = json.loads((tmp_path / "m" / "alphabet.json").read_text())
    assert alphabet == {"labels": ["", "<unk>", "▁是", "▁事"], "is_bpe": True}
    assert (tmp_path / "m" / "language_model" / "unigrams.txt").read_text() == "事\n是\n"
    loaded = load_decoding(tmp_path / "m")
    assert loaded == config.replace(
        lm=str(tmp_path / "m" / "language_model" / "zh.arpa"), lm_order=2
    )
    (tmp_path / "p").mkdir()
    save_decoding(tmp_path / "p", DecoderConfig(beam_size=8), pinyin)
    assert not (tmp_path / "p" / "alphabet.json").exists()  # pyctcdecode cannot decode pinyin
    assert load_decoding(tmp_path / "p") == DecoderConfig(beam_size=8)


def test_a_kenlm_binary_needs_its_word_list(tmp_path):
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\x00" + bytes(64))
    with pytest.raises(ConfigError, match="unigrams.txt"):
        inspect_lm(binary)
    (tmp_path / "unigrams.txt").write_text("one\ntwo\n")
    info = inspect_lm(binary)
    assert info.binary and info.vocabulary == {"one", "two"} and info.order is None


def test_lm_tune_never_overwrites_decoding_files_it_did_not_write(tmp_path):
    from ds2hub.errors import ConfigError
    from ds2hub.lm.tune import SURFACE_FILE, _check_out

    _check_out(tmp_path / "new")  # a new folder
    (tmp_path / "empty").mkdir()
    _check_out(tmp_path / "empty")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "decoding.json").write_text("{}")  # our file name, someone else's file
    with pytest.raises(ConfigError, match="did not write"):
        _check_out(foreign)
    (foreign / SURFACE_FILE).write_text("alpha,beta,wer\n")  # an earlier tune's output
    _check_out(foreign)


def test_lm_tune_warns_only_about_a_best_value_on_the_edge_of_its_grid():
    from ds2hub.lm.tune import edge_warnings

    alphas, betas = (0.5, 1.0, 1.5), (0.0, 1.0, 2.0)
    assert edge_warnings(1.0, 1.0, alphas, betas) == []  # inside both grids: nothing to widen
    assert edge_warnings(1.0, 1.0, (1.0,), (1.0,)) == []  # one value: no grid to widen
    warned = edge_warnings(1.5, 0.0, alphas, betas)
    assert len(warned) == 2 and "best alpha (1.5)" in warned[0] and "--alphas" in warned[0]
    assert "best beta (0)" in warned[1] and "--betas" in warned[1]
    assert edge_warnings(0.5, 1.0, alphas, betas) == [
        "warning: the best alpha (0.5) is on the edge of the grid: the optimum may lie beyond "
        "it; widen --alphas"
    ]


@pytest.mark.parametrize("backend", ["flashlight", "pyctcdecode"])
def test_a_character_lm_is_refused_for_a_model_that_needs_a_word_lm(tmp_path, backend):
    """A character LM "covers" every lexicon word letter by letter: it must not pass silently."""
    from ds2hub.cli.main import main
    from ds2hub.decoding import DecoderConfig, text_decoder
    from ds2hub.errors import ConfigError
    from ds2hub.tokenizers import CharTokenizer

    text = tmp_path / "text.txt"
    text.write_text("one two three\nfour five six seven\neight nine zero\n")
    out = tmp_path / "char_lm"
    assert (
        main(["lm", "build", str(text), "--order", "3", "--unit", "char", "--out", str(out)]) == 0
    )
    config = DecoderConfig(backend=backend, lm=str(out / "lm.arpa"), beam_size=4)
    with pytest.raises(ConfigError, match="is a char LM; this model decodes with a word LM"):
        text_decoder(CharTokenizer(), config)


def _frames_with_a_slip(kind: str, tok) -> tuple[list[dict[str, float]], str]:
    """Frames spelling a text with one token heard wrong, and the text an LM should restore."""
    if kind == "chars":
        frames = spelled(list("two three"))
        frames[2 * "two th".index("h") + 2] = {"e": 0.5, "r": 0.4}
        return frames, "two three"
    if kind == "bigrams":
        frames = spelled(["tw", "o", "_", "th", "re", "e"])
        frames[8] = {"ee": 0.5, "re": 0.4}
        return frames, "two three"
    if kind == "sentencepiece":
        pieces = [tok.vocab[i] for i in tok.encode("two three")]
        frames = spelled(pieces)
        wrong = next(p for p in tok.vocab[1:] if not p.startswith(("▁", "<")) and p not in pieces)
        frames[-2] = {wrong: 0.5, pieces[-1]: 0.4}
        return frames, "two three"
    frames = spelled(["中", "国"]) + [{"是": 0.3, "事": 0.35, "市": 0.35}, {"<blank>": 0.9}]
    return frames, "中国是"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["chars", "bigrams", "sentencepiece", "mandarin"])
def test_every_tokenizer_decodes_with_an_lm_built_by_ds2hub_lm_build(kind, backend, tmp_path):
    """The user's path: `ds2hub lm build` on a text, then decoding with that file."""
    from ds2hub.cli.main import main

    if kind == "mandarin":
        tok = MandarinTokenizer(characters=list("是事市学生中国"))
        text, unit = "中国是\n" * 6 + "是\n事\n市\n学生\n", "char"
    else:
        tok = {"chars": CharTokenizer, "bigrams": BigramTokenizer}.get(kind)
        tok = (
            tok()
            if tok
            else SentencePieceTokenizer(vocab_size=30, model_type="bpe").fit(
                ["two three one tree cat cot"] * 30
            )
        )
        text, unit = "two three\n" * 6 + "one\ntree\ncat\ncot\n", "word"
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "lm"
    args = ["lm", "build", str(tmp_path / "text.txt"), "--order", "2", "--unit", unit]
    assert main([*args, "--out", str(out)]) == 0
    frames, expected = _frames_with_a_slip(kind, tok)
    logits = emissions(tok.vocab, frames)
    assert run(text_decoder(tok), logits) != expected  # greedy keeps the slip
    config = DecoderConfig(backend=backend, lm=str(out / "lm.arpa"), beam_size=16)
    assert run(text_decoder(tok, config), logits) == expected


@pytest.mark.parametrize("name", ["random", "tied_one", "tied_two", "tied_repeat"])
def test_forced_alignment_paths_are_torchaudios(name):
    """The paths torchaudio's `forced_align` gave (tests/data/make_torchaudio_reference.py),
    ties included: word timestamps of existing models do not move."""
    import numpy as np

    from ds2hub.decoding.alignment import forced_align

    reference = np.load(Path(__file__).parent / "data" / "torchaudio_reference.npz")
    scores = torch.from_numpy(reference[f"align_{name}_scores"])
    expected = reference[f"align_{name}_path"]
    targets = [int(t) for t, _ in itertools.groupby(expected) if t != 0]  # (blanks split repeats)
    assert forced_align(scores, targets, blank=0).tolist() == expected.tolist()
