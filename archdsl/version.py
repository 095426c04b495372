"""archdsl's version: one definition, read by the package, the CLI and the generated programs' header
(pyproject.toml repeats it for packaging)."""

__version__ = "0.1.0"
