"""Quantities as people read them, shared by the library's reports (:mod:`ltxcli.diagnose`) and the CLI."""

from __future__ import annotations


def human_bytes(n: int | None) -> str:
    """Decimal units with one decimal (``1.5 GB``), whole bytes below 1 kB; ``?`` for unknown (None)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
