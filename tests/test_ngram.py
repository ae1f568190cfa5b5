"""N-gram LMs (`ds2hub.lm.ngram`, `ds2hub lm build`): modified Kneser-Ney probabilities worked
out by hand, the backoff invariants of the ARPA file, KenLM (through flashlight) reading the file
with the same scores, checked reading of corrupt files, and the console command."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ds2hub.cli.main import main
from ds2hub.decoding.lm import ArpaError
from ds2hub.errors import ConfigError
from ds2hub.lm.ngram import (
    BOS,
    EOS,
    FALLBACK_DISCOUNTS,
    UNK,
    TextUnits,
    build_ngram,
    discounts_from,
    heldout_split,
    lines_without,
    read_arpa,
)

DS2HUB = Path(sys.executable).parent / "ds2hub"  # the console script `pip install` made

# Padded: <s> the cat sat </s> | <s> the dog sat </s> | <s> a cat ran </s>
TINY = ["the cat sat", "the dog sat", "a cat ran"]


def log10(p: float) -> float:
    return math.log10(p)


def synthetic_corpus(sentences: int = 400, seed: int = 0) -> list[str]:
    """Zipf-like random sentences over 300 words: enough repeats for estimated discounts."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    weights = [1 / (i + 1) for i in range(300)]
    return [" ".join(rng.choices(words, weights, k=rng.randint(1, 8))) for _ in range(sentences)]


# --- probabilities worked out by hand --------------------------------------------------------------
def test_bigram_probabilities_by_hand():
    """Order 2 on TINY. Its count-of-counts lack t3 and t4, so both orders use lmplz's fallback
    discounts D1 = 0.5, D2 = 1, D3+ = 1.5.

    Unigram continuation counts (distinct left neighbours among the bigram types):
      the 1 (<s>), cat 2 (the, a), sat 2 (cat, dog), </s> 2 (sat, ran), dog 1, a 1, ran 1,
      <unk> 0; total 10; N1 = 4, N2 = 3 -> gamma() = (0.5*4 + 1*3) / 10 = 0.5.
      Uniform over the 8 predictable words (7 + <unk>; not <s>): 1/8.
      p(the) = (1 - 0.5)/10 + 0.5/8 = 0.1125;  p(cat) = (2 - 1)/10 + 0.5/8 = 0.1625
      p(<unk>) = 0.5/8 = 0.0625
    Bigrams (raw counts):
      <s>: the 2, a 1 -> total 3, gamma = (0.5 + 1)/3 = 0.5
        p(the | <s>) = (2 - 1)/3 + 0.5 * 0.1125 = 0.3895833
        p(a | <s>)   = (1 - 0.5)/3 + 0.5 * 0.1125 = 0.2229167
      the: cat 1, dog 1 -> gamma = (0.5*2)/2 = 0.5; p(cat | the) = 0.5/2 + 0.5 * 0.1625 = 0.33125
      sat: </s> 2 -> gamma = 1/2; p(</s> | sat) = (2 - 1)/2 + 0.5 * 0.1625 = 0.58125
      cat: sat 1, ran 1 -> gamma = 0.5; unseen p(dog | cat) = 0.5 * p(dog) = 0.5 * 0.1125
    """
    model = build_ngram(TINY, order=2)
    assert model.discounts == [FALLBACK_DISCOUNTS, FALLBACK_DISCOUNTS]
    assert model.counts == [9, 10]  # 7 words + <s> <unk>... : <s> </s> <unk> the cat sat dog a ran
    expected = {
        ("the", ()): 0.1125,
        ("cat", ()): 0.1625,
        (UNK, ()): 0.0625,
        ("never-seen", ()): 0.0625,  # an unknown word is <unk>
        ("the", (BOS,)): 0.3895833,
        ("a", (BOS,)): 0.2229167,
        ("cat", ("the",)): 0.33125,
        (EOS, ("sat",)): 0.58125,
        ("dog", ("cat",)): 0.5 * 0.1125,
    }
    for (word, history), p in expected.items():
        assert model.logprob(word, history) == pytest.approx(log10(p), abs=1e-6), (word, history)
    assert model.grams[0][(BOS,)][0] == -99.0  # never predicted
    assert model.grams[0][("cat",)][1] == pytest.approx(log10(0.5))  # backoff weight = gamma


def test_trigram_probabilities_by_hand_with_a_discount_per_order():
    """Order 3 on TINY with given discounts: 1-grams (0.5, 1, 1.5), 2-grams (0.4, 0.9, 1.4),
    3-grams (0.7, 1.2, 1.7), so a mix-up of orders shows.

    Unigrams: as in the bigram test (continuation counts unchanged): p(sat) = 0.1625,
      p(ran) = p(dog) = 0.1125, p(</s>) = 0.1625.
    Bigram counts are now continuation counts over the trigram types, except after <s> (raw):
      cat: sat 1 (left: the), ran 1 (left: a) -> total 2, gamma = 0.4*2/2 = 0.4
        p(sat | cat) = (1 - 0.4)/2 + 0.4 * 0.1625 = 0.365;  p(ran | cat) = 0.3 + 0.4*0.1125 = 0.345
        p(dog | cat) unseen = 0.4 * 0.1125 = 0.045
      sat: </s> 2 (left: cat, dog) -> gamma = 0.9/2 = 0.45
        p(</s> | sat) = (2 - 0.9)/2 + 0.45 * 0.1625 = 0.623125
      <s>: the 2, a 1 (raw) -> gamma = (0.4 + 0.9)/3
        p(the | <s>) = (2 - 0.9)/3 + (1.3/3) * 0.1125 = 0.4154167
    Trigrams (raw counts), every one seen once:
      the cat: sat 1 -> gamma = 0.7; p(sat | the cat) = (1 - 0.7)/1 + 0.7 * 0.365 = 0.5555
        p(ran | the cat) unseen = 0.7 * 0.345 = 0.2415
      cat sat: </s> 1 -> p(</s> | cat sat) = 0.3 + 0.7 * 0.623125 = 0.7361875
      a cat: ran 1 -> p(dog | a cat) = 0.7 * p(dog | cat) = 0.7 * 0.045 = 0.0315
    """
    discounts = [(0.5, 1.0, 1.5), (0.4, 0.9, 1.4), (0.7, 1.2, 1.7)]
    model = build_ngram(TINY, order=3, discounts=discounts)
    expected = {
        ("sat", ("cat",)): 0.365,
        ("dog", ("cat",)): 0.045,
        (EOS, ("sat",)): 0.623125,
        ("the", (BOS,)): 0.4154167,
        ("sat", ("the", "cat")): 0.5555,
        ("ran", ("the", "cat")): 0.2415,
        (EOS, ("cat", "sat")): 0.7361875,
        ("dog", ("a", "cat")): 0.0315,
        ("dog", ("never", "cat")): 0.045,  # history <unk> cat is unknown: back off to cat
    }
    for (word, history), p in expected.items():
        assert model.logprob(word, history) == pytest.approx(log10(p), abs=1e-6), (word, history)
    # the score of a sentence chains them: p(the|<s>) p(cat|<s> the) p(sat|the cat) p(</s>|cat sat)
    chain = [model.logprob(w, h) for w, h in [("the", [BOS]), ("cat", [BOS, "the"])]]
    assert model.score(["the", "cat", "sat"]) == pytest.approx(
        sum(chain) + log10(0.5555) + log10(0.7361875), abs=1e-6
    )


def test_discounts_from_count_of_counts_by_hand():
    """t1..t4 = 10, 5, 3, 2: Y = 10/(10 + 2*5) = 0.5, D1 = 1 - 2*0.5*5/10 = 0.5,
    D2 = 2 - 3*0.5*3/5 = 1.1, D3+ = 3 - 4*0.5*2/3 = 1.6667; counts above 4 do not matter."""
    counts = [1] * 10 + [2] * 5 + [3] * 3 + [4] * 2 + [9, 17]
    assert discounts_from(counts, 1) == pytest.approx((0.5, 1.1, 3 - 4 / 3))
    assert discounts_from([1, 1, 2, 3], 1) == FALLBACK_DISCOUNTS  # no t4: fallback


def test_unigram_model_estimates_its_discounts_by_hand():
    """Order 1 uses raw counts. One sentence: ten words once, five twice, three thrice, two four
    times, plus </s> once: t1..t4 = 11, 5, 3, 2, 38 tokens, 22 predictable words (20 + </s> +
    <unk>). Y = 11/21; D1 = 1 - 2Y*5/11 = 11/21, D2 = 2 - 3Y*3/5, D3+ = 3 - 4Y*2/3;
    gamma = (11 D1 + 5 D2 + 5 D3+)/38; p(a0) = (1 - D1)/38 + gamma/22; p(d0) = (4 - D3+)/38 + ..."""
    words = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(5)] * 2
    words += [f"c{i}" for i in range(3)] * 3 + [f"d{i}" for i in range(2)] * 4
    model = build_ngram([" ".join(words)], order=1)
    y = 11 / 21
    d1, d2, d3 = 1 - 2 * y * 5 / 11, 2 - 3 * y * 3 / 5, 3 - 4 * y * 2 / 3
    assert model.discounts == [pytest.approx((d1, d2, d3))]
    gamma = (11 * d1 + 5 * d2 + 5 * d3) / 38
    assert model.logprob("a0") == pytest.approx(log10((1 - d1) / 38 + gamma / 22), abs=1e-9)
    assert model.logprob("b0") == pytest.approx(log10((2 - d2) / 38 + gamma / 22), abs=1e-9)
    assert model.logprob("d1") == pytest.approx(log10((4 - d3) / 38 + gamma / 22), abs=1e-9)
    assert model.logprob(UNK) == pytest.approx(log10(gamma / 22), abs=1e-9)


# --- invariants of the backoff model ------------------------------------------------------------
@pytest.mark.parametrize("order", [2, 3])
def test_every_history_sums_to_one_in_the_arpa_file(order, tmp_path):
    """For every history the file holds (and the empty one), sum_w p(w | h) through the backoff
    weights is 1: the file is a proper backoff model, with discounts estimated (no fallback)."""
    model = build_ngram(synthetic_corpus(), order)
    assert FALLBACK_DISCOUNTS not in model.discounts
    model.write_arpa(tmp_path / "lm.arpa")
    read = read_arpa(tmp_path / "lm.arpa")  # what decoders see: 7 significant digits
    histories = [()] + [g for grams in read.grams[:-1] for g in grams if g[-1] != EOS]
    assert len(histories) > 100
    for history in histories:
        assert read.history_mass(history) == pytest.approx(1.0, abs=1e-4), history


def test_arpa_round_trip(tmp_path):
    model = build_ngram(synthetic_corpus(), 3)
    model.write_arpa(tmp_path / "lm.arpa")
    read = read_arpa(tmp_path / "lm.arpa")
    assert read.counts == model.counts and read.order == 3
    assert read.vocabulary == model.vocabulary
    for ours, theirs in zip(model.grams, read.grams):
        assert ours.keys() == theirs.keys()
        for g, (p, b) in ours.items():
            q, c = theirs[g]
            assert q == pytest.approx(p, abs=1e-5) and (b is None) == (c is None)
            assert b is None or c == pytest.approx(b, abs=1e-5)


def test_kenlm_in_flashlight_scores_the_file_as_the_model_does(tmp_path):
    """An independent reader: KenLM (bundled in flashlight-text, what torchaudio's decoder loads)
    gives every token the log10 probability our model gives, unknown words included."""
    kenlm = pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    from flashlight.lib.text.dictionary import Dictionary

    model = build_ngram(synthetic_corpus(), 3)
    model.write_arpa(tmp_path / "lm.arpa")
    sentences = [*synthetic_corpus(20, seed=1), "w1 oov-word w2 w3", "w299 w298 w0"]
    words = Dictionary()  # the decoder's words: those of the LM and any other
    for word in dict.fromkeys([UNK, BOS, EOS, *model.vocabulary, *" ".join(sentences).split()]):
        words.add_entry(word)
    lm = kenlm.KenLM(str(tmp_path / "lm.arpa"), words)
    for sentence in sentences:
        state, history = lm.start(False), [BOS]
        for word in sentence.split():
            state, score = lm.score(state, words.get_index(word))
            assert score == pytest.approx(model.logprob(word, history), abs=1e-4), sentence
            history.append(word)
        _, score = lm.finish(state)
        assert score == pytest.approx(model.logprob(EOS, history), abs=1e-4)


def test_perplexity_counts_tokens_and_sentence_ends():
    model = build_ngram(TINY, 2)
    ppl = model.perplexity([["the", "cat", "sat"], ["a", "zebra"]])
    assert (ppl.sentences, ppl.tokens, ppl.oov) == (2, 5, 1)
    total = model.score(["the", "cat", "sat"]) + model.score(["a", "zebra"])
    assert ppl.log10_prob == pytest.approx(total)
    assert ppl.perplexity == pytest.approx(10 ** (-total / 7))  # 5 tokens + 2 </s>
    known = total - model.logprob("zebra", [BOS, "a"])
    assert ppl.perplexity_known == pytest.approx(10 ** (-known / 6))


# --- characters, segmentation, held-out helpers -----------------------------------------------
def test_character_units_on_chinese_text(tmp_path):
    from ds2hub.tokenizers.normalizers import normalize_mandarin

    units = TextUnits("char", normalize=normalize_mandarin)
    assert units.split("我 爱 北京。") == ["我", "爱", "北", "京"]
    spaced = TextUnits("char", keep_spaces=True)
    assert spaced.split(" 我  爱 北京 ") == ["我", "|", "爱", "|", "北", "京"]
    lines = ["我爱北京", "北京欢迎你", "我爱你", "你好北京", "天安门在北京"]
    model = build_ngram(lines, 3, units)
    assert set(model.vocabulary) == set("我爱北京欢迎你好天安门在")
    assert model.logprob("京", ["北"]) > model.logprob("爱", ["北"])  # 北京 is seen, 北爱 is not
    model.write_arpa(tmp_path / "zh.arpa")
    read = read_arpa(tmp_path / "zh.arpa")
    for history in [(), (BOS,), ("北",), ("北", "京")]:
        assert read.history_mass(history) == pytest.approx(1.0, abs=1e-4)


def test_jieba_segments_chinese_words():
    units = TextUnits("word", segment="jieba")
    assert units.split("我爱北京天安门") == ["我", "爱", "北京", "天安门"]


def test_units_refuse_inconsistent_settings():
    with pytest.raises(ConfigError, match="unit"):
        TextUnits("syllable")
    with pytest.raises(ConfigError, match="word"):
        TextUnits("char", segment="jieba")
    with pytest.raises(ConfigError, match="char"):
        TextUnits("word", keep_spaces=True)


def test_build_refuses_bad_input():
    with pytest.raises(ConfigError, match="order"):
        build_ngram(TINY, 0)
    with pytest.raises(ConfigError, match="no tokens"):
        build_ngram(["", "   "], 2)
    with pytest.raises(ConfigError, match="<s>"):
        build_ngram(["a b", "<s> a b </s>"], 2)
    with pytest.raises(ConfigError, match="no 4-grams"):  # "a" padded is 3 tokens
        build_ngram(["a"], 4)


def test_heldout_split_is_seeded_and_disjoint():
    lines = [f"sentence {i}" for i in range(50)] + ["sentence 7", ""]  # a repeat, a blank line
    train, heldout = heldout_split(lines, n=10, seed=0)
    assert heldout == heldout_split(lines, n=10, seed=0)[1] != heldout_split(lines, 10, seed=1)[1]
    assert len(heldout) == 10 and not set(train) & set(heldout)
    assert len(train) + len(heldout) + lines.count("sentence 7") - 1 >= 50
    assert heldout == sorted(heldout, key=lines.index)  # file order
    with pytest.raises(ConfigError):
        heldout_split(lines, n=60)


def test_lines_without_held_out_words():
    lines = ["市场", "市场经济", "城市", "市", "经济"]
    assert lines_without(lines, ["市场", "市"]) == ["城市", "经济"]


# --- corrupt files ---------------------------------------------------------------------------------
GOOD = """\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-99\t<s>\t-0.3
-0.5\ta\t-0.2
-0.4\t</s>
-1.0\t<unk>

\\2-grams:
-0.1\t<s> a
-0.2\ta </s>

\\end\\
"""


@pytest.mark.parametrize(
    "change, message",
    [
        (("ngram 2=2", "ngram 2=3"), "declares 3 2-grams"),
        (("\\end\\\n", ""), "truncated"),
        (("-0.5\ta", "0.5\ta"), "<= 0"),
        (("-0.5\ta", "x\ta"), "not a number"),
        (("-0.1\t<s> a", "-0.1\t<s> b"), "not among the unigrams"),
        (("-0.2\ta </s>", "-0.2\tb </s>"), "history"),
        (("\\2-grams:", "\\3-grams:"), "2-grams: section"),
        (("\\data\\", "data"), "no \\\\data\\\\ header"),
        (("-0.4\t</s>", "-0.4\t</s> extra words"), "expected a log10 probability"),
        (("-1.0\t<unk>", "-1.0\ta"), "duplicate"),
        (("-0.4\t</s>\n", "-0.4\t<eos>\n", "a </s>", "a <eos>"), "lack </s>"),
    ],
)
def test_corrupt_arpa_files_are_refused(tmp_path, change, message):
    path = tmp_path / "lm.arpa"
    text = GOOD
    for old, new in zip(change[::2], change[1::2]):
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArpaError, match=message) as error:
        read_arpa(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (("ngram 2=2", "ngram 2=3"), "declares 3 2-grams"),
        (("ngram 1=4", "ngram 1=5"), "declares 5 unigrams"),
        (("\\end\\\n", ""), "truncated"),
        (("-0.5\ta", "0.5\ta"), "<= 0"),
        (("\\2-grams:", "\\3-grams:"), "2-grams: section"),
        (("\\data\\", "data"), "no \\\\data\\\\ header"),
        (("-1.0\t<unk>", "-1.0\ta"), "duplicate"),
    ],
)
def test_decoders_check_lm_files_with_the_same_arpa_reader(tmp_path, change, message):
    """`inspect_lm` (what a decoder checks before it loads an LM) reads ARPA files with the reader
    behind `read_arpa`, so a file is refused alike by both, with the same message."""
    from ds2hub.decoding.lm import inspect_lm

    path = tmp_path / "lm.arpa"
    text = GOOD
    for old, new in zip(change[::2], change[1::2]):
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArpaError, match=message) as by_decoder:
        inspect_lm(path)
    with pytest.raises(ArpaError) as by_lm:
        read_arpa(path)
    assert str(by_decoder.value) == str(by_lm.value)


def test_the_good_file_reads_and_binary_files_are_refused(tmp_path):
    path = tmp_path / "lm.arpa"
    path.write_text(GOOD, encoding="utf-8")
    model = read_arpa(path)
    assert model.logprob("a", [BOS]) == pytest.approx(-0.1)
    assert model.logprob("b", ["a"]) == pytest.approx(-0.2 - 1.0)  # backoff(a) + p(<unk>)
    path.write_bytes(b"mmap lm http://kheafield.com/code format version 5\x00\xff\xfe")
    with pytest.raises(ArpaError, match="UTF-8|header"):
        read_arpa(path)
    assert issubclass(ArpaError, ConfigError)


# --- the console command -----------------------------------------------------------------------
def run_ds2hub(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed console script in a subprocess, as a shell runs it."""
    return subprocess.run(
        [str(DS2HUB), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_lm_build_console_script_writes_the_folder_and_refuses_a_missing_file(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(synthetic_corpus()) + "\n", encoding="utf-8")
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("\n".join(synthetic_corpus(20, seed=3)) + "\n", encoding="utf-8")
    out = tmp_path / "lm"
    result = run_ds2hub(
        "lm", "build", str(text), "--order", "3", "--unit", "word", "--out", str(out),
        "--heldout", str(heldout), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = read_arpa(out / "lm.arpa")
    assert model.order == 3
    assert (out / "unigrams.txt").read_text().split() == model.vocabulary
    assert f"3-grams {model.counts[2]:,}" in result.stdout
    assert "held-out: 20 sentences" in result.stdout and "perplexity" in result.stdout

    missing = run_ds2hub("lm", "build", "nope.txt", "--order", "2", "--out", "o", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "ds2hub: error: text file 'nope.txt' does not exist or is not a file"
    ]
    assert not (tmp_path / "o").exists()


def ds2hub_main(capsys, *args: str) -> tuple[int, str, str]:
    """The console's entry point in-process (the script's exit status, stdout, stderr)."""
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_lm_build_replaces_only_its_own_files(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(synthetic_corpus(50)) + "\n", encoding="utf-8")
    out = tmp_path / "lm"
    (out).mkdir()
    (out / "attrs.json").write_text("{}")  # e.g. decoder settings beside the LM: kept
    assert ds2hub_main(capsys, "lm", "build", str(text), "--order", "3", "--out", str(out))[0] == 0
    status, _, err = ds2hub_main(
        capsys, "lm", "build", str(text), "--order", "2", "--out", str(out)
    )
    assert status == 2 and "--overwrite" in err
    assert read_arpa(out / "lm.arpa").order == 3  # untouched
    status, _, err = ds2hub_main(
        capsys, "lm", "build", str(text), "--order", "2", "--out", str(out), "--overwrite"
    )
    assert status == 0, err
    assert read_arpa(out / "lm.arpa").order == 2
    assert (out / "attrs.json").read_text() == "{}"


def test_lm_build_chinese_characters(tmp_path, capsys):
    text = tmp_path / "zh.txt"
    text.write_text("我爱北京\n北京欢迎你。\n你好\n", encoding="utf-8")
    status, out, err = ds2hub_main(
        capsys, "lm", "build", str(text), "--order", "2", "--unit", "char",
        "--normalize", "mandarin", "--out", str(tmp_path / "lm"),
    )  # fmt: skip
    assert status == 0, err
    assert set((tmp_path / "lm" / "unigrams.txt").read_text().split()) == set("我爱北京欢迎你好")
    assert "vocabulary: 8 chars" in out


def test_lm_build_refuses_bad_input_with_one_line(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("a b c\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    o = str(tmp_path / "o")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "lm.arpa").write_text("someone else's model")
    cases = {
        "does not exist": [str(tmp_path / "missing.txt"), "--order", "2", "--out", o],
        "no tokens": [str(empty), "--order", "2", "--out", o],
        "at least 1": [str(text), "--order", "0", "--out", o],
        "did not write": [str(text), "--order", "2", "--out", str(foreign), "--overwrite"],
        "is a file": [str(text), "--order", "2", "--out", str(text)],
        "cannot write": [str(text), "--order", "2", "--out", str(text / "lm")],
        "not both": [str(text), "--order", "2", "--out", o, "--normalize", "english",
                     "--tokenizer", str(tmp_path)],
    }  # fmt: skip
    for message, args in cases.items():
        status, _, err = ds2hub_main(capsys, "lm", "build", *args)
        assert status == 2, (message, err)
        lines = err.strip().splitlines()
        assert lines[-1].startswith("ds2hub: error:") and message in lines[-1], lines
    assert (foreign / "lm.arpa").read_text() == "someone else's model"
    assert not (tmp_path / "o").exists()
    for args, message in [(["frobnicate"], "unknown subcommand"), ([], "needs a subcommand")]:
        status, _, err = ds2hub_main(capsys, "lm", *args)
        assert status == 2 and message in err and "build" in err


def test_lm_build_normalises_with_a_saved_tokenizer(tmp_path, capsys):
    """`--tokenizer DIR`: the LM's words are what the model's tokenizer writes."""
    from ds2hub.tokenizers import CharTokenizer

    CharTokenizer().save(tmp_path / "model")
    text = tmp_path / "text.txt"
    text.write_text("Hello, World!\nHELLO there.\n", encoding="utf-8")
    status, _, err = ds2hub_main(
        capsys, "lm", "build", str(text), "--order", "2", "--out", str(tmp_path / "lm"),
        "--tokenizer", str(tmp_path / "model"),
    )  # fmt: skip
    assert status == 0, err
    assert (tmp_path / "lm" / "unigrams.txt").read_text().split() == ["hello", "world", "there"]


def test_repeated_lines_equal_counted_lines(tmp_path, capsys):
    """`repeats` (and `--word-list`'s counts) count a line k times: the same model as k copies."""
    copies = build_ngram(["a b"] * 3 + ["b"] * 5 + ["a c b"] * 2, 3, discounts=[(0.5, 1, 1.5)] * 3)
    counted = build_ngram(
        ["a b", "b", "a c b"], 3, repeats=[3, 5, 2], discounts=[(0.5, 1, 1.5)] * 3
    )
    assert counted.grams == copies.grams
    words = tmp_path / "dict.txt"
    words.write_text("北京 30 ns\n北方 5 f\n京剧 2\n", encoding="utf-8")
    status, _, err = ds2hub_main(
        capsys, "lm", "build", str(words), "--word-list", "--unit", "char", "--order", "2",
        "--out", str(tmp_path / "lm"),
    )  # fmt: skip
    assert status == 0, err
    model = read_arpa(tmp_path / "lm" / "lm.arpa")
    lines = ["北京"] * 30 + ["北方"] * 5 + ["京剧"] * 2
    expected = build_ngram(lines, 2, "char")
    assert model.logprob("京", [BOS, "北"]) == pytest.approx(expected.logprob("京", [BOS, "北"]))
    words.write_text("北京 many\n", encoding="utf-8")
    status, _, err = ds2hub_main(
        capsys,
        "lm",
        "build",
        str(words),
        "--word-list",
        "--order",
        "2",
        "--out",
        str(tmp_path / "o"),
    )
    assert status == 2 and "not a positive integer" in err
    assert not (tmp_path / "o").exists()


def test_jieba_segmentation_without_the_mandarin_extra_names_the_extra(
    monkeypatch, tmp_path, capsys
):
    """`ds2hub lm build --segment jieba` on an install without `ds2hub[mandarin]`: one line that
    names the extra, status 2, no traceback."""
    monkeypatch.setitem(sys.modules, "jieba", None)  # as if not installed
    text = tmp_path / "zh.txt"
    text.write_text("我们是学生\n", encoding="utf-8")
    argv = ["lm", "build", str(text), "--order", "2", "--unit", "word", "--segment", "jieba"]
    assert main([*argv, "--out", str(tmp_path / "lm")]) == 2
    err = capsys.readouterr().err
    assert "ds2hub[mandarin]" in err and "Traceback" not in err
