"""Collections and access scopes: which indexed documents a request may see.

A document's collection is the top-level folder of its source under seeds/ (`hr/leave.md` is in
`hr`); files directly in seeds/ are in `default`. A Scope is applied inside retrieval and every
document lookup, so no route can return what its key may not see.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_COLLECTION = "default"


def collection_of(source: str) -> str:
    """The collection of a source path: its first folder, or `default` for a top-level file."""
    head, sep, _ = source.partition("/")
    return head if sep else DEFAULT_COLLECTION


@dataclass(frozen=True, slots=True)
class Scope:
    """The documents a request may see: those of `collections` (None: every collection) whose
    source matches one of `sources` (empty: any source)."""

    collections: frozenset[str] | None = None
    sources: tuple[str, ...] = ()

    @property
    def unrestricted(self) -> bool:
        """Whether the scope lets every document through."""
        return self.collections is None and not self.sources

    def sees_collection(self, collection: str) -> bool:
        """Whether some document of collection may be visible."""
        return self.collections is None or collection in self.collections

    def allows(self, source: str, collection: str) -> bool:
        """Whether the document (source, collection) is visible."""
        if not self.sees_collection(collection):
            return False
        return not self.sources or any(fnmatch.fnmatchcase(source, p) for p in self.sources)

    def narrow(self, collections: Iterable[str] | None) -> Scope:
        """This scope limited to the requested collections: a request never widens it, and a
        collection it cannot see simply holds nothing (as one that does not exist)."""
        if collections is None:
            return self
        wanted = frozenset(collections)
        kept = wanted if self.collections is None else wanted & self.collections
        return Scope(kept, self.sources)

    def label(self) -> list[str] | str:
        """The scope's collections for the audit log: a sorted list, or `*`."""
        return "*" if self.collections is None else sorted(self.collections)


EVERYTHING = Scope()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a key's name (never the key), what it may see, whether it may rebuild."""

    name: str
    scope: Scope = EVERYTHING
    admin: bool = False
    keyed: bool = False  # a key of the keys file (not the simple mode's keys or token)
