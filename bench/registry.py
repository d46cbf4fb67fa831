"""One small generic registry: decorator registration, "did you mean" errors, one source of truth.

Packages outside the harness (genmask/, baselines/, a user's own) plug in through Python entry points:
a registry with an `entry_point_group` lists every `module:attr` its group names in the installed
distributions, lazily, so the harness itself never imports a model package by name.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; its message suggests close matches."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the plain message instead
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind: suites, models, samplers, ..."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name -> "module:attr", imported on first use (keeps start-up light)
        self._plugins_read = entry_point_group is None

    def _read_plugins(self) -> None:
        """Register the entry points of this registry's group lazily, once (names already taken win)."""
        if self._plugins_read:
            return
        self._plugins_read = True
        for entry in importlib.metadata.entry_points(group=self.entry_point_group):
            if entry.name not in self._entries and entry.name not in self._lazy:
                self._lazy[entry.name] = entry.value

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name` (and optional aliases)."""

        def decorate(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._entries and self._entries[key] is not obj:
                    raise ValueError(f"{self.kind} {key!r} is already registered")
                self._entries[key] = obj
                self._lazy.pop(key, None)
            return obj

        return decorate

    def register_lazy(self, name: str, target: str) -> None:
        """Register `name` as "module:attr", imported only when the entry is first asked for."""
        self._lazy[name] = target

    def get(self, name: str) -> T:
        self._read_plugins()
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            module_name, attr = self._lazy[name].split(":")
            module = importlib.import_module(module_name)  # usually registers `name` itself
            if name not in self._entries:
                self._entries[name] = getattr(module, attr)
            self._lazy.pop(name, None)
            return self._entries[name]
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        self._read_plugins()
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        self._read_plugins()
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
