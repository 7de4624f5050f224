"""Validation reports: nothing is dropped or repaired silently.

Every adapter and every extraction run gets a ``Report``; each dropped or repaired item is
recorded with its id, the file it came from and the reason, and the report is written next
to its output as JSON (for programs) and text (for people).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Item:
    id: str
    file: str
    reason: str
    detail: str = ""


@dataclass
class Report:
    title: str
    dropped: list[Item] = field(default_factory=list)
    repaired: list[Item] = field(default_factory=list)
    notes: list[Item] = field(default_factory=list)  # counted oddities that change nothing
    counts: dict[str, int] = field(default_factory=dict)

    def drop(self, id: str, file, reason: str, detail: str = "") -> None:
        self.dropped.append(Item(str(id), str(file), reason, detail))

    def repair(self, id: str, file, reason: str, detail: str = "") -> None:
        self.repaired.append(Item(str(id), str(file), reason, detail))

    def note(self, id: str, file, reason: str, detail: str = "") -> None:
        self.notes.append(Item(str(id), str(file), reason, detail))

    def reasons(self, kind: str = "dropped") -> Counter:
        return Counter(i.reason for i in getattr(self, kind))

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "counts": self.counts,
            "summary": {k: dict(self.reasons(k)) for k in ("dropped", "repaired", "notes")},
            "dropped": [asdict(i) for i in self.dropped],
            "repaired": [asdict(i) for i in self.repaired],
            "notes": [asdict(i) for i in self.notes],
        }

    def to_text(self) -> str:
        lines = [self.title, "=" * len(self.title)]
        for k, v in self.counts.items():
            lines.append(f"{k}: {v}")
        for kind in ("dropped", "repaired", "notes"):
            items = getattr(self, kind)
            lines.append("")
            lines.append(f"{kind}: {len(items)}")
            for reason, n in sorted(self.reasons(kind).items()):
                lines.append(f"  {reason}: {n}")
            for i in items:
                extra = f" ({i.detail})" if i.detail else ""
                lines.append(f"  - {i.id}  [{i.reason}]  {i.file}{extra}")
        return "\n".join(lines) + "\n"

    def write(self, stem: Path) -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.txt``; returns both paths."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        # Append, not with_suffix: stems such as "manifest.report" already hold a dot, and
        # with_suffix would write manifest.json over the manifest's neighbour.
        j = stem.with_name(stem.name + ".json")
        t = stem.with_name(stem.name + ".txt")
        j.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False))
        t.write_text(self.to_text())
        return j, t

    @classmethod
    def read(cls, path: Path) -> "Report":
        d = json.loads(Path(path).read_text())
        r = cls(d["title"], counts=d.get("counts", {}))
        for kind in ("dropped", "repaired", "notes"):
            getattr(r, kind).extend(Item(**i) for i in d.get(kind, []))
        return r
