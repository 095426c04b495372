"""What a pass did: one line per change, and one line per candidate it declined (and why)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassReport:
    name: str
    changed: list[str] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"{self.name}: {len(self.changed)} change(s)"]
        lines += [f"  {c}" for c in self.changed]
        lines += [f"  not fused: {d}" for d in self.declined]
        return "\n".join(lines)
