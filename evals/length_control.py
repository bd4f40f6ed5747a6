"""Length-controlled win rate (Dubois et al. 2024, "Length-Controlled AlpacaEval: A Simple Way to
Debias Automatic Evaluators", arXiv:2404.04475).

A logistic GLM with soft labels (the judge's preference) predicts whether the model beats the
baseline:

    logit P(model better) = t_len * tanh(dlen / std(dlen)) + t_diff * difficulty + t_model

with ``dlen = len(baseline) - len(model)`` in characters, no intercept, L1 penalty chosen by 5-fold
CV. The length-controlled win rate is the model's mean predicted win probability with the length
term set to 0. The official fit also uses per-instruction ``difficulty`` and annotations of two
"gamed" baselines (verbose / concise prompting of the baseline, whose rows get the model indicator
0); without them only the length-only GLM (``t_len`` and ``t_model``) can be fitted, and it is
reported under its own name.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class LCResult:
    win_rate: float
    """Length-controlled win rate in percent."""
    weights: dict[str, float]
    """Fitted coefficients: t_len, t_diff (full GLM only), t_model."""
    kind: str
    """"length_only_glm" or "full_glm" (official formula with difficulty and gamed baselines)."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fit_soft_logistic(features: np.ndarray, soft_labels: np.ndarray, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """L1 logistic regression without intercept on labels in [0, 1], C chosen by K-fold CV.

    Soft labels are fitted exactly by duplicating each row as a 1 (weight p) and a 0 (weight 1-p);
    the CV folds keep both copies of a row together.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import KFold

    n = len(soft_labels)
    x = np.concatenate([features, features])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    w = np.concatenate([soft_labels, 1.0 - soft_labels])
    keep = w > 0
    folds = []
    for train, test in KFold(n_folds, shuffle=True, random_state=seed).split(np.arange(n)):
        tr, te = np.concatenate([train, train + n]), np.concatenate([test, test + n])
        folds.append((_remap(tr, keep), _remap(te, keep)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegressionCV(Cs=20, l1_ratios=(1.0,), fit_intercept=False, cv=folds, solver="liblinear",
                                     scoring="neg_log_loss", max_iter=1000, random_state=seed)  # liblinear shuffles: seeded, or the
        # LC win rate moves between runs on the same annotations (19.43 to 19.68 on alpaca-7b)
        model.fit(x[keep], y[keep], sample_weight=w[keep])
    return np.asarray(model.coef_).reshape(-1)


def _remap(indices: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Indices into the full stacked array -> indices into its ``keep`` rows."""
    position = np.cumsum(keep) - 1
    return position[indices[keep[indices]]]


def length_controlled_winrate(
    preferences: np.ndarray,
    model_lengths: np.ndarray,
    baseline_lengths: np.ndarray,
    difficulty: np.ndarray | None = None,
    gamed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
) -> LCResult:
    """LC win rate from preferences in [1, 2] (2: the model is better) and output lengths.

    ``difficulty`` (one value per row) and ``gamed`` (for each gamed baseline: its preferences vs the
    baseline and the two length arrays, same row order) switch to the full GLM; both are needed.
    """
    preferences = np.asarray(preferences, dtype=float)
    keep = ~np.isnan(preferences)
    p = preferences[keep] - 1.0
    dlen = (np.asarray(baseline_lengths, float) - np.asarray(model_lengths, float))[keep]
    full = difficulty is not None and gamed
    rows_p, rows_dlen, rows_diff, rows_model = [p], [dlen], [], [np.ones_like(p)]
    if full:
        diff = np.asarray(difficulty, float)
        rows_diff.append(diff[keep])
        for g_pref, g_model_len, g_base_len in gamed:
            g_keep = ~np.isnan(np.asarray(g_pref, float))
            rows_p.append(np.asarray(g_pref, float)[g_keep] - 1.0)
            rows_dlen.append((np.asarray(g_base_len, float) - np.asarray(g_model_len, float))[g_keep])
            rows_diff.append(diff[g_keep])
            rows_model.append(np.zeros(int(g_keep.sum())))
    all_dlen = np.concatenate(rows_dlen)
    std = float(np.std(all_dlen, ddof=1)) or 1.0  # pandas .std(): ddof 1
    columns = [np.tanh(all_dlen / std)]
    if full:
        columns.append(np.concatenate(rows_diff))
    columns.append(np.concatenate(rows_model))
    coef = fit_soft_logistic(np.stack(columns, axis=1), np.clip(np.concatenate(rows_p), 0.0, 1.0), seed=seed)
    if full:
        t_len, t_diff, t_model = coef
        logits = t_diff * np.asarray(difficulty, float)[keep] + t_model
        weights = {"t_len": float(t_len), "t_diff": float(t_diff), "t_model": float(t_model)}
    else:
        t_len, t_model = coef
        logits = np.full(int(keep.sum()), t_model)
        weights = {"t_len": float(t_len), "t_model": float(t_model)}
    win = float(np.mean(_sigmoid(logits)) * 100)
    return LCResult(win_rate=win if math.isfinite(win) else float("nan"), weights=weights,
                    kind="full_glm" if full else "length_only_glm")
