"""groundqa: source-grounded question answering with verifiable citations."""

__version__ = "0.1.0"
