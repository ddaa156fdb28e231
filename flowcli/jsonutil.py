"""Strict JSON helpers shared by reports and the CLI."""
from __future__ import annotations

import math
from typing import Any


def nan_to_none(obj: Any) -> Any:
    """Replace NaN/inf floats (not valid JSON) with None, recursively in dicts, lists and tuples."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj
