"""Plugins through their entry points, as installed distributions are seen: fake distributions
(`*.dist-info` with `entry_points.txt`) on `sys.path`. Bad input: a plugin that fails to import, a
name registered twice and a recipe that does not parse are reported by name while the others load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ds2hub.cli.main import main
from ds2hub.cli.recipes import find_recipes, resolve_recipe_names
from ds2hub.errors import ConfigError
from ds2hub.plugins import NORMALIZERS, TOKENIZERS, load_group
from ds2hub.tokenizers import CharTokenizer, available_tokenizers, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
GOOD_RECIPE = (
    "# Shouted digits: a fake plugin's recipe.\n"
    + (REPO / "recipes" / "digits.yaml").read_text().split("\n", 1)[1]
)


def fake_distribution(
    site: Path, dist: str, entry_points: dict[str, dict[str, str]], files: dict[str, str]
) -> None:
    """Writes an installed distribution `dist` into `site`: its modules (`files`, paths relative
    to `site`) and a `.dist-info` whose `entry_points.txt` registers `entry_points`."""
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(textwrap.dedent(text), encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Four plugins: one good (a recipe with its own data folder, a normaliser, a tokenizer), one
    that fails to import, one with a recipe that does not parse, one that reuses names."""
    site = tmp_path_factory.mktemp("site")
    fake_distribution(
        site,
        "ds2hub-shout",
        {
            "ds2hub.recipes": {"shout": "ds2hub_shout"},
            "ds2hub.normalizers": {"shout": "ds2hub_shout:normalize_shout"},
            "ds2hub.tokenizers": {"shout": "ds2hub_shout:ShoutTokenizer"},
        },
        {
            "ds2hub_shout/__init__.py": """
                from ds2hub.tokenizers import CharTokenizer

                def normalize_shout(text: str) -> str:
                    return text.upper().replace("!", "")

                class ShoutTokenizer(CharTokenizer):
                    kind = "shout"
                """,
            "ds2hub_shout/recipes/shout_digits.yaml": GOOD_RECIPE.replace(
                "path: recipes/digits", "path: corpus"
            ),
            "ds2hub_shout/recipes/notes.txt": "not a recipe",
            "ds2hub_shout/recipes/bad_class.yaml": GOOD_RECIPE.replace(
                "ds2hub.tokenizers.CharTokenizer", "ds2hub_shout.NoSuchTokenizer"
            ),
            "ds2hub_shout/corpus/train/metadata.csv": "file_name,text\n",
        },
    )
    fake_distribution(
        site,
        "ds2hub-broken",
        {
            "ds2hub.recipes": {"broken": "ds2hub_broken"},
            "ds2hub.tokenizers": {"brokentok": "ds2hub_broken:Tokenizer"},
        },
        {"ds2hub_broken/__init__.py": "import a_module_nobody_installed\n"},
    )
    fake_distribution(
        site,
        "ds2hub-typo",
        {"ds2hub.recipes": {"typo": "ds2hub_typo"}},
        {
            "ds2hub_typo/__init__.py": "",
            "ds2hub_typo/recipes/unclosed.yaml": "# Broken.\ntrainer: {max_epochs: [1\n",
            "ds2hub_typo/recipes/a_list.yaml": "# Not a mapping.\n- 1\n- 2\n",
            "ds2hub_typo/recipes/fine.yaml": GOOD_RECIPE,
        },
    )
    fake_distribution(
        site,
        "ds2hub-copycat",
        {
            "ds2hub.recipes": {"copycat": "ds2hub_copycat"},
            "ds2hub.tokenizers": {"chars": "ds2hub_copycat:Chars"},
            "ds2hub.normalizers": {"english": "ds2hub_copycat:english"},
        },
        {
            "ds2hub_copycat/__init__.py": """
                from ds2hub.tokenizers import CharTokenizer

                class Chars(CharTokenizer):
                    pass

                def english(text: str) -> str:
                    return text
                """,
            "ds2hub_copycat/recipes/digits.yaml": GOOD_RECIPE,
        },
    )
    return site


@pytest.fixture
def installed(site, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(site))
    return site


def run_ds2hub(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The console script with the fake plugins installed (on PYTHONPATH)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "ds2hub", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_recipes_command_lists_plugins_and_reports_each_bad_one_by_name(site):
    result = run_ds2hub(site, "recipes", "--strict")
    out, err = result.stdout, result.stderr
    listed = {line.split()[0]: line for line in out.splitlines()[1:]}
    # The good plugin's recipe with its package and description; the parsable one of the typo plugin.
    assert "ds2hub_shout" in listed["shout_digits"] and "Shouted digits" in listed["shout_digits"]
    assert "fine" in listed and "librispeech" in listed and "notes" not in out
    # A name shipped twice: both qualified, neither bare; the clash is reported.
    assert {"ds2hub:digits", "ds2hub_copycat:digits"} <= set(listed) and "digits" not in listed
    warnings = [line for line in err.splitlines() if line.startswith("ds2hub: warning: ")]
    assert any(
        "'broken'" in w and "ds2hub-broken" in w and "a_module_nobody_installed" in w
        for w in warnings
    )
    assert any("ds2hub_typo:unclosed" in w and "does not parse" in w for w in warnings)
    assert any("ds2hub_typo:a_list" in w and "not a YAML mapping" in w for w in warnings)
    assert any("ds2hub:digits and ds2hub_copycat:digits" in w for w in warnings)
    # The other groups too: a tokenizer that does not load, a kind and a normaliser taken twice.
    assert any("brokentok" in w and "ds2hub-broken" in w for w in warnings)
    assert any("'chars'" in w and "ds2hub-copycat" in w for w in warnings)
    assert any("'english'" in w and "ds2hub-copycat" in w for w in warnings)
    assert len(warnings) == 7, err
    # --strict: the same listing, then status 2 with one error line.
    assert result.returncode == 2
    assert err.splitlines()[-1] == "ds2hub: error: 7 plugin problem(s), listed above"


def test_without_strict_problems_are_warnings_and_the_status_is_0(installed, capsys):
    assert main(["recipes"]) == 0
    captured = capsys.readouterr()
    assert "shout_digits" in captured.out and "ds2hub-broken" in captured.err


def test_without_plugins_the_recipes_command_has_no_warnings(capsys):
    assert main(["recipes"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err, captured.err
    assert captured.out.split()[:3] == ["name", "package", "description"]
    assert {line.split()[0] for line in captured.out.splitlines()[1:]} >= {"digits", "aishell"}


def test_a_clashing_name_must_be_qualified_and_unknown_names_are_one_line_errors(
    installed, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", "digits"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ds2hub: error: recipe name 'digits' is ambiguous: use ds2hub:digits or ds2hub_copycat:digits"
    )
    assert main(["validate", "--config", "digitz"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ds2hub: error: no config file or recipe named 'digitz' (`ds2hub recipes` lists the recipes)"
    )


def test_a_named_recipe_resolves_to_its_file_and_its_shipped_data(installed, tmp_path, monkeypatch):
    catalog = find_recipes()
    shout = catalog.find("shout_digits")
    assert shout.path == installed / "ds2hub_shout" / "recipes" / "shout_digits.yaml"
    args = resolve_recipe_names(["fit", "--config", "shout_digits", "--trainer.max_epochs", "1"])
    assert args == [
        "fit", "--config", str(shout.path), "--data.path", str(installed / "ds2hub_shout" / "corpus"),
        "--trainer.max_epochs", "1",
    ]  # fmt: skip
    assert resolve_recipe_names(["test", "--config=ds2hub:digits"]) == [
        "test", f"--config={REPO / 'recipes' / 'digits.yaml'}", "--data.path", str(REPO / "recipes" / "digits"),
    ]  # fmt: skip
    # A file of that name wins over a recipe; paths and inline YAML are left alone.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fine").write_text("trainer: {}\n")
    for argv in (
        ["fit", "--config", "fine"],
        ["fit", "-c", "my/run.yaml"],
        ["fit", "--config", "{a: 1}"],
    ):
        assert resolve_recipe_names(argv) == argv
    with pytest.raises(ConfigError, match="ambiguous: use ds2hub:digits or ds2hub_copycat:digits"):
        resolve_recipe_names(["fit", "--config", "digits"])


def test_a_named_recipe_finds_its_shipped_extra_corpora_from_any_folder(tmp_path, monkeypatch):
    """fsdd_digits trains on the shipped synthetic voices too (`extra_train: recipes/digits`,
    `recipes/tts_digits`), paths relative to the package: outside the checkout they must still
    point there."""
    monkeypatch.chdir(tmp_path)
    args = resolve_recipe_names(["fit", "--config", "fsdd_digits", "--data.path", "fsdd"])
    extra = json.loads(args[args.index("--data.extra_train") + 1])
    shipped = [str(REPO / "recipes" / "digits"), str(REPO / "recipes" / "tts_digits")]
    assert [e["path"] for e in extra] == shipped
    assert extra[0]["split"] == "train[:400]" and extra[0]["text_column"] == "text"
    assert args[-2:] == ["--data.path", "fsdd"]  # the user's options still come last and win
    # A recipe without extra corpora gets no such option.
    assert "--data.extra_train" not in resolve_recipe_names(["fit", "--config", "digits"])


def test_tokenizer_and_normaliser_groups_keep_loading_past_a_broken_or_duplicate_plugin(installed):
    kinds = available_tokenizers()
    assert kinds["chars"] is CharTokenizer  # ds2hub's own kind is not taken over
    assert kinds["shout"].__module__ == "ds2hub_shout"
    assert "brokentok" not in kinds
    _, problems = load_group(TOKENIZERS)
    named = {p.name: str(p) for p in problems}
    assert "cannot be loaded" in named["brokentok"] and "ds2hub-broken" in named["brokentok"]
    assert "already registered by ds2hub" in named["chars"] and "ds2hub-copycat" in named["chars"]
    normalizers, problems = load_group(NORMALIZERS)
    assert [p.name for p in problems] == ["english"] and normalizers["shout"]("a!") == "A"


def test_a_registered_normaliser_is_used_by_name_and_saved_with_the_tokenizer(installed, tmp_path):
    tok = CharTokenizer(alphabet=[" ", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ"], normalizer="shout")
    assert tok.normalize("one two!") == "ONE TWO"
    assert tok.decode(tok.encode("nine!")) == "NINE"
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.normalizer == "shout" and loaded.normalize("six!") == "SIX"
    with pytest.raises(ConfigError, match="no text normaliser named 'nope'.*'shout'"):
        CharTokenizer(normalizer="nope")


def test_lm_build_normalises_with_a_plugins_normaliser_by_name(installed, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("one two!\nthree one!\n")
    out = tmp_path / "lm"
    args = ["lm", "build", str(text), "--order", "2", "--unit", "word", "--out", str(out)]
    assert main([*args, "--normalize", "shout"]) == 0
    assert sorted((out / "unigrams.txt").read_text().split()) == ["ONE", "THREE", "TWO"]
    assert main([*args, "--normalize", "whisper", "--overwrite"]) == 2
    assert "no text normaliser named 'whisper'" in capsys.readouterr().err


def test_the_smoke_harness_runs_plugin_recipes_and_names_the_broken_one(site):
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "recipe_runs and (shout or bad_class)",
         str(REPO / "tests" / "test_recipes.py")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:]
    summary = result.stdout.splitlines()
    assert "FAILED tests/test_recipes.py::test_recipe_runs[bad_class]" in result.stdout
    assert "AssertionError: recipe ds2hub_shout:bad_class" in result.stdout
    assert "'ds2hub_shout.NoSuchTokenizer'" in result.stdout  # and why
    assert summary[-1].startswith("1 failed, 1 passed"), summary[-1]  # shout_digits ran and passed
