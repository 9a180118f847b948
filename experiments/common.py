"""What the paper's experiments share: output files written atomically, run metadata, cached
parts (so an interrupted figure resumes), simulation of a list of systems with enough buffer
capacity, per-GPU summaries, and the figures' look.

Every experiment module has ``NAME``, ``FIGURE``, ``TITLE``, ``OUTPUTS`` (the files it writes
under its results folder) and ``main(out=..., quick=..., seed=..., **sizes)``, which writes its
numbers (``NAME.json``, with ``complete: true`` written last) and its PNGs and returns the
numbers. Sizes default to the full run; ``quick=True`` selects the small sizes of
``jaxqueue reproduce --quick``, and any size may be given explicitly.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import jaxqueue  # noqa: E402
from jaxqueue import fluid, policies, stats, sweep  # noqa: E402
from jaxqueue.policies.common import default_capacity  # noqa: E402

__all__ = ["Timer", "cached", "capacity_for", "command_line", "face_dict", "finish", "log",
           "meta", "pack", "per_gpu_summary", "plt", "reps_at", "run_systems", "save_png",
           "side_by_side", "sizes", "write_json"]

#: Colours of the five policies of Sec. 6.3 and the two routers, the same in every figure.
COLORS = {"fi-wsp": "#7f7f7f", "gi-wsp": "#1f77b4", "gf-wsp": "#2ca02c", "fg-sp": "#ff7f0e",
          "gate-and-route": "#d62728", "sli-gate-and-route": "#9467bd",
          "prioritize-and-route": "#8c564b"}
LABELS = {"fi-wsp": "FI-WSP", "gi-wsp": "GI-WSP", "gf-wsp": "GF-WSP", "fg-sp": "FG-SP",
          "gate-and-route": "GG-SP (Gate-and-Route)", "sli-gate-and-route": "SLI-aware G&R",
          "prioritize-and-route": "Prioritize-and-Route"}

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
                     "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
                     "figure.dpi": 110})


def plain_ticks(ax, axis: str = "y") -> None:
    """Plain numbers (not 10^k) as tick labels of a log axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def target_line(ax, xs, value, **kwargs) -> None:
    """A dashed horizontal target across ``xs`` (unlike axhline, it counts for autoscaling)."""
    ax.plot([min(xs), max(xs)], [value, value], ls="--", **kwargs)


def log(message: str) -> None:
    """Progress on stderr (stdout stays free for results)."""
    print(message, file=sys.stderr, flush=True)


class Timer:
    """Wall seconds since creation."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def sizes(quick: bool, full: dict[str, Any], small: dict[str, Any],
          given: dict[str, Any]) -> dict[str, Any]:
    """The sizes of a run: the full or the quick defaults, overridden by those ``given``
    (None means "default"). Unknown names are an error naming them."""
    unknown = sorted(set(given) - set(full))
    if unknown:
        raise TypeError(f"unknown size(s) {unknown}: allowed are {sorted(full)}")
    chosen = dict(small if quick else full)
    chosen.update({k: v for k, v in given.items() if v is not None})
    return chosen


def meta(name: str, figure: str, title: str, *, quick: bool, seed: int,
         settings: dict[str, Any], scenario: str | None, policies_: Sequence[str]) -> dict:
    """The run description every output carries."""
    return {"experiment": name, "figure": figure, "title": title, "quick": bool(quick),
            "seed": int(seed), "settings": settings, "scenario": scenario,
            "policies": list(policies_), "jaxqueue_version": jaxqueue.__version__,
            "jax_version": jax.__version__, "backend": jax.default_backend(),
            "devices": len(jax.devices()),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: str, obj: dict) -> None:
    """Writes ``obj`` as JSON atomically (temporary file, then rename); NaN becomes null."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(jsonable(obj), f, indent=1)
    os.replace(tmp, path)


def finish(out: str, name: str, outputs: Sequence[str], result: dict, timer: Timer) -> dict:
    """Writes an experiment's ``name.json`` into ``out``, marked complete (last, so that an
    interrupted run is never taken for a finished one), and returns it as written."""
    result = jsonable({**result, "outputs": list(outputs), "wall_seconds": timer()})
    result["complete"] = True
    write_json(os.path.join(out, f"{name}.json"), result)
    return result


def save_png(fig, path: str) -> None:
    """Saves a figure atomically and closes it."""
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    os.replace(tmp, path)


def cached(out: str, name: str, settings: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """The result of ``compute()``, stored in ``out/parts/name.json``: reused when a previous
    (interrupted) run stored it with the same ``settings``, so a long figure resumes part by
    part."""
    folder = os.path.join(out, "parts")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    key = jsonable(settings)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if stored.get("settings") == key:
            log(f"    {name}: reused from {path}")
            return stored["value"]
    value = jsonable(compute())
    write_json(path, {"settings": key, "value": value})
    return value


def pack(values) -> dict[str, Any]:
    """``{mean, ci95, sd, n}`` of per-replication values (95% t-interval)."""
    values = np.asarray(values, np.float64)
    mean, ci = stats.mean_ci(values)
    sd = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.full_like(mean, np.nan)
    return {"mean": mean, "ci95": ci, "sd": sd, "n": int(values.shape[0])}


def per_gpu_summary(run, model, n: int) -> dict[str, Any]:
    """Per-GPU revenue (both pricings) and per-class levels, each ``{mean, ci95, sd, n}``, plus
    the per-replication bundled and separate revenues."""
    q = stats.per_gpu(run, model, n)
    keys = ("x", "y_mixed", "y_solo", "q_prefill", "q_decode", "completion_rate",
            "prefill_abandonment_rate", "decode_abandonment_rate")
    return {"revenue_bundled": pack(q["revenue_bundled"]),
            "revenue_separate": pack(q["revenue_separate"]),
            "revenue_bundled_reps": q["revenue_bundled"],
            "revenue_separate_reps": q["revenue_separate"],
            **{k: pack(q[k]) for k in keys},
            # Totals over the classes per replication: their standard errors need the
            # replications (classes covary).
            "q_prefill_total": pack(np.sum(q["q_prefill"], axis=-1)),
            "q_decode_total": pack(np.sum(q["q_decode"], axis=-1)),
            "events": run.events, "wall_seconds": run.wall_seconds,
            "compile_seconds": run.compile_seconds}


def plan_dict(plan: fluid.Plan) -> dict[str, Any]:
    """A plan's revenue and per-class quantities (lists)."""
    return {"pricing": plan.pricing, "revenue": plan.revenue, "x": plan.x, "y_m": plan.y_m,
            "y_s": plan.y_s, "q_p": plan.q_p, "q_d": plan.q_d, "sli": plan.sli,
            "mixed_fraction": plan.sum_x}


def reps_at(n: int, reps: int, up_to: int | None) -> int:
    """Replications at n GPUs: ``reps`` up to ``up_to`` GPUs, then ``reps * up_to / n``
    (rounded up, at least 4), so that a size costs no more events than ``up_to`` until the floor
    of 4. A per-GPU average over n GPUs has a variance of order 1/n, so the larger sizes stay
    as precise per GPU as the one at ``up_to``."""
    if up_to is None or n <= up_to:
        return int(reps)
    return int(max(min(reps, 4), math.ceil(reps * up_to / n)))


def face_dict(model, pricing: str) -> dict[str, Any]:
    """The LP's optimal face (``fluid.face(...).as_dict()``): every variable's range over the
    optimal plans, which the report judges planned quantities against."""
    return fluid.face(model, pricing).as_dict()


def capacity_for(n: int, plans: Sequence[fluid.Plan]) -> int:
    """FCFS ring slots for n GPUs: a power of two above the default and above twice the
    largest planned queue (prefill plus decode, all classes) of any of ``plans``, so that the
    points of one stack share one capacity (one structure). A ring also holds abandoned jobs not
    yet discarded, and a policy may queue more than the plan: an overflow reruns with twice the
    capacity (:func:`run_systems`), never truncates."""
    queue = max(float(np.sum(p.q_p) + np.sum(p.q_d)) for p in plans)
    need = max(default_capacity(n), int(2 * n * queue) + 64)
    return int(2 ** math.ceil(math.log2(need)))


def run_systems(name: str, build: Callable[[int | None], list], *, seed: int, reps: int,
                horizon: float, warmup: float, capacity: int | None = None
                ) -> tuple[list, int | None]:
    """``simulate_many`` of the systems ``build(capacity)`` returns, on every device, with the
    seed's key for every point (common random numbers). A buffer overflow reruns only the
    replications that overflowed, with a larger buffer (``simulate_many`` does it and the
    result is the one a large enough buffer gives); each rerun is logged. Returns the runs and
    the largest capacity used (None for systems without buffers)."""
    timer = Timer()
    systems = build(capacity)
    runs = sweep.simulate_many(jax.random.key(seed), systems, reps=reps, horizon=horizon,
                               warmup=warmup, devices=run_devices(),
                               notify=lambda line: log(f"    {name}: {line}"))
    events = sum(r.events for r in runs)
    log(f"    {name}: {len(systems)} point(s) x {reps} reps, {events:,} events, "
        f"{timer():.0f} s")
    used = [r.buffer_capacity for r in runs if r.buffer_capacity is not None]
    return runs, (max(used) if used else capacity)


_thread = threading.local()


def run_devices() -> list:
    """The devices a run started in this thread uses: all of them, or inside
    :func:`side_by_side` the one device its task was given."""
    return getattr(_thread, "devices", None) or jax.devices()


def side_by_side(tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """Runs the callables ``tasks`` at the same time, each on one device (a thread per device,
    taking the tasks in the order given: put the longest first), and returns their results in
    order.

    A run of few replications is latency-bound: its step's kernels run one after another
    however many lanes each has, so sharding 4 replications over two CPU devices hardly
    shortens it. Two such runs side by side, one per device, slow each other but still finish
    sooner (n = 5,000, 4 replications, two policies on the 2-core CPU: 14.7 s side by side,
    17.7 s one after the other sharded, 19.7 s one after the other on one device). A run's
    numbers do not depend on its devices, so the results are the same bit for bit. A Ctrl-C
    stops the tasks not yet started; those running finish and are kept (their parts are stored
    as they end)."""
    devices = jax.devices()
    if len(devices) < 2 or len(tasks) < 2:
        return [task() for task in tasks]
    free = list(devices)
    lock = threading.Lock()

    def bind():
        with lock:
            _thread.devices = [free.pop()]

    pool = ThreadPoolExecutor(max_workers=min(len(devices), len(tasks)), initializer=bind)
    try:
        futures = [pool.submit(task) for task in tasks]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def engine_build(name: str, model, n: int, *, engine: str | None = None, plan=None,
                 capacity: int | None = None, sli=None):
    """``policies.build`` with a capacity only for the systems that have FCFS rings."""
    spec = policies.resolve(name)
    kwargs = {} if spec.router == "sli" else {"capacity": capacity}
    return policies.build(name, model, n, engine=engine, plan=plan, sli=sli, **kwargs)


def command_line(doc: str, main: Callable[..., Any]) -> None:
    """Runs an experiment module as a script: ``--quick``, ``--out`` and ``--seed``, each with
    its help and default; the description is the module docstring's first paragraph."""
    import argparse

    description = " ".join(doc.strip().split("\n\n")[0].split())
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="the small sizes of jaxqueue reproduce --quick (minutes on a CPU)")
    p.add_argument("--out", default="results",
                   help="results folder: the JSON numbers and PNGs go there; finished parts "
                        "found there are reused")
    p.add_argument("--seed", type=int, default=0, help="random seed of the simulations")
    a = p.parse_args()
    main(out=a.out, quick=a.quick, seed=a.seed)
