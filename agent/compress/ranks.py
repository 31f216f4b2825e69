"""The rank of each candidate layer, from one rule: `--energy E`, `--rank R`, `--target-macs` or
`--target-params` (docs/compress.md, "Choosing ranks").

A global budget is spread by one kept-energy threshold for every layer: the largest E whose model fits
the budget, found by bisection (every layer's cost grows with E). A layer whose factorised form would cost
at least the MACs it costs now is left as it is, under every rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from agent.compress.lowrank import Candidate, Ranks
from agent.errors import UsageError

STEPS = 40  # bisection steps on E: 2^-40, far below any change of rank


@dataclass(frozen=True)
class RankRule:
    """Exactly one of the four ways to choose ranks; a target below or at 1 is a fraction of the model's total."""

    energy: Optional[float] = None
    rank: Optional[int] = None
    target_macs: Optional[float] = None
    target_params: Optional[float] = None

    def check(self) -> None:
        """A `UsageError` unless exactly one rule is given, in range."""
        given = [name for name, value in (("--energy", self.energy), ("--rank", self.rank),
                                          ("--target-macs", self.target_macs),
                                          ("--target-params", self.target_params)) if value is not None]
        if len(given) != 1:
            raise UsageError("give exactly one of --energy, --rank, --target-macs, --target-params"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.energy is not None and not 0 < self.energy <= 1:
            raise UsageError(f"--energy must be in (0, 1], not {self.energy}")
        if self.rank is not None and self.rank < 1:
            raise UsageError(f"--rank must be at least 1, not {self.rank}")
        for name, value in (("--target-macs", self.target_macs), ("--target-params", self.target_params)):
            if value is not None and value <= 0:
                raise UsageError(f"{name} must be positive, not {value}")


@dataclass
class Decision:
    """A candidate and its ranks; `ranks` None when it stays as it is (`reason` says why)."""

    candidate: Candidate
    ranks: Optional[Ranks]
    reason: Optional[str] = None


def decide(candidate: Candidate, ranks: Ranks) -> Decision:
    """Factorise at `ranks`, unless that costs at least the layer's MACs now."""
    params, macs = candidate.cost(ranks)
    if macs >= candidate.macs:
        return Decision(candidate, None, f"at rank {'x'.join(map(str, ranks))} it would cost {macs:,} MACs, "
                                         f"not fewer than its {candidate.macs:,}")
    return Decision(candidate, ranks)


def at_energy(found: Sequence[Candidate], energy: float) -> List[Decision]:
    """Every candidate at the ranks keeping `energy`."""
    return [decide(c, c.ranks_for_energy(energy)) for c in found]


def choose(found: Sequence[Candidate], rule: RankRule, total_macs: int,
           total_params: int) -> Tuple[List[Decision], Optional[float]]:
    """The decisions under `rule`, and the kept-energy threshold used (None for `--rank`). The totals are
    the whole model's, layers that cannot be factorised included."""
    rule.check()
    if rule.rank is not None:
        return [decide(c, c.ranks_for_rank(rule.rank)) for c in found], None
    if rule.energy is not None:
        return at_energy(found, rule.energy), rule.energy
    if rule.target_macs is not None:
        return _budget(found, rule.target_macs, total_macs, 1, "--target-macs", "MACs")
    assert rule.target_params is not None
    return _budget(found, rule.target_params, total_params, 0, "--target-params", "parameters")


def _budget(found: Sequence[Candidate], target: float, total: int, which: int, flag: str,
            unit: str) -> Tuple[List[Decision], float]:
    """The decisions at the largest E that fits; `which` picks parameters (0) or MACs (1), as `cost` orders them."""
    budget = target * total if target <= 1 else target
    fixed = total - sum((c.params, c.macs)[which] for c in found)

    def spent(energy: float) -> int:
        return fixed + sum((d.candidate.cost(d.ranks) if d.ranks else (d.candidate.params, d.candidate.macs))[which]
                           for d in at_energy(found, energy))

    low, high = 0.0, 1.0
    if spent(low) > budget:
        raise UsageError(f"{flag} {target:g}: the model cannot get below {spent(low):,} {unit} (every layer at "
                         f"rank 1) of its {total:,}")
    for _ in range(STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if spent(middle) <= budget else (low, middle)
    if spent(high) <= budget:
        low = high
    return at_energy(found, low), low
