"""Optional dependencies by extra, and a one-line error naming the extra
when one of them is missing (docs/install.md, "Extras").

The core (the ops, ``models``, ``metrics``, ``selection``) needs torch and
numpy; the rest comes with extras of the package: ``lse_fast[data]``
(datasets, PIL loader), ``lse_fast[dali]`` (the DALI loader),
``lse_fast[driver]`` (``python -m lse_fast.adapt``: config files, progress
bars, plots), ``lse_fast[dev]`` (tests, benchmarks).
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

# top-level module -> (distribution to install, extra that brings it; None: a core dependency)
OPTIONAL_MODULES = {
    "numpy": ("numpy", None),
    "PIL": ("pillow", "data"),
    "yaml": ("PyYAML", "driver"),
    "tqdm": ("tqdm", "driver"),
    "matplotlib": ("matplotlib", "driver"),
}


def missing_message(module: str, needed_by: str = "lse_fast") -> str | None:
    """The one-line message for a missing third-party `module` (a dotted
    name is reduced to its top level), or None when it is not one of ours."""
    top = module.split(".", 1)[0]
    if top not in OPTIONAL_MODULES:
        return None
    dist, extra = OPTIONAL_MODULES[top]
    if extra is None:
        return f"{needed_by} needs {dist}, a core dependency of lse_fast, which is not installed: pip install {dist}"
    return (f"{needed_by} needs {dist} (the lse_fast[{extra}] extra), which is not installed: "
            f"pip install 'lse_fast[{extra}]' (or pip install {dist})")


def _importer() -> str | None:
    """Name of the module whose import statement is running (skips importlib's frames)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not (name.startswith("importlib") or name == __name__):
            return name
        frame = frame.f_back
    return None


def _in_lse_fast_entry_point() -> bool:
    """True while `python -m lse_fast...` runs: python sets sys.argv[0] to
    "-m" while it imports the module's package, and then runs the module as
    __main__ (whose spec names it)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return sys.argv[:1] == ["-m"] or (spec is not None and spec.name.startswith("lse_fast"))


class MissingExtraFinder(MetaPathFinder):
    """Last entry of sys.meta_path: consulted only after every other finder
    failed to find a module. For our optional dependencies imported by
    lse_fast itself it raises the usual ModuleNotFoundError with a message
    naming the extra (or exits with that one line while ``python -m``
    imports an lse_fast package); any other import gets the usual error."""

    def find_spec(self, fullname, path=None, target=None):
        if "." in fullname or fullname not in OPTIONAL_MODULES:
            return None
        importer = _importer() or ""
        if importer != "lse_fast" and not importer.startswith("lse_fast."):
            return None
        needed_by = ".".join(importer.split(".")[:2])  # e.g. lse_fast.adapt
        message = missing_message(fullname, needed_by)
        if _in_lse_fast_entry_point():
            raise SystemExit(f"error: {message}")  # one line, no traceback
        raise ModuleNotFoundError(message, name=fullname)


def install_finder() -> None:
    if not any(isinstance(f, MissingExtraFinder) for f in sys.meta_path):
        sys.meta_path.append(MissingExtraFinder())
