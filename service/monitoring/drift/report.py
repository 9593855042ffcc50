"""The GET /drift answer: the verdict, its message in words, then the input features and every BN layer."""

from __future__ import annotations

from typing import Any, Literal

from service.monitoring.drift.stats import SiteDrift, rows_count

Verdict = Literal["ok", "drift", "insufficient_data", "error"]


def verdict_of(
    rows: float, score: float | None, *, min_rows: int, threshold: float, error: str | None
) -> Verdict:
    """Gives back the verdict on a window of ``rows`` rows whose worst score is ``score``."""
    if error is not None:
        return "error"
    if rows < min_rows or score is None:
        return "insufficient_data"
    return "ok" if score <= threshold else "drift"  # NaN (the network made NaN) counts as drift


def report(
    rows: float,
    drifts: list[SiteDrift],
    *,
    verdict: Verdict,
    head: dict[str, Any],
    top: int,
    features: bool,
    error: str | None,
) -> dict[str, Any]:
    """Gives back the report of the comparisons ``drifts`` (the input first, then the BN layers).

    ``head`` holds the monitor's own fields (threshold, min_rows, rows_seen, window, since).
    """
    score = max(d.worst for d in drifts) if drifts else None
    answer: dict[str, Any] = {
        "enabled": True,
        "verdict": verdict,
        "alert": verdict == "drift",
        "score": score,
        "threshold": head["threshold"],
        "rows": rows_count(rows),
        "min_rows": head["min_rows"],
        "rows_seen": head["rows_seen"],
        "window": head["window"],
        "since": head["since"],
        "worst_layer": None,
        "worst_feature": None,
        "message": "",
        "input": None,
        "layers": [],
    }
    if drifts:
        inputs, layers = drifts[0], drifts[1:]
        feature = int(inputs.score.argmax())
        answer["worst_feature"] = {
            "name": inputs.site.channels[feature],
            "score": float(inputs.score[feature]),
        }
        if layers:
            worst = max(layers, key=lambda d: d.worst)
            answer["worst_layer"] = {"name": worst.site.name, "score": worst.worst}
        answer["input"] = inputs.summary(top=top) | (
            {"features": [inputs.channel(i) for i in range(inputs.site.num_channels)]} if features else {}
        )
        answer["layers"] = [d.summary(top=top) for d in layers]
    answer["message"] = message(answer, error=error)
    return answer


def message(a: dict[str, Any], *, error: str | None) -> str:
    """Gives back the report's verdict in one sentence, naming the worst feature and layer."""
    verdict, threshold = a["verdict"], a["threshold"]
    if verdict == "error":
        return str(error)
    if verdict == "insufficient_data":
        return (
            f"insufficient data: {a['rows']} rows in the window, a verdict needs {a['min_rows']} "
            "(BNSERVE_DRIFT_MIN_ROWS); this is not a 'no drift' answer"
        )
    worst = f"worst input feature {a['worst_feature']['name']!r} ({a['worst_feature']['score']:.3g})"
    if a["worst_layer"] is not None:
        worst += f", worst layer {a['worst_layer']['name']!r} ({a['worst_layer']['score']:.3g})"
    if verdict == "drift":
        return f"drift: score {a['score']:.3g} > threshold {threshold:g} over {a['rows']} rows; {worst}"
    return f"no drift: score {a['score']:.3g} <= threshold {threshold:g} over {a['rows']} rows; {worst}"
