"""StreamFeatures: the ``<stream:features/>`` the server offered, queried by feature.

Code ported from the reference API asks ``features.has_feature(Bind)`` or ``Bind in
features``; code written for lxml calls ``features.find(tag)``.  :class:`StreamFeatures` answers
both over the one element the server sent, so neither has to know about the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lxml import etree

#: What names a feature: a Clark name (``"{urn:ietf:params:xml:ns:xmpp-bind}bind"``), a
#: ``(namespace, local name)`` pair, or a class with such a pair or name as its ``TAG``.
FeatureKey = Any


def feature_tag(key: FeatureKey) -> str:
    """The Clark name of the feature *key* names.

    :raises TypeError: *key* is none of the forms of :data:`FeatureKey`.
    """
    tag = getattr(key, "TAG", key)
    if isinstance(tag, str):
        return tag
    if isinstance(tag, tuple) and len(tag) == 2 and all(isinstance(p, str | None) for p in tag):
        namespace, local = tag
        return f"{{{namespace}}}{local}" if namespace else str(local)
    raise TypeError(f"{key!r} names no stream feature (a Clark name, a pair or a class with TAG)")


class StreamFeatures:
    """The stream features of one stream: feature queries and the element's own methods.

    ``find``, ``findall``, ``iter``, ``get``, ``tag``, ``len()`` and iteration are the
    element's; :attr:`element` is the element itself.
    """

    def __init__(self, element: etree._Element) -> None:
        self.element = element

    def has_feature(self, key: FeatureKey) -> bool:
        """Whether the server offered the feature *key* names."""
        return self.element.find(feature_tag(key)) is not None

    def get_feature(self, key: FeatureKey, default: Any = None) -> Any:
        """The element of the feature *key* names, or *default*."""
        found = self.element.find(feature_tag(key))
        return default if found is None else found

    def __contains__(self, key: object) -> bool:
        try:
            return self.has_feature(key)
        except TypeError:
            return False

    def __getitem__(self, key: FeatureKey) -> etree._Element:
        """The element of the feature *key* names.

        :raises KeyError: the server did not offer it.
        """
        found = self.element.find(feature_tag(key))
        if found is None:
            raise KeyError(key)
        return found

    def find(self, path: str) -> etree._Element | None:
        """The element's ``find``."""
        return self.element.find(path)

    def findall(self, path: str) -> list[etree._Element]:
        """The element's ``findall``."""
        return self.element.findall(path)

    def iter(self, tag: str | None = None) -> Iterator[etree._Element]:
        """The element's ``iter``."""
        return self.element.iter(tag)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The element's ``get`` (an attribute)."""
        value = self.element.get(key, default)
        return None if value is None else str(value)

    @property
    def tag(self) -> str:
        """The element's tag."""
        return str(self.element.tag)

    def __iter__(self) -> Iterator[etree._Element]:
        return iter(self.element)

    def __len__(self) -> int:
        return len(self.element)

    def __repr__(self) -> str:
        return f"<StreamFeatures {[child.tag for child in self.element]!r}>"


__all__ = ["FeatureKey", "StreamFeatures", "feature_tag"]
