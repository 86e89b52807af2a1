"""One small registry class shared by adapters, merges, stages and tasks (STYLE: registries with one shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from workbench.errors import unknown_name

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    params: Any = None
    reference: str = ""
    extra: dict = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> object, with did-you-mean on lookups of unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, params: Any = None, reference: str = "", **extra) -> Callable[[T], T]:
        """Decorator: ``@REG.register("ties", params=TiesParams, reference="arXiv:...")``."""

        def wrap(obj: T) -> T:
            self.add(name, obj, params=params, reference=reference, **extra)
            return obj

        return wrap

    def add(self, name: str, obj: T, params: Any = None, reference: str = "", **extra) -> None:
        if name in self._entries and self._entries[name].obj is not obj:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = Entry(name, obj, params, reference, dict(extra))

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)
