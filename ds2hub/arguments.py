"""The argument parser of ds2hub's own commands (`transcribe`, `serve`, `lm`, `export`, `push`,
`recipes`; `fit` and friends are LightningCLI's): options are never abbreviated (a typo such as
`--beam 8` must not silently become `--beam-size 8`), and a bad command line is one
`PROG: error: ...` line and exit status 2, naming the closest valid option when one is near
(also when the misspelt option is a required one, which argparse reports as missing)."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import Any, NoReturn


def closest_option(given: str, valid: list[str]) -> str | None:
    """The option of `valid` nearest to `given` (`--batchsize` -> `--batch-size`), or None."""
    name = given.split("=", 1)[0]
    # Compared without the dashes, which every option shares and difflib would count as likeness.
    bare = {v.lstrip("-"): v for v in valid}
    match = difflib.get_close_matches(name.lstrip("-"), list(bare), n=1, cutoff=0.75)
    if match:
        return bare[match[0]]
    # an option that is a prefix of valid ones (what abbreviation used to expand)
    longer = [v for v in valid if v.startswith(name) and len(name) > 2]
    return longer[0] if len(longer) == 1 else None


def with_closest_option(
    message: str, parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> str:
    """An argparse error `message`, plus the closest of `parser`'s options when it names an
    unknown one (`unrecognized arguments: --batchsize` -> `... (did you mean --batch-size?)`).

    argparse reports missing required options before unknown ones, so a misspelt required option
    (`--repo_id`) reads as missing: then the unknown options of `argv`, the command line parsed,
    are named with their closest valid ones (`... required: --repo-id (--repo_id: did you mean
    --repo-id?)`).
    """
    unknown = re.match(r"unrecognized arguments: (\S+)", message, re.IGNORECASE)
    valid = [o for o in parser._option_string_actions if o.startswith("--")]
    if unknown and (near := closest_option(unknown.group(1), valid)):
        message += f" (did you mean {near}?)"
    elif message.startswith("the following arguments are required") and argv:
        notes = []
        for arg in argv[: argv.index("--") if "--" in argv else None]:  # after `--`: values
            name = arg.split("=", 1)[0]
            if name.startswith("--") and name not in parser._option_string_actions:
                near = closest_option(name, valid)
                notes.append(f"{name}: " + (f"did you mean {near}?" if near else "unknown option"))
        if notes:
            message += f" ({'; '.join(notes)})"
    return message


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` without abbreviations and with one-line errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._argv: list[str] = []

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)  # for `error`
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        message = with_closest_option(message, self, self._argv)
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")
