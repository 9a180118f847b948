"""From the experiments' JSON outputs to judged claims.

:func:`load_results` reads every complete output in a results folder; :func:`claims_of` reduces
one experiment's output to the numbers its judges take (distances of simulated levels to the
LP's optimal face, :func:`level_deviations`; Fig. 2's decode backlog over n,
:func:`backlog_series`) and applies them (:mod:`jaxqueue.paper_claims`,
:mod:`jaxqueue.gap_claims`); :func:`judge_all` does so for every experiment in the paper's
order, an experiment without an output giving ``not comparable`` placeholders. Nothing here
runs a simulation: the verdicts can be rebuilt from the JSON files alone.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from .gap_claims import judge_gap_limit, judge_gap_within
from .paper_claims import (
    judge_backlog,
    judge_bands,
    judge_batch,
    judge_beta,
    judge_convergence,
    judge_decode_buffer,
    judge_dolly,
    judge_fairness,
    judge_occupancy,
    judge_policies,
    judge_price_ratio,
    judge_queues,
    judge_sli_points,
    judge_tpot,
)
from .verdicts import NOT_COMPARABLE, Claim, face_deviation

__all__ = ["backlog_series", "claims_of", "face_bounds", "judge_all", "level_deviations",
           "load_results"]


def load_results(out: str) -> dict[str, dict]:
    """Every complete experiment output (``*.json`` with ``complete: true``) in ``out``."""
    results = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("complete") and "experiment" in data:
            results[data["experiment"]] = data
    return results


def _missing(ids_statements: Sequence[tuple[str, str, str]], why: str) -> list[Claim]:
    return [Claim(i, f, s, NOT_COMPARABLE, "-", why) for i, f, s in ids_statements]


_PLACEHOLDERS = {
    "fig2_pricing": [("fig2-separate-backlog", "Fig. 2", "Separate pricing (Prioritize-and-Route)"
                      ": the decode backlog persists as n grows."),
                     ("fig2-bundled-backlog", "Fig. 2", "Bundled pricing (Gate-and-Route): the "
                      "decode backlog vanishes as n grows.")],
    "fig4_6_convergence": [
        ("fig4-revenue", "Fig. 4", "Revenue converges to R*."),
        ("fig4-bands", "Fig. 4", "Bands narrow with n."),
        ("fig4-queues", "Fig. 4", "Queues settle at the fluid targets."),
        ("fig4-decode", "Fig. 4", "Decode buffer negligible."),
        ("fig5-x", "Fig. 5", "Greedy router: x converges."),
        ("fig5-y", "Fig. 5", "Greedy router: the y split does not."),
        ("fig6-sli-router", "Fig. 6", "SLI router: x and y converge.")],
    "fig7_policies": [("fig7-gate", "Fig. 7", "The gate alone helps."),
                      ("fig7-planning", "Fig. 7", "Static planning alone can hurt."),
                      ("fig7-best", "Fig. 7", "GG-SP is best with the lowest spread.")],
    "fig8_sli": [("fig8-prefill", "Fig. 8", "Prefill fairness is steep."),
                 ("fig8-decode", "Fig. 8", "Decode fairness is nearly flat."),
                 ("fig8-tpot", "Fig. 8", "TPOT cost explodes as eta_3 -> 1/gamma."),
                 ("fig8-simulated", "Fig. 8", "Simulated points lie on the LP curves.")],
    "fig9_10_sensitivity": [("fig9-batch", "Fig. 9", "Revenue saturates near B = 16."),
                            ("fig9-beta", "Fig. 9", "Revenue is very sensitive to beta."),
                            ("fig10-ratio", "Fig. 10", "Best c_p/c_d the same for every k.")],
    "table1_dolly": [("table1-fit", "Table 1 / EC 14", "Exponential fit of output lengths."),
                     ("table1-gr", "Table 1 / EC 14", "Gate-and-Route attains R* on Dolly.")],
    "gap_map": [("gap-within", "gap map", "At finite n Gate-and-Route earns within 5% of R* "
                 "over Fig. 9's grid (a jaxqueue check)."),
                ("gap-limit", "gap map", "Gate-and-Route's gap closes as n grows at every "
                 "point of Fig. 9's grid.")],
}


def _floats(v) -> np.ndarray:
    """A JSON number or list of numbers as floats, null as NaN."""
    a = np.asarray(v, dtype=object)
    return np.vectorize(lambda u: np.nan if u is None else float(u), otypes=[float])(a)


def _se(pack: dict):
    """Standard error of the mean of a ``{mean, sd, n}`` pack (NaN where it has none)."""
    sd = _floats(pack.get("sd"))
    return sd / math.sqrt(pack["n"]) if pack.get("n") else np.full_like(sd, np.nan)


def face_bounds(face: dict, var: str, class_names) -> tuple[np.ndarray, np.ndarray]:
    """Per-class ``(low, high)`` of one LP variable over the optimal face, from
    :meth:`jaxqueue.fluid.Face.as_dict`."""
    ends = np.array([face["ranges"][var][c] for c in class_names], np.float64)
    return ends[:, 0], ends[:, 1]


def level_deviations(row: dict, face: dict, lp: dict, class_names) -> dict[str, tuple]:
    """The distances of one simulated point (per-class levels, as
    ``experiments.common.per_gpu_summary`` packs them) to the LP's optimal face, each
    ``(distance, standard error)`` (:func:`face_deviation`): ``x`` over ``sum(x*)``, ``y``
    ((y_m, y_s) per class) over ``sum(y_m* + y_s*)``, ``queue`` ((q_p, q_d) per class) over the
    planned total queue, and ``decode``, the total decode queue per GPU itself."""
    def levels(*keys):
        return (np.concatenate([np.asarray(row[k]["mean"], np.float64) for k in keys]),
                np.concatenate([_se(row[k]) for k in keys]))

    def bounds(*names):
        pairs = [face_bounds(face, v, class_names) for v in names]
        return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])

    def total(*names):
        return float(sum(np.sum(lp[v]) for v in names))

    out = {"x": face_deviation(*levels("x"), *bounds("x"), total("x")),
           "y": face_deviation(*levels("y_mixed", "y_solo"), *bounds("y_m", "y_s"),
                               total("y_m", "y_s"))}
    planned = total("q_p", "q_d")
    out["queue"] = (face_deviation(*levels("q_prefill", "q_decode"), *bounds("q_p", "q_d"),
                                   planned) if planned > 0 else (float("nan"), float("nan")))
    if "q_decode_total" in row:
        out["decode"] = (float(row["q_decode_total"]["mean"]), float(_se(row["q_decode_total"])))
    else:  # an output without per-replication totals: the root sum of squares bounds the se
        mean, se = levels("q_decode")
        out["decode"] = (float(np.sum(mean)), float(np.sqrt(np.sum(se**2))))
    return out


def backlog_series(r: dict, policy: str) -> tuple[list, list, list]:
    """Fig. 2's ``(n, total decode queue per GPU, its standard error)`` of one policy over the
    sizes run."""
    gpus, q, se = [], [], []
    for point in r["points"]:
        row = next(x for x in point["rows"] if x["policy"] == policy)["simulated"]
        gpus.append(point["gpus"])
        if "q_decode_total" in row:
            q.append(float(row["q_decode_total"]["mean"]))
            se.append(float(_se(row["q_decode_total"])))
        else:
            q.append(float(np.sum(row["q_decode"]["mean"])))
            se.append(float(np.sqrt(np.sum(_se(row["q_decode"]) ** 2))))
    return gpus, q, se


def claims_of(name: str, r: dict) -> list[Claim]:
    """The claims judged from one experiment's output."""
    if name == "fig2_pricing":
        series = {p: backlog_series(r, p) for p in ("prioritize-and-route", "gate-and-route")}
        least = r["faces"]["prioritize-and-route"]["totals"]["q_d"][0]
        return judge_backlog(*series["prioritize-and-route"], *series["gate-and-route"], least)
    if name == "fig4_6_convergence":
        rstar = r["lp"]["revenue"]
        planned = float(np.sum(r["lp"]["q_p"]) + np.sum(r["lp"]["q_d"]))
        rows = r["series"]["gate-and-route"]["rows"]
        gpus = [row["gpus"] for row in rows]
        dev = [level_deviations(row, r["face"], r["lp"], r["class_names"]) for row in rows]
        gaps = [rstar - row["revenue_bundled"]["mean"] for row in rows]

        def col(devs, key, k):
            return [d[key][k] for d in devs]

        out = [judge_convergence(gpus, gaps, [_se(row["revenue_bundled"]) for row in rows],
                                 rstar),
               judge_bands(gpus, [row["revenue_bundled"]["ci95"] for row in rows]),
               judge_queues(gpus, col(dev, "queue", 0), col(dev, "queue", 1)),
               judge_decode_buffer(gpus, col(dev, "decode", 0), col(dev, "decode", 1),
                                   planned)]
        out += judge_occupancy("Fig. 5", "greedy", gpus, col(dev, "x", 0), col(dev, "x", 1),
                               col(dev, "y", 0), col(dev, "y", 1), expect_y=False)
        sli = r["series"]["sli-gate-and-route"]["rows"]
        dev = [level_deviations(row, r["face"], r["lp"], r["class_names"]) for row in sli]
        out += judge_occupancy("Fig. 6", "SLI-aware", [row["gpus"] for row in sli],
                               col(dev, "x", 0), col(dev, "x", 1), col(dev, "y", 0),
                               col(dev, "y", 1), expect_y=True)
        return out
    if name == "fig7_policies":
        out = []
        for grid in r["grids"]:
            out += judge_policies(grid["gpus"], {p: v["instance_mean"]
                                                 for p, v in grid["policies"].items()})
        return out
    if name == "fig8_sli":
        rstar = r["lp_revenue"]
        curves = r["curves"]
        out = [judge_fairness(k, curves[k]["values"], curves[k]["revenue"], rstar)
               for k in ("prefill_fairness", "decode_fairness")]
        t = curves["tpot"]
        out.append(judge_tpot(t["values"], t["revenue"], t["shadow_price"], rstar,
                              r["inv_gamma"]))
        out.append(judge_sli_points(r["points"]))
        return out
    if name == "fig9_10_sensitivity":
        lines = r["price_lines"]
        return [judge_batch(r["lines"]["B"]["values"], r["lines"]["B"]["revenue"]),
                judge_beta(r["paper_range_sensitivity"]),
                judge_price_ratio(lines["k"], lines["best_ratio"])]
    if name == "table1_dolly":
        sim = r["simulated"]["revenue_bundled"]
        return judge_dolly(r["lp"]["revenue"], sim["mean"], sim["ci95"], r["gpus"])
    if name == "gap_map":
        return [*(judge_gap_within(n, r["points"]) for n in r["gpus"]),
                judge_gap_limit(r["points"], r["gpus"])]
    raise KeyError(f"no judge for experiment {name!r}")


def judge_all(results: dict[str, dict]) -> list[Claim]:
    """Every claim, in the order of the paper's figures; claims of experiments without an output
    are ``not comparable`` (not run)."""
    claims = []
    for name, placeholders in _PLACEHOLDERS.items():
        if name in results:
            claims += claims_of(name, results[name])
        else:
            claims += _missing(placeholders, "not run: no complete output of this experiment")
    return claims
