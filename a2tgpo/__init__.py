"""A²TGPO: turn-level information-gain policy optimization for tool-using LLM agents."""

__version__ = "0.1.0"
