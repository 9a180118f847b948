"""The truth for the gradient benchmark: per-coordinate common-random-number central differences
of a smoothed policy family's expected objective, with as many replications as it takes.

    python scripts/gradient_truth.py --case qwen-gated-20          # one case (resumable)
    python scripts/gradient_truth.py --all                         # every case, in turn
    python scripts/gradient_truth.py --report                      # print what is stored
    python scripts/gradient_truth.py --case qwen-gated-20 --json FILE   # ... and write it
    python scripts/gradient_truth.py --case dolly-gated-20 --store DIR  # batches under DIR
    python scripts/gradient_truth.py --case dolly-gated-100-gate --max-seconds 500  # in time

Several processes may run the same case at once (one per core, or per machine sharing the
store): each claims the lowest batch that is neither stored nor claimed by a live process.

Cases (``--list``): ``paper-qwen8b`` with the ``gated`` family (7 parameters) at its best start
(the LP point ranking classes after admission, offset 1) and with ``sli-gated`` (4 parameters) at
its LP point with class 1's split moved from 1 to 0.9 (inside its range), and ``dolly-8class``
with ``gated`` (19 parameters), each at n = 20 and n = 100 (and at n = 100 with steps h/2 and
h/4, the ``-fine`` cases, and h/4 and h/8, the ``-finer`` cases; ``qwen-gated-100`` with a
step per coordinate, the ``-coord`` case; ``dolly-gated-100`` with the gate-capped steps, the
``-gate`` case); every family smoothed (a gate temperature, dithered
thresholds; see :func:`jaxqueue.policies.tunable.build_family`), bundled revenue per GPU per
second over (200 s, 1000 s].

For each coordinate i the runs are the point moved by +-h_i and by +-h_i / 2 (h_i its difference
step, :func:`jaxqueue.objective.difference_steps`), all configurations in one vmapped batch with
common random numbers, ``--batch`` replications at a time. After each batch the per-replication
objectives are written to ``STORE/gradient_truth/CASE/batch_K.npz`` (``--store``, ``results`` by
default), with the batch's events, seconds and machine: an interrupted run loses at most one
batch and continues where it stopped. Each batch runs on its own key (its index folded into the
case's), so batches of different sizes (a CPU's small ones, a GPU's large ones) join freely.
The truth is accepted once every coordinate's standard error is below ``0.1 ||g|| / sqrt(p)``
and the two step sizes agree within 2 standard errors on every coordinate (``--max-reps`` caps
the effort; the report says whether it was accepted).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxqueue import fluid, scenarios  # noqa: E402
from jaxqueue.objective import (  # noqa: E402
    Problem,
    difference_steps,
    from_free,
    measure,
    to_free,
)
from jaxqueue.policies import tunable  # noqa: E402
from jaxqueue.sweep import simulate_many  # noqa: E402

OUT = ROOT / "results" / "gradient_truth"
HORIZON, WARMUP = 1000.0, 200.0
TEMPERATURE = 20.0

CASES = {f"{tag}-{n}": (scenario, family, n)
         for tag, scenario, family in (("qwen-gated", "paper-qwen8b", "gated"),
                                       ("qwen-sli", "paper-qwen8b", "sli-gated"),
                                       ("dolly-gated", "dolly-8class", "gated"))
         for n in (20, 100)}
#: At n = 100 the expected objective bends within one difference step (the secants over +-h
#: and +-h/2 disagree): the ``-fine`` cases take steps h/2 and h/4 instead, the ``-finer``
#: cases h/4 and h/8.
SCALES = {"fine": 0.5, "finer": 0.25}
CASES.update({f"{name}-{tag}": case for name, case in list(CASES.items()) if case[2] == 100
              for tag in SCALES})
#: A step per coordinate, as a fraction per field or per entry of a field (the fields not named
#: keep h and h/2): the ``-coord`` cases. For ``qwen-gated-100``: class 1's gate target bends on
#: a scale far below its natural step (at n = 100 the target is about two jobs, and the gate key
#: moves by about 110 per unit of log target against a temperature of 20), class 2's (about 20
#: jobs) and the offset less, while the rounded share needs no smaller step than half a GPU (its
#: dithered objective is quadratic there) and a smaller one only adds noise.
COORD_SCALES = {"qwen-gated-100": {"targets": (1 / 16, 1 / 4), "offset": 1 / 4}}
CASES.update({f"{name}-coord": CASES[name] for name in COORD_SCALES})
#: Steps from the gate's temperature instead (the ``-gate`` cases): the gate targets' and
#: offset's steps capped so that one moves a class's gate logit by at most 0.5 at the planned
#: occupancy (:func:`jaxqueue.objective.difference_steps` with ``gate=True``), the rest natural.
#: A rule fixed before this case's first run, not fitted to its secants: on ``dolly-gated-100``
#: it takes class steps of 0.03-0.2 h and an offset step of 0.06 h.
GATE_CASES = ("dolly-gated-100",)
CASES.update({f"{name}-gate": CASES[name] for name in GATE_CASES})


def step_scale(name: str) -> float | dict | str:
    """The case's steps as a fraction of the difference steps: 1, one of :data:`SCALES`, a
    fraction per field or per entry of a field (:data:`COORD_SCALES`; 1 for a field not
    named), or ``"gate"``: the gate-capped steps (:data:`GATE_CASES`)."""
    base, _, tag = name.rpartition("-")
    if tag == "gate":
        return "gate"
    return COORD_SCALES[base] if tag == "coord" else SCALES.get(tag, 1.0)


def use_store(store: str | Path) -> None:
    """Keep the truths under ``store/gradient_truth`` (the benchmark reads them from there)."""
    global OUT
    OUT = Path(store).resolve() / "gradient_truth"


def case_problem(name: str, reps: int = 256) -> tuple[Problem, object]:
    """The smoothed problem of a case and the parameters at which its gradient is taken."""
    scenario, family, n = CASES[name]
    model = scenarios.load(scenario)
    plan = fluid.solve(model, "bundled")
    problem = Problem(family=family, model=model, n=n, plan=plan, horizon=HORIZON,
                      warmup=WARMUP, reps=reps, gate_temperature=TEMPERATURE)
    params = tunable.initial_params(family, model, n, plan)
    if family == "gated":
        params = dataclasses.replace(params, offset=np.float64(1.0))
    else:  # the LP sends every class-1 decode to the solo side (split 1, a boundary, where only
        # a one-sided derivative exists): take the gradient inside, at split 0.9
        params = dataclasses.replace(params, split=np.minimum(params.split, 0.9))
    return problem, params


def configurations(problem: Problem, params, step: float | dict | str = 1.0):
    """The base point, then for each coordinate +h, -h, +h/2, -h/2 (free coordinates; h the
    difference step times ``step``, a number, or a number or sequence per field; for
    ``"gate"`` the gate-capped difference step), and the actual widths of the two differences
    (after projection onto the parameter ranges)."""
    free = to_free(jax.tree.map(jnp.asarray, params))
    flat, unravel = ravel_pytree(free)
    flat = np.asarray(flat, np.float64)
    steps = difference_steps(problem, params, gate=step == "gate")
    if step == "gate":
        step = 1.0
    if isinstance(step, dict):
        steps = dataclasses.replace(steps, **{
            f.name: np.asarray(step.get(f.name, 1.0)) * np.asarray(getattr(steps, f.name))
            for f in dataclasses.fields(steps)})
        step = 1.0
    h = step * np.asarray(ravel_pytree(steps)[0])

    def project(x):
        return np.asarray(ravel_pytree(to_free(from_free(unravel(jnp.asarray(x)))))[0])

    points, widths = [flat], []
    for i in range(flat.size):
        row = []
        for scale in (1.0, 0.5):
            up, down = flat.copy(), flat.copy()
            up[i] += scale * h[i]
            down[i] -= scale * h[i]
            up, down = project(up), project(down)
            points += [up, down]
            row.append(up[i] - down[i])
        widths.append(row)
    return points, np.asarray(widths), unravel


def run_batch(problem: Problem, points, unravel, batch: int, reps: int):
    """Objectives ``(configurations, reps)`` of ``reps`` replications on batch ``batch``'s own
    key (common random numbers: every configuration uses the same replication ids; batches of
    any sizes are independent of each other), their events, and the ring
    capacity the results hold for (grown from the problem's where a ring overflowed)."""
    systems = [problem.system(jax.tree.map(np.asarray, from_free(unravel(jnp.asarray(p)))))
               for p in points]
    key = jax.random.fold_in(jax.random.key(20261203), batch)
    runs = simulate_many(key, systems, reps=reps, horizon=problem.horizon,
                         warmup=problem.warmup)
    return (np.stack([measure(r, problem.model, problem.n, problem.pricing)["objective"]
                      for r in runs]), sum(r.events for r in runs),
            max((r.buffer_capacity or 0) for r in runs))


def load(name: str):
    """Every stored batch of a case (in batch order, gaps allowed: batches are independent), its
    meta, and the totals of events and seconds over the batches."""
    folder = OUT / name
    files = sorted(folder.glob("batch_*.npz"), key=lambda f: int(f.stem.split("_")[1]))
    stored = [np.load(f) for f in files]
    values = [b["values"] for b in stored]
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
    if stored and "events" in stored[0]:  # batches that carry their own totals
        meta = {**meta, "events": int(sum(int(b["events"]) for b in stored)),
                "seconds": float(sum(float(b["seconds"]) for b in stored)),
                "machines": sorted({str(b["machine"]) for b in stored})}
    return (np.concatenate(values, axis=1) if values else None), meta


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(folder: Path) -> int:
    """The lowest batch neither stored nor claimed by a live process here, claimed for this one
    (a claim is ``batch_K.claim`` holding host and pid; a dead process's claim is taken over)."""
    me = f"{socket.gethostname()} {os.getpid()}"
    batch = 0
    while True:
        if (folder / f"batch_{batch}.npz").exists():
            batch += 1
            continue
        f = folder / f"batch_{batch}.claim"
        try:
            fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            host, _, pid = f.read_text().partition(" ")
            if host == socket.gethostname() and pid.strip().isdigit() and not _alive(int(pid)):
                f.unlink(missing_ok=True)  # its process is gone: try again
                continue
            batch += 1
            continue
        with os.fdopen(fd, "w") as out:
            out.write(me)
        return batch


def summarize(values: np.ndarray, widths: np.ndarray) -> dict:
    """The truth and its checks from per-replication objectives ``(1 + 4p, R)``."""
    p = widths.shape[0]
    g, se, g2, se2, gr, ser, paired = (np.zeros(p) for _ in range(7))
    for i in range(p):
        d1 = (values[1 + 4 * i] - values[2 + 4 * i]) / widths[i, 0]
        d2 = (values[3 + 4 * i] - values[4 + 4 * i]) / widths[i, 1]
        g[i], se[i] = d1.mean(), d1.std(ddof=1) / np.sqrt(d1.size)
        g2[i], se2[i] = d2.mean(), d2.std(ddof=1) / np.sqrt(d2.size)
        # Richardson's extrapolation cancels the h^2 term of a smooth objective; per
        # replication, so that its error counts the two differences' correlation
        r = (4 * d2 - d1) / 3
        gr[i], ser[i] = r.mean(), r.std(ddof=1) / np.sqrt(r.size)
        # the two secants' distance in the standard error of their paired difference (the same
        # replications): stricter than the acceptance test, which takes them as independent
        d = d1 - d2
        sd = d.std(ddof=1) / np.sqrt(d.size)
        paired[i] = abs(d.mean()) / sd if sd > 0 else 0.0
    norm = float(np.linalg.norm(g))
    precise = bool(np.all(se < 0.1 * norm / np.sqrt(p)))
    agree = np.abs(g - g2) <= 2 * np.sqrt(se**2 + se2**2)
    return {"grad": g.tolist(), "se": se.tolist(), "grad_half": g2.tolist(),
            "se_half": se2.tolist(), "richardson": gr.tolist(), "se_richardson": ser.tolist(),
            "paired_z": paired.tolist(),
            "reps": int(values.shape[1]), "norm": norm,
            "precise": precise, "steps_agree": bool(np.all(agree)),
            "accepted": precise and bool(np.all(agree)),
            "value": float(values[0].mean()), "value_se": float(values[0].std(ddof=1)
                                                                  / np.sqrt(values.shape[1]))}


def run_case(name: str, batch_reps: int, min_reps: int, max_reps: int,
             deadline: float = float("inf")) -> dict | None:
    """Runs batches of a case until its truth is accepted or ``max_reps`` are stored (then
    writes and returns the truth), or until ``deadline`` (a ``time.perf_counter()`` reading)
    has passed before a batch starts (then returns None: the stored batches stay)."""
    problem, params = case_problem(name)
    points, widths, unravel = configurations(problem, params, step_scale(name))
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    meta_file = folder / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {
        "case": name, "scenario": CASES[name][0], "family": CASES[name][1], "n": CASES[name][2],
        "step_scale": step_scale(name),
        "temperature": TEMPERATURE, "horizon": HORIZON, "warmup": WARMUP,
        "params": {k: np.asarray(v).tolist() for k, v in dataclasses.asdict(params).items()},
        "batch_reps": batch_reps, "events": 0, "seconds": 0.0}
    # Batches may differ in size (a CPU's small ones, a GPU's large ones): each has its own key
    # (its index folded into the case's), so any mix of them is independent replications.
    # meta["batch_reps"] is the first run's size; the batches' files hold their own.

    def write_meta():
        tmp = folder / f"meta.json.{os.getpid()}"  # a second process may be writing it too
        tmp.write_text(json.dumps(meta, indent=1))
        tmp.rename(meta_file)

    write_meta()
    if meta.get("capacity"):  # rings grown in an earlier batch: start there (same paths)
        problem = dataclasses.replace(problem, capacity=int(meta["capacity"]))
    while True:
        values, totals = load(name)
        done = 0 if values is None else values.shape[1]
        if values is not None and done >= min_reps:
            s = summarize(values, widths)
            if s["accepted"] or done >= max_reps:
                s.update({"events": totals["events"], "seconds": totals["seconds"],
                          "configurations": len(points)})
                (folder / "truth.json").write_text(json.dumps({**totals, **s}, indent=1))
                return s
        if time.perf_counter() > deadline:
            return None
        batch = claim(folder)
        start = time.perf_counter()
        out, events, capacity = run_batch(problem, points, unravel, batch, batch_reps)
        if capacity > (problem.capacity or 0):
            # A ring overflowed and the batch was rerun with larger ones (the results are those
            # of large enough rings): later batches start with them instead of rerunning too.
            problem = dataclasses.replace(problem, capacity=capacity)
            meta["capacity"] = capacity
            write_meta()
        np.savez(folder / f"batch_{batch}.npz.tmp.npz", values=out, events=int(events),
                 seconds=time.perf_counter() - start,
                 machine=f"{jax.devices()[0].device_kind}, JAX {jax.__version__}")
        (folder / f"batch_{batch}.npz.tmp.npz").rename(folder / f"batch_{batch}.npz")
        (folder / f"batch_{batch}.claim").unlink(missing_ok=True)
        print(f"{name}: batch {batch} done ({done + out.shape[1]} replications stored, "
              f"{time.perf_counter() - start:.0f} s)", flush=True)


def report() -> None:
    for name in CASES:
        f = OUT / name / "truth.json"
        values, meta = load(name)
        if not f.exists():
            print(f"{name}: {0 if values is None else values.shape[1]} replications so far")
            if values is not None and values.shape[1] >= 2 * meta.get("batch_reps", 1):
                _progress(name, values)
            continue
        t = json.loads(f.read_text())
        print(f"{name}: {t['reps']} reps, accepted {t['accepted']} (precise {t['precise']}, "
              f"h vs h/2 agree {t['steps_agree']}), |g| = {t['norm']:.4g}, value "
              f"{t['value']:.3f} ± {t['value_se']:.2g}, {t['events']:.3g} events, "
              f"{t['seconds'] / 60:.0f} min")
        print("   g    = " + " ".join(f"{v:+.4g}" for v in t["grad"]))
        print("   se   = " + " ".join(f"{v:.2g}" for v in t["se"]))
        print("   g h/2= " + " ".join(f"{v:+.4g}" for v in t["grad_half"]))


def _progress(name: str, values: np.ndarray) -> None:
    """Where an unfinished truth stands: the checks so far, and the replications its least
    precise coordinate needs (standard errors falling as 1 / sqrt(replications))."""
    problem, params = case_problem(name)
    _, widths, _ = configurations(problem, params, step_scale(name))
    s = summarize(values, widths)
    se, p = np.asarray(s["se"]), len(s["se"])
    bar = 0.1 * s["norm"] / np.sqrt(p)
    worst = int(np.argmax(se))
    need = int(np.ceil(s["reps"] * (se[worst] / bar) ** 2)) if bar > 0 else None
    apart = np.abs(np.subtract(s["grad"], s["grad_half"])) > 2 * np.hypot(se, s["se_half"])
    print(f"   so far: |g| = {s['norm']:.4g}; the widest standard error {se[worst]:.3g} "
          f"(coordinate {worst + 1} of {p}) against {bar:.3g} -> about {need:,} replications in "
          f"all; h and h/2 more than 2 SE apart on {int(apart.sum())} of {p} coordinates")


def write_json(path: str, cases: list[str]) -> None:
    """The stored truths of ``cases`` as one JSON object, with the names of the coordinates."""
    out = {}
    for name in cases:
        t = json.loads((OUT / name / "truth.json").read_text())
        problem, params = case_problem(name)
        t["coordinates"] = coordinate_names(params)
        t["machine"] = "; ".join(t.pop("machines", []))  # where its batches ran
        out[name] = t
    Path(path).write_text(json.dumps(out, indent=1))


def coordinate_names(params) -> list[str]:
    """The tuned coordinates in their flat order: log targets, then the rest, with a class
    number where a field has one entry per class."""
    label = {"targets": "log t{}", "split": "split {}", "caps": "cap {}"}
    names = []
    for f in dataclasses.fields(params):
        size = int(np.size(getattr(params, f.name)))
        names += ([label[f.name].format(i + 1) for i in range(size)] if f.name in label
                  else [f.name])
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", action="append", choices=list(CASES), help="a case (repeatable)")
    p.add_argument("--all", action="store_true", help="every case, in turn")
    p.add_argument("--list", action="store_true", help="list the cases")
    p.add_argument("--report", action="store_true", help="print the stored truths")
    p.add_argument("--batch", type=int, default=256, help="replications per batch")
    p.add_argument("--min-reps", type=int, default=2048, help="replications before a check")
    p.add_argument("--max-reps", type=int, default=8192, help="stop here even if not accepted")
    p.add_argument("--max-seconds", type=float, default=None, metavar="S",
                   help="start no batch after S seconds (wall) of this call: a run that must "
                        "end in time (a lent device) keeps what it stored")
    p.add_argument("--json", metavar="FILE",
                   help="write the truths of the cases (with --report: every stored one) to FILE")
    p.add_argument("--store", metavar="DIR", default=str(ROOT / "results"),
                   help="where the batches live, under DIR/gradient_truth (default: results)")
    a = p.parse_args()
    use_store(a.store)
    if a.list:
        for k, v in CASES.items():
            print(k, *v)
        return
    if a.report:
        report()
        if a.json:
            write_json(a.json, a.case or [c for c in CASES if (OUT / c / "truth.json").exists()])
        return
    cases = list(CASES) if a.all else (a.case or [])
    if not cases:
        p.error("give --case NAME, --all, --list or --report")
    deadline = time.perf_counter() + (a.max_seconds if a.max_seconds is not None
                                      else float("inf"))
    for name in cases:
        s = run_case(name, a.batch, a.min_reps, a.max_reps, deadline)
        if s is None:
            values, _ = load(name)
            stored = 0 if values is None else values.shape[1]
            print(f"{name}: stopped at --max-seconds with {stored} replications "
                  "stored (run the same command again to go on)", flush=True)
            break
        print(f"{name}: accepted {s['accepted']} after {s['reps']} replications; "
              f"g = {np.round(s['grad'], 4).tolist()}", flush=True)
    if a.json:
        write_json(a.json, cases)


if __name__ == "__main__":
    main()
