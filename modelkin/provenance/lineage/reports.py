"""The records the lineage commands return, each with its stable JSON form (the CLI contract's keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


@dataclass(frozen=True)
class CandidateScore:
    ref: str
    score: float  # calibrated log-odds of being the parent against "no registered parent"
    confidence: float  # probability of being the parent

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "score": _round(self.score), "confidence": _round(self.confidence)}


@dataclass(frozen=True)
class ParentReport:
    query: str
    parents: tuple[str, ...]
    relation: str | None
    confidence: float
    candidates: tuple[CandidateScore, ...]
    duplicates: tuple[str, ...]
    method: str

    @property
    def parent(self) -> str | None:
        return self.parents[0] if len(self.parents) == 1 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "parent": self.parent,
            "parents": list(self.parents),
            "relation": self.relation,
            "confidence": _round(self.confidence),
            "candidates": [c.to_json() for c in self.candidates],
            "duplicates": list(self.duplicates),
            "method": self.method,
        }


@dataclass(frozen=True)
class AncestorsReport:
    ref: str
    ancestors: tuple[tuple[str, int], ...]

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "ancestors": [{"ref": r, "generation": g} for r, g in self.ancestors]}


@dataclass(frozen=True)
class EdgeRecord:
    parent: str
    child: str
    relation: str | None
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {"parent": self.parent, "child": self.child, "relation": self.relation,
                "confidence": _round(self.confidence)}  # fmt: skip


@dataclass(frozen=True)
class TreeReport:
    edges: tuple[EdgeRecord, ...]
    roots: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"edges": [e.to_json() for e in self.edges], "roots": list(self.roots)}

    def to_dot(self) -> str:
        lines = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
        for r in self.roots:
            lines.append(f'  "{r}";')
        for e in self.edges:
            label = f"{e.relation or ''} {e.confidence:.2f}".strip()
            lines.append(f'  "{e.parent}" -> "{e.child}" [label="{label}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Finding:
    ref: str
    declared: tuple[str, ...]
    detected: tuple[str, ...]
    status: str
    confidence: float | None

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "declared": list(self.declared), "detected": list(self.detected),
                "status": self.status, "confidence": _round(self.confidence)}  # fmt: skip


@dataclass(frozen=True)
class AuditReport:
    findings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {"findings": [f.to_json() for f in self.findings]}
