"""Lazy package attributes: ``import lso.export`` etc. import no heavy dependency until a name is used."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, table: Mapping[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """Module-level ``(__getattr__, __dir__)`` resolving ``name`` from ``table[name]`` on first use (then cached)."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
