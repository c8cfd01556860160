"""Named API keys in a TOML file (GROUNDQA_KEYS_FILE): only a hash of each key is stored, with
the collections (or `*`) and source globs it may see, whether it may rebuild, and an expiry.

The server reloads the file when it changes (KeyRing.reload_if_changed, polled by follow_keys),
so an added or revoked key takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from service.access import Principal, Scope
from service.errors import KeysFileError, UnknownKeyError
from service.store import write_atomic

log = logging.getLogger("groundqa")

KEY_PREFIX = "gqa_"
HASH_PREFIX = "sha256:"
ALL = "*"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HASH = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One named key as the file holds it: the hash of the key, never the key."""

    name: str
    hash: str
    collections: tuple[str, ...]  # ("*",) for every collection
    sources: tuple[str, ...] = ()
    admin: bool = False
    expires: date | None = None  # the last day (UTC) the key is accepted
    created: str = ""

    def expired(self, today: date) -> bool:
        """Whether the key is refused on today (UTC)."""
        return self.expires is not None and today > self.expires

    def principal(self) -> Principal:
        """Who a request with this key is."""
        collections = None if ALL in self.collections else frozenset(self.collections)
        return Principal(self.name, Scope(collections, self.sources), self.admin, keyed=True)


def generate_key() -> str:
    """A new random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key. Keys are 256 random bits, so a fast hash cannot be brute
    forced; a slow one (scrypt) would only cost time on every request."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def _strings(value: object, field: str, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise KeysFileError(f"key {name!r}: `{field}` must be a list of non-empty strings")
    return tuple(value)


def _entry(name: str, data: object) -> KeyEntry:
    """A key entry of the parsed file; KeysFileError naming what is wrong."""
    if not _NAME.fullmatch(name) or not isinstance(data, dict):
        raise KeysFileError(f"key {name!r}: expected a table [keys.NAME] (NAME: A-Z a-z 0-9 _ -)")
    digest = data.get("hash")
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        raise KeysFileError(f"key {name!r}: `hash` must be 'sha256:' and 64 hex digits")
    collections = _strings(data.get("collections"), "collections", name)
    if not collections:
        raise KeysFileError(f"key {name!r}: `collections` must name at least one, or '*'")
    sources = _strings(data.get("sources", []), "sources", name)
    admin = data.get("admin", False)
    expires = data.get("expires")
    if not isinstance(admin, bool):
        raise KeysFileError(f"key {name!r}: `admin` must be true or false")
    if expires is not None and (not isinstance(expires, date) or isinstance(expires, datetime)):
        raise KeysFileError(f"key {name!r}: `expires` must be a date (YYYY-MM-DD)")
    created = data.get("created", "")
    return KeyEntry(name, digest, collections, sources, admin, expires, str(created))


def read_keys(path: Path) -> dict[str, KeyEntry]:
    """The keys of a keys file by name (none when it does not exist); KeysFileError if broken."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeysFileError(f"cannot read the keys file {path}: {exc}") from exc
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        raise KeysFileError(f"keys file {path}: `keys` must be a table of [keys.NAME] tables")
    return {name: _entry(name, entry) for name, entry in keys.items()}


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes without ASCII escaping are valid TOML)."""
    return json.dumps(value, ensure_ascii=False)


def _toml_strings(values: Sequence[str]) -> str:
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


def render_keys(entries: Mapping[str, KeyEntry]) -> str:
    """The TOML text of a keys file."""
    parts = ["# groundqa keys: edit with `groundqa keys add|list|revoke`; holds hashes only.\n"]
    for entry in entries.values():
        lines = [
            f"\n[keys.{entry.name}]",
            f"hash = {_toml_string(entry.hash)}",
            f"collections = {_toml_strings(entry.collections)}",
            f"sources = {_toml_strings(entry.sources)}",
            f"admin = {'true' if entry.admin else 'false'}",
        ]
        if entry.expires is not None:
            lines.append(f"expires = {entry.expires.isoformat()}")
        if entry.created:
            lines.append(f"created = {_toml_string(entry.created)}")
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def write_keys(path: Path, entries: Mapping[str, KeyEntry]) -> None:
    """Replace the keys file atomically (a reloading server never reads half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_keys(entries).encode())
    os.chmod(path, 0o600)


def add_key(
    path: Path,
    name: str,
    collections: Sequence[str],
    *,
    sources: Sequence[str] = (),
    admin: bool = False,
    expires: date | None = None,
) -> str:
    """Create a key named name, store its hash, and return the key (shown once, never stored)."""
    if not _NAME.fullmatch(name):
        raise KeysFileError(f"invalid key name {name!r}: use 1-64 of A-Z a-z 0-9 _ -")
    wanted = tuple(dict.fromkeys(c.strip() for c in collections if c.strip()))
    if not wanted:
        raise KeysFileError("name at least one collection (--collections a,b), or '*' for all")
    if any(not c.isprintable() for c in (*wanted, *sources)):
        raise KeysFileError("collections and source globs must be printable text")
    entries = read_keys(path)
    if name in entries:
        raise KeysFileError(f"a key named {name!r} exists; revoke it first or pick another name")
    key = generate_key()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    entries[name] = KeyEntry(name, hash_key(key), wanted, tuple(sources), admin, expires, created)
    write_keys(path, entries)
    return key


def revoke_key(path: Path, name: str) -> None:
    """Remove the key named name from the file."""
    entries = read_keys(path)
    if name not in entries:
        raise UnknownKeyError(f"no key named {name!r} in {path}; see `groundqa keys list`")
    del entries[name]
    write_keys(path, entries)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is replaced or edited (None: no file)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class KeyRing:
    """The keys of a keys file as the server uses them, reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._entries: tuple[KeyEntry, ...] = ()
        self._lock = threading.Lock()
        self.reloaded = threading.Condition(self._lock)  # notified after every reload
        self.generation = 0
        self.reload_if_changed(strict=True)

    def reload_if_changed(self, *, strict: bool = False) -> bool:
        """Reload when the file changed; True when it did. A broken file raises KeysFileError
        with strict, else keeps the keys loaded before (logged: the server keeps running)."""
        signature = _signature(self.path)
        if signature == self._signature and self.generation:
            return False
        try:
            entries = tuple(read_keys(self.path).values())
        except KeysFileError as exc:
            if strict:
                raise
            log.error("keys file not reloaded, the previous keys stay in force: %s", exc)
            self._signature = signature  # do not log it again until it changes
            return False
        with self._lock:
            self._signature = signature
            self._entries = entries
            self.generation += 1
            self.reloaded.notify_all()
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, token: str) -> KeyEntry | None:
        """The entry whose hash is the token's: every hash is compared, in constant time."""
        digest = hash_key(token).encode()
        found: KeyEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.hash.encode()) and found is None:
                found = entry
        return found


def follow_keys(ring: KeyRing, interval: float, stop: threading.Event) -> None:
    """Reload the keys file whenever it changes, until stop is set."""
    while not stop.wait(interval):
        if ring.reload_if_changed():
            log.info("keys file reloaded: %d keys", len(ring))
