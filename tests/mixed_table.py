"""A realistic mixed table, generated: numeric, text, boolean, id and constant columns, every default missing
token, rare categories, a few rows without a target.

The label depends mostly on the text column ``plan`` and the boolean ``member``, little on the numbers,
so a model without the categorical columns cannot reach the accuracy a model with them reaches.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from models.preprocessing import DEFAULT_MISSING_TOKENS

PLANS = {"basic": -2.5, "plus": 2.5, "pro": -1.0, "team": 1.5}  # plan -> its effect on the label's logit
RARE_PLANS = ("legacy", "trial")  # a few rows each: pooled into <other>
REGIONS = ("north", "south", "east", "west")  # no effect on the label
TARGET = "churned"


def mixed_frame(rows: int = 1500, *, seed: int = 0) -> pd.DataFrame:
    """Gives back the table as text cells, as a CSV file holds them (every column a string column)."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(list(PLANS), size=rows, p=[0.35, 0.3, 0.2, 0.15]).astype(object)
    rare = rng.choice(len(plan), size=6, replace=False)
    plan[rare] = np.resize(RARE_PLANS, len(rare))
    member = rng.random(rows) < 0.5
    age = rng.normal(45, 12, rows)
    income = rng.lognormal(10, 0.5, rows)
    effect = np.array([PLANS.get(p, 0.0) for p in plan])
    logit = effect + np.where(member, 1.5, -1.5) + 0.01 * (age - 45)
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "customer_id": [f"C-{i:06d}" for i in range(rows)],
            "age": [f"{v:.1f}" for v in age],
            "plan": plan,
            "region": rng.choice(REGIONS, size=rows),
            "member": np.where(member, "yes", "no"),
            "income": [f"{v:.2f}" for v in income],
            "country": "DE",  # constant
            TARGET: np.where(churned, "yes", "no"),
        },
        dtype=object,
    )
    # Every missing token, in a numeric, a text and a boolean column, and a few rows without a target.
    for k, token in enumerate(DEFAULT_MISSING_TOKENS):
        for column, offset in (("age", 0), ("plan", 1), ("member", 2), ("income", 3)):
            frame.loc[20 + 9 * k + offset, column] = token
    frame.loc[[r for r in (3, 200, 777) if r < rows], TARGET] = "NA"
    return frame


def write_mixed_csv(path: Path, rows: int = 1500, *, seed: int = 0) -> Path:
    mixed_frame(rows, seed=seed).to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)
    return path
