"""The summary table lives with the analysis (`archdsl.analysis.table`), so that
`archdsl.summary(...)` prints it too; the CLI imports it from here as before."""

from ..analysis.table import COLUMNS, RIGHT, human, human_bytes, render

__all__ = ["COLUMNS", "RIGHT", "human", "human_bytes", "render"]
