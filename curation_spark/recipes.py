"""The packaged config recipes (the repository's ``conf/*.yaml``), found by name.

A wheel carries them as ``curation_spark/conf/*.yaml`` (``setup.py`` maps the top-level
``conf/`` folder there at build time); a source checkout or an editable install reads the
repository's ``conf/`` itself. So ``curation-spark run toy ...`` and ``--config toy`` work
wherever the package is installed, and a path to a file works as before.
"""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable
else:  # Python 3.10: importlib.resources.abc is new in 3.11
    from importlib.abc import Traversable

SUFFIX = ".yaml"


def _folder() -> Traversable | None:
    """Where the recipes are: inside the installed package, else the source tree's ``conf/``."""
    packaged = resources.files("curation_spark").joinpath("conf")
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parents[1] / "conf"
    return source if source.is_dir() else None


def available() -> dict[str, Traversable]:
    """Recipe name (file name without ``.yaml``) -> its file, sorted by name."""
    folder = _folder()
    if folder is None:
        return {}
    found = {entry.name[: -len(SUFFIX)]: entry for entry in folder.iterdir()
             if entry.name.endswith(SUFFIX) and entry.is_file()}
    return dict(sorted(found.items()))


def is_name(text: str) -> bool:
    """``toy`` or ``toy.yaml`` names a recipe; anything with a folder in it is a path."""
    return bool(text) and "/" not in text and "\\" not in text and text not in (".", "..")


def find(text: str) -> Traversable | None:
    """The packaged recipe ``text`` names (``toy`` or ``toy.yaml``), or None."""
    if not is_name(text):
        return None
    return available().get(text[: -len(SUFFIX)] if text.endswith(SUFFIX) else text)


def summary(recipe: Traversable) -> str:
    """The first sentence of the recipe's opening comment: what it is for."""
    words = []
    for line in recipe.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    text = " ".join(w for w in words if w)
    if ". " in text:
        text = text[: text.index(". ")]
    return text.rstrip(".:")
