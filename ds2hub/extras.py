"""Optional dependencies ("extras", e.g. `ds2hub[mandarin]`): `import ds2hub` never imports them,
and a feature used without its extra raises `MissingExtra`, which names the `pip install`."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from ds2hub.errors import ConfigError

# pyctcdecode 0.5 (its last release) declares numpy<2 but runs under numpy 2, which ds2hub's stack
# (pyarrow, datasets) needs: no extra can override another package's metadata, so the `lm` extra
# brings pyctcdecode's other dependencies and pyctcdecode itself is installed without its pin.
PYCTCDECODE_MISSING = (
    "the pyctcdecode backend needs pyctcdecode, whose metadata pins numpy<2 (it runs under "
    "numpy 2): pip install 'ds2hub[lm]' && pip install --no-deps 'pyctcdecode>=0.5,<0.6' "
    '(uv: override-dependencies = ["numpy>=2"]); or use the flashlight backend'
)


class MissingExtra(ConfigError, ImportError):
    """A feature needs a package of an extra that is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; it comes with the `{extra}` extra: "
            f"pip install 'ds2hub[{extra}]'"
        )
        self.module, self.extra = module, extra


def require(module: str, extra: str) -> ModuleType:
    """Imports `module`, or raises `MissingExtra` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name is not None and error.name.split(".")[0] != top:
            raise  # the extra is there but one of its own dependencies is broken: show that
        raise MissingExtra(top, extra) from error


def package_folder(module: str, extra: str) -> Path:
    """The folder of an extra's package, found without importing it (jieba's import pulls in the
    deprecated pkg_resources), for the data files it ships; `MissingExtra` when it is absent."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise MissingExtra(module, extra)
    return Path(spec.origin).parent


class LazyAttr:
    """Stands for `module.attr` and imports `module` on first use (call, attribute, `in`).

    Written here because a module-level `from pypinyin import Style` would import the extra with
    `import ds2hub`; the standard library's `importlib.util.LazyLoader` defers the execution of a
    module but not of `from ... import name`, and cannot name the extra when it is missing.
    """

    def __init__(self, module: str, attr: str, extra: str) -> None:
        self._where = (module, attr, extra)

    def _target(self) -> Any:
        module, attr, extra = self._where
        return getattr(require(module, extra), attr)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy/pickle/inspect probes must not import the extra
            raise AttributeError(name)
        return getattr(self._target(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __contains__(self, item: object) -> bool:
        return item in self._target()

    def __repr__(self) -> str:
        module, attr, extra = self._where
        return f"<{module}.{attr}, imported on first use (extra `{extra}`)>"
