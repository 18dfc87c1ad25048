"""The package's version (a module of its own, so the report can name it without importing
the whole package)."""

__version__ = "0.1.0"
