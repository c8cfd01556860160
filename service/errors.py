"""Domain errors raised by the core; the API and CLI translate them for users."""


class GroundQAError(Exception):
    """Base class of every error groundqa reports to a user."""


class IndexNotBuiltError(GroundQAError):
    """No published build exists in the index folder."""


class IndexIncompatibleError(GroundQAError):
    """The published build cannot be used with the current settings or is damaged."""


class PointerCorruptError(IndexIncompatibleError):
    """index/CURRENT does not name a build inside the index folder."""


class IndexWriteError(GroundQAError):
    """The index folder cannot be written (read-only, disk full...)."""


class ModelLoadError(GroundQAError):
    """The embedding model could not be loaded."""


class SeedsNotFoundError(GroundQAError):
    """The seeds folder does not exist."""


class BuildInProgressError(GroundQAError):
    """Another build holds the index lock."""


class DocumentNotFoundError(GroundQAError):
    """The requested source is not in the published build."""


class ConversationFileError(GroundQAError):
    """The conversations file of a conversational evaluation is missing or malformed."""


class DatasetError(GroundQAError, ValueError):
    """An evaluation dataset is missing or malformed (a ValueError too, as it always was)."""


class UpstreamError(GroundQAError):
    """The LLM server failed: down, too slow, an error status, malformed or empty output, a
    refusal, or a stream cut short. Callers fall back to the extractive answer."""


class GenerationUnavailableError(GroundQAError):
    """A generated answer was asked for, but no LLM is configured (GROUNDQA_LLM_BASE_URL)."""


class InvalidSpanError(GroundQAError):
    """A span named by a request lies outside its document."""


class InvalidInputError(GroundQAError):
    """A command was given input it cannot work with."""


class KeysFileError(GroundQAError):
    """The keys file (GROUNDQA_KEYS_FILE) is unreadable or malformed, or a key change is invalid."""


class UnknownKeyError(GroundQAError):
    """No key of that name is in the keys file."""
