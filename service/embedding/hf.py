"""Local Hugging Face model folders: checks, a stable id, quiet loading, the tokenizer adapter."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.errors import ModelLoadError


class HFTokenizer:
    """Tokenizer protocol over a Hugging Face fast tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character span of every word piece of each text, special tokens excluded."""
        if not texts:
            return []
        encoded = self._tokenizer(
            list(texts),
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )
        return [[(int(a), int(b)) for a, b in offs] for offs in encoded["offset_mapping"]]

    def special_tokens(self) -> int:
        """Positions the model's own markers take in every sequence."""
        return len(self._tokenizer("", add_special_tokens=True)["input_ids"])


def model_fingerprint(path: Path) -> str:
    """A stable id for a model folder: its name plus a hash of its configuration and weights size.

    Install locations differ between machines, so the path itself cannot be the id.
    """
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json"):
        file = path / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return f"{path.name}@{digest.hexdigest()[:12]}"


def quiet_model_loading() -> None:
    """Turn off transformers' per-load progress bars ("Loading weights"): noise in a log."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def check_model_folder(path: Path) -> None:
    """Raise ModelLoadError unless path looks like a local sentence-transformers model."""
    if not path.is_dir():
        raise ModelLoadError(
            f"model folder {path} does not exist; set GROUNDQA_MODEL to a local "
            "sentence-transformers folder or unset it to use the bundled all-MiniLM-L6-v2"
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a sentence-transformers model folder (no config.json)")


def read_max_seq_length(path: Path) -> int:
    """The model's token limit from its sentence-transformers config (512 when it has none)."""
    config = path / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return 512
