"""Index storage: the manifest is read and written in one shape, and a malformed one is refused
with the command that rebuilds the index."""

from __future__ import annotations

import json

import pytest

from service.config import Settings
from service.errors import IndexIncompatibleError
from service.store import (
    MANIFEST,
    build_path,
    publish,
    published_manifest,
    read_manifest,
    read_pointer,
)


def test_manifest_round_trips_through_its_file(built: Settings) -> None:
    build_id = str(read_pointer(built.index_dir))
    folder = build_path(built.index_dir, build_id)
    manifest = read_manifest(folder)
    assert json.loads((folder / MANIFEST).read_text()) == manifest.to_json()
    assert manifest == published_manifest(built.index_dir)
    assert (manifest.build_id, manifest.documents, manifest.previous_build_id) == (
        build_id,
        2,
        None,
    )
    assert sorted(manifest.files) == ["cats.md", "troops.txt"]


@pytest.mark.parametrize("field", ["counts", "model", "files"])
def test_manifest_without_a_field_is_damaged(built: Settings, field: str) -> None:
    folder = build_path(built.index_dir, str(read_pointer(built.index_dir)))
    data = json.loads((folder / MANIFEST).read_text())
    del data[field]
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(IndexIncompatibleError) as info:
        read_manifest(folder)
    message = str(info.value)
    assert message.startswith(f"index build {folder} is damaged (manifest malformed: KeyError(")
    assert message.endswith(f"run `groundqa index --full --index {built.index_dir}` to rebuild it")


def test_pointer_names_the_published_build(settings: Settings) -> None:
    settings.index_dir.mkdir()
    assert read_pointer(settings.index_dir) is None
    assert published_manifest(settings.index_dir) is None
    publish(settings.index_dir, "b1")
    assert read_pointer(settings.index_dir) == "b1"
