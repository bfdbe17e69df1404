"""Summaries of repeated measurements: median with its spread (min-max and IQR)."""

import statistics
from collections.abc import Sequence
from typing import Any


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """n, median, min, max, q1, q3 and the raw samples (rounded), in the samples' unit."""
    values = sorted(samples)
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "q1": None, "q3": None, "samples": []}
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": values[0],
        "max": values[-1],
        "q1": q1,
        "q3": q3,
        "samples": [round(v, 4) for v in samples],
    }


def ms(seconds: Sequence[float]) -> dict[str, Any]:
    """summary() of durations given in seconds, in milliseconds."""
    return summary([s * 1000.0 for s in seconds])
