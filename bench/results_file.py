"""Where a benchmark's figures go: ``bench/results/<kind>_<stamp>[_<tag>].json`` and
``<kind>_latest.json`` (the README quotes the stamped file)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(kind: str, results: dict[str, Any], tag: str = "") -> Path:
    """Write ``results`` as the stamped file and as ``<kind>_latest.json``; returns the stamped path."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"{kind}_{stamp}{'_' + tag if tag else ''}.json"
    text = json.dumps(results, indent=2, default=str)
    for target in (path, RESULTS / f"{kind}_latest.json"):
        target.write_text(text)
    return path
