"""One package per experiment script, each with the same small contract (see dlmkit/runner.py):
PHASES (name -> phase(run, context), in order), ROLES and PHASE_ROLES, add_flags, a frozen
Settings built from the flags, and a Context that the phases share. No experiment imports
another; what two of them need lives in the shared layers below (tests/test_layout.py)."""

from __future__ import annotations

import importlib


def lazy_phase(module: str, name: str):
    """phase(run, context), imported from `module` when it first runs: a script's --help (built from
    the package's PHASES, ROLES, add_flags and Settings) never imports torch."""

    def phase(run, context):
        return getattr(importlib.import_module(module), name)(run, context)

    phase.__name__ = phase.__qualname__ = name
    phase.__module__ = module
    return phase


def lazy_context(package: str):
    """A package's module-level __getattr__ that imports its Context from `package.context` on first
    use (torch and the models come with it, after the flags are read)."""

    def __getattr__(name: str):
        if name == "Context":
            return importlib.import_module(f"{package}.context").Context
        raise AttributeError(f"module {package} has no attribute {name}")

    return __getattr__
