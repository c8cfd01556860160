"""Build progress for people: a line on a terminal as each stage of `groundqa index` starts
(the embedding stage draws its own bar, with texts/s and the time left)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from service.config import Settings

# The stages of a build in order, as the builder reports them to its progress callback and
# GET /v1/index/rebuild/{job} shows them; the CLI loads the model first ("model").
BUILD_STAGES = ("scanning", "chunking", "embedding", "writing", "validating", "published")

BUNDLED_MODEL = "all-MiniLM-L6-v2"  # the model folder's own name is only "model"

LABELS = {
    "scanning": "Scanning the seeds folder",
    "chunking": "Parsing and chunking the files",
    "writing": "Writing the vectors and the keyword index",
    "validating": "Validating the build",
}


def export_needed(settings: Settings) -> bool:
    """Whether loading the configured encoder exports the model to ONNX first (not yet in
    GROUNDQA_CACHE_DIR, which every index folder of the machine shares)."""
    if settings.encoder not in ("onnx", "onnx-int8"):
        return False
    from service.embedding.hf import model_fingerprint
    from service.embedding.onnx_encoder import export_file, export_folder

    path = Path(settings.model_path).expanduser()
    if not path.is_dir():
        return False  # the loader says what is wrong
    folder = export_folder(settings.cache_dir, model_fingerprint(path))
    return not export_file(folder, int8=settings.encoder == "onnx-int8").is_file()


def model_label(settings: Settings) -> str:
    """What loading the model will do: an export (and quantisation) once, else a load."""
    model = Path(settings.model).name if settings.model else BUNDLED_MODEL
    if export_needed(settings):
        quantised = " and quantising it to int8" if settings.encoder == "onnx-int8" else ""
        return (
            f"Exporting {model} to ONNX{quantised}: once per model and machine, kept in "
            f"{settings.cache_dir / 'onnx'} (about a minute)"
        )
    return f"Loading {model} ({settings.encoder})"


class StageLines:
    """A progress callback (stage, fraction) printing one line when a stage starts; silent
    without a stream. Stages without a label (embedding: its bar; published: the summary
    follows) print nothing."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.stage: str | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        if stage == self.stage:
            return
        self.stage = stage
        label = LABELS.get(stage)
        if self.stream is not None and label is not None:
            print(f"{label}...", file=self.stream, flush=True)

    def say(self, text: str) -> None:
        """A line of its own (the model stage, which no builder reports)."""
        if self.stream is not None:
            print(f"{text}...", file=self.stream, flush=True)
