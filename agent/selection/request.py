"""The `select` command line as data, and the settings a stored decision must match to be reused."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional


@dataclasses.dataclass
class SelectRequest:
    """The `select` command line, as data."""

    model: str
    objective: str = "p50"
    budget: float = 1.0  # Top-1 points a candidate may lose against the FP32 reference
    min_cosine: float = 0.99  # unlabelled models: mean cosine of the outputs to the reference's
    min_agreement: Optional[float] = None  # unlabelled: top-1 agreement; default 1 - budget/100
    time_limit_s: float = 60.0
    backends: Optional[List[str]] = None
    threads: Optional[List[int]] = None
    eval_limit: Optional[int] = None
    refresh: bool = False
    seed: int = 0
    # The daemon's, passed to every worker of the race: its address-space limit, and the poll that
    # stops the running worker when it returns True (`cancel`); see MeasureRequest.
    memory_limit_mb: Optional[int] = None
    should_cancel: Optional[Callable[[], bool]] = dataclasses.field(default=None, repr=False, compare=False)

    def settings(self) -> Dict[str, Any]:
        """What a stored decision must have been made with to be reused by `select`."""
        agreement = self.min_agreement if self.min_agreement is not None else 1.0 - self.budget / 100.0
        return {"objective": self.objective, "budget": self.budget, "min_cosine": self.min_cosine,
                "min_agreement": round(agreement, 6), "backends": self.backends, "threads": self.threads,
                "eval_limit": self.eval_limit}
