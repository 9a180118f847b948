"""Runs the paper's experiments (all or some) and writes REPORT.md with a verdict on each claim.

    PYTHONPATH=. python experiments/reproduce.py [--quick] [--only NAME ...] [--out DIR]

(or ``jaxqueue reproduce ...``, the same). An experiment whose outputs in ``DIR`` are complete
(its JSON says ``complete: true``, was made in the same mode with the same seed, and every file
it lists exists) is skipped, so an interrupted run resumes where it stopped; within a long
experiment, finished parts (``DIR/parts``) are reused too. Every file is written atomically.
``--force`` reruns everything. The report is rebuilt from all complete outputs in ``DIR``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections.abc import Sequence

from experiments import common

#: Experiment name -> module (in the paper's order).
EXPERIMENTS = {
    "fig2": "fig2_pricing",
    "fig4-6": "fig4_6_convergence",
    "fig7": "fig7_policies",
    "fig8": "fig8_sli",
    "fig9-10": "fig9_10_sensitivity",
    "table1": "table1_dolly",
    "gap": "gap_map",  # beyond the paper: the finite-n gap over Fig. 9's grid
}


def module(name: str):
    """The experiment module called ``name`` (a key of :data:`EXPERIMENTS`)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment {name!r} is unknown: must be one of "
                         f"{', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"experiments.{EXPERIMENTS[name]}")


def complete(mod, out: str, quick: bool, seed: int, given: dict | None = None) -> bool:
    """Whether ``mod``'s outputs in ``out`` are complete and from a run with the same mode, seed
    and sizes (``given`` overrides the mode's defaults)."""
    wanted = common.jsonable(common.sizes(quick, mod.FULL, mod.QUICK, dict(given or {})))
    path = os.path.join(out, f"{mod.NAME}.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return (bool(data.get("complete")) and data.get("quick") == bool(quick)
            and data.get("seed") == int(seed) and data.get("settings") == wanted
            and all(os.path.exists(os.path.join(out, o)) for o in mod.OUTPUTS))


def main(out: str = "results", quick: bool = False, only: Sequence[str] | None = None,
         seed: int = 0, force: bool = False, sizes: dict[str, dict] | None = None) -> dict:
    """Runs the experiments ``only`` (default all) into ``out`` and writes ``out/REPORT.md``.

    ``sizes`` maps an experiment name to sizes overriding its mode's defaults (e.g. tiny runs in
    tests).

    Returns ``{"report": path, "claims": [...], "timings": {name: seconds}, "skipped": [...]}``.
    """
    from jaxqueue import report

    names = list(EXPERIMENTS) if not only else list(dict.fromkeys(only))
    mods = {name: module(name) for name in names}  # unknown names fail before any work
    os.makedirs(out, exist_ok=True)
    timings, skipped = {}, []
    total = common.Timer()
    for k, (name, mod) in enumerate(mods.items(), start=1):
        given = (sizes or {}).get(name, {})
        if not force and complete(mod, out, quick, seed, given):
            common.log(f"[{k}/{len(mods)}] {name} ({mod.FIGURE}): complete in {out}, skipped")
            skipped.append(name)
            continue
        common.log(f"[{k}/{len(mods)}] {name} ({mod.FIGURE}): {mod.TITLE} ...")
        timer = common.Timer()
        mod.main(out=out, quick=quick, seed=seed, **given)
        timings[name] = timer()
        common.log(f"[{k}/{len(mods)}] {name} done in {timings[name]:.0f} s "
                   f"(total {total():.0f} s)")
    path, claims = report.write(out, timings=timings or None)
    common.log(f"report: {path} ({sum(c.verdict == report.HOLDS for c in claims)} hold, "
               f"{sum(c.verdict == report.FAILS for c in claims)} do not hold, "
               f"{sum(c.verdict == report.INCONCLUSIVE for c in claims)} inconclusive, "
               f"{sum(c.verdict == report.NOT_COMPARABLE for c in claims)} not comparable); "
               f"total {total():.0f} s")
    return {"report": path, "claims": claims, "timings": timings, "skipped": skipped}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), default=None)
    p.add_argument("--out", default="results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    a = p.parse_args()
    main(out=a.out, quick=a.quick, only=a.only, seed=a.seed, force=a.force)
