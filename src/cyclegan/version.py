"""The package version, in a module of its own: lower layers (checkpoint metadata, the downloader's
User-Agent, evaluation records) read it without importing the package's ``__init__``, which pulls in
the ``Translator`` API from the workflows layer."""

__version__ = "0.1.0"
