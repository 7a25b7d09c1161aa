"""Equal conditions: the share of the machine each configuration's runs trained with (run.json's
exclusive_share), and a flag on every configuration whose runs had a clearly lower or unequal one.

A budget-matched comparison is fair only if every run had the machine to itself: a run that shared
its cores or its GPU trained fewer steps in the same budget. A configuration is flagged `busy` when
one of its runs had less than BUSY_BELOW of the machine, `unequal` when its seeds' shares differ by
more than UNEQUAL_BY; a comparison without a flag is one whose conditions were equal. Runs written
before the share was measured are `not measured`, never assumed fair.
"""
from __future__ import annotations

import pandas as pd

from harness.report.collect import GROUP
from harness.rundir.records import BUSY_BELOW

UNEQUAL_BY = 0.1  # shares further apart than this are unequal conditions (a 1.0 vs 0.9 pair is not)


def config_conditions(part: pd.DataFrame) -> dict:
    """The share columns of one configuration's runs: mean share, the lowest run's, and the flag."""
    shares = part["share"].dropna().astype(float) if "share" in part else pd.Series(dtype=float)
    if shares.empty:
        return {"share": None, "share_min": None, "conditions": "not measured"}
    flags = []
    if shares.min() < BUSY_BELOW:
        flags.append(f"busy ({shares.min():.2f} of the machine)")
    if shares.max() - shares.min() > UNEQUAL_BY:
        flags.append(f"unequal seeds ({shares.min():.2f}-{shares.max():.2f})")
    if len(shares) < len(part):
        flags.append(f"{len(part) - len(shares)} run(s) not measured")
    return {"share": round(float(shares.mean()), 3), "share_min": round(float(shares.min()), 3),
            "conditions": "; ".join(flags) or "equal"}


def by_config(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (GROUP): its share columns and flag."""
    keys = [k for k in GROUP if k in runs.columns]
    rows = []
    for group, part in runs.groupby(keys, dropna=False, sort=True):
        rows.append({**dict(zip(keys, group if isinstance(group, tuple) else (group,))), **config_conditions(part)})
    return pd.DataFrame(rows)


def flagged(conditions: str | None) -> bool:
    return bool(conditions) and conditions not in ("equal", "not measured")


def conditions_notes(runs: pd.DataFrame) -> list[str]:
    """The page's lines on conditions: each flagged configuration with why, unequal shares between
    configurations, runs not measured; or that every run had the machine to itself."""
    if runs.empty:
        return []
    table = by_config(runs)
    names = table.apply(lambda r: r["method"] + (f" {r['variant']}" if isinstance(r.get("variant"), str) else "")
                        + (f" ({r['budget']})" if table["budget"].nunique() > 1 else ""), axis=1) \
        if "method" in table else pd.Series(dtype=str)
    notes = []
    for name, row in zip(names, table.itertuples(index=False)):
        if flagged(row.conditions):
            notes.append(f"flag: {name} trained on a machine it did not have to itself: {row.conditions}.")
    measured = table[table["share"].notna()]
    parts = ", ".join(f"{n} {s:.2f}" for n, s in zip(names[measured.index], measured["share"]))
    if len(measured) > 1 and measured["share"].max() - measured["share"].min() > UNEQUAL_BY:
        notes.append(f"unequal conditions between configurations (share of the machine: {parts}): their "
                     f"budget-matched results do not compare as equals.")
    elif len(measured) > 1 and notes:
        notes.append(f"every configuration trained with about the same share of the machine ({parts}): they compare "
                     f"with each other, but none had the whole machine for its budget.")
    unmeasured = int(runs["share"].isna().sum()) if "share" in runs else len(runs)
    if unmeasured:
        notes.append(f"{unmeasured} run(s) recorded no share of the machine (written by an older harness, or still "
                     f"starting): their conditions are unknown.")
    if not notes:
        notes.append(f"conditions equal: every run had at least {BUSY_BELOW:g} of the machine "
                     f"(lowest {runs['share'].min():.2f}).")
    return notes
