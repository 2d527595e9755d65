"""Attributes of a face that read (and write) the same attribute of the core object."""

from __future__ import annotations

from typing import Any


def delegate(name: str, doc: str = "", *, writable: bool = False) -> Any:
    """A property reading ``self._core.<name>``; with *writable*, assignments go there too."""

    def get(self: Any) -> Any:
        return getattr(self._core, name)

    def set_(self: Any, value: Any) -> None:
        setattr(self._core, name, value)

    return property(get, set_ if writable else None, doc=doc or f"The core's ``{name}``.")
