"""How long something will take, said up front: the one duration format of `eval` and `train`."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """'45 s', '3.5 min', '1.2 h' or '2.5 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
