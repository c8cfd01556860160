"""Domain errors raised by the core; the API and CLI translate them for users."""


class GroundQAError(Exception):
    """Base class of every error groundqa reports to a user."""


class IndexNotBuiltError(GroundQAError):
    """No published build exists in the index folder."""


class IndexIncompatibleError(GroundQAError):
    """The published build cannot be used with the current settings or is damaged."""


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


class KeysFileError(GroundQAError):
    """The keys file (GROUNDQA_KEYS_FILE) is unreadable or malformed, or a key change is invalid."""


class UnknownKeyError(GroundQAError):
    """No key of that name is in the keys file."""
