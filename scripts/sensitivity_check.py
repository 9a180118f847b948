"""Simulated revenue derivatives against the fluid LP's on the paper's instance, with a verdict.

Runs :func:`jaxqueue.sensitivity.sensitivities` for Gate-and-Route on ``paper-qwen8b`` at each
n of ``--gpus`` and prints, for each parameter, the simulated derivative of the revenue per GPU
per second with its 95% interval, the LP's derivative, and whether they agree: |simulated - LP|
times the parameter's scale (its |value|) is at most 10% of the largest |LP derivative| times
scale (derivatives of different units compared as revenue per 100% change of the parameter;
docs/sensitivity.md). The LP value is the n -> infinity limit of the per-GPU revenue, so at
finite n the criterion measures how far the finite system's sensitivities are from the fluid's.

    nice -n 10 python scripts/sensitivity_check.py --gpus 2000 --reps 32 --horizon 600 --warmup 150

(the defaults; 16 minutes on the 2-core development CPU, docs/sensitivity.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

#: The share of the largest scaled LP derivative within which a row agrees.
TOLERANCE = 0.10


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="paper-qwen8b", help="built-in name or TOML file")
    p.add_argument("--policy", default="gate-and-route", help="a policy name")
    p.add_argument("--gpus", type=int, nargs="+", default=[2000], help="the numbers of GPUs n")
    p.add_argument("--reps", type=int, default=32, help="replications of every system")
    p.add_argument("--horizon", type=float, default=600.0, help="simulated time, model s")
    p.add_argument("--warmup", type=float, default=150.0, help="discarded time, model s")
    p.add_argument("--rel-step", type=float, default=0.05, help="relative step of the "
                   "central differences")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--replan", action="store_true", help="re-solve the plan at every point")
    p.add_argument("--out", default=None, help="also write the results (JSON) to this file")
    args = p.parse_args()

    # One CPU device per core before JAX starts (as the CLI does), unless XLA_FLAGS says so.
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count="
                                   f"{len(os.sched_getaffinity(0))}")
    import jax

    from jaxqueue import scenarios, sensitivity

    model = scenarios.load(args.scenario)
    results = {}
    failures = 0
    for n in args.gpus:
        est, systems = sensitivity.estimate(model, n, policy=args.policy, reps=args.reps,
                                            horizon=args.horizon, rel_step=args.rel_step,
                                            replan=args.replan, devices=jax.devices())
        print(f"n = {n}: {systems} systems x {args.reps} replications, estimated "
              f"{est.seconds / 60:.1f} min (pessimistic) on {len(jax.devices())} devices",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        out = sensitivity.sensitivities(
            jax.random.key(args.seed), model, n, policy=args.policy, reps=args.reps,
            horizon=args.horizon, warmup=args.warmup, rel_step=args.rel_step,
            replan=args.replan, devices=jax.devices(),
            progress=f"n = {n}" if sys.stderr.isatty() else None)
        wall = time.perf_counter() - start
        largest = out["largest_lp"]["value"]
        print(f"\n{out['scenario']} / {out['policy']}, n = {n} GPUs (M = {out['mixed_gpus']}), "
              f"{args.reps} replications, horizon {args.horizon:g} s, warm-up {args.warmup:g} s, "
              f"step {100 * args.rel_step:g}%, seed {args.seed}; plan {out['plan']}")
        print(f"revenue per GPU {out['revenue_per_gpu']['mean']:.3f} ± "
              f"{out['revenue_per_gpu']['ci95']:.2g} (LP {out['lp_revenue']:.3f}); criterion: "
              f"|sim - LP| x scale <= {TOLERANCE:.0%} of {largest:.4g} "
              f"({out['largest_lp']['name']})")
        print(f"{'parameter':<10}{'value':>10}{'simulated ± 95% CI':>26}{'LP central':>13}"
              f"{'LP secant':>13}{'gap':>8}  agree")
        for r in out["parameters"]:
            sim, lp = r["simulated"], r["lp"]
            agree = abs(r["gap"]) <= TOLERANCE
            failures += not agree
            cell = f"{sim['mean']:.5g} ± {sim['ci95']:.2g}"
            kink = "*" if lp["kink"] else " "
            print(f"{r['name']:<10}{r['value']:>10.4g}{cell:>26}{lp['central']:>12.5g}{kink}"
                  f"{lp['secant']:>13.5g}{100 * r['gap']:>+7.1f}%  {'yes' if agree else 'NO'}")
        print("one-sided simulated differences (left = (R(v) - R(v-h))/h, right = (R(v+h) - "
              "R(v))/h):")
        for r in out["parameters"]:
            sides = r["simulated_one_sided"]
            if sides["right"] is None:
                continue
            left = (f"{sides['left']['mean']:.5g} ± {sides['left']['ci95']:.2g}"
                    if sides["left"] else "-")
            print(f"  {r['name']:<10} left {left:<22} right {sides['right']['mean']:.5g} ± "
                  f"{sides['right']['ci95']:.2g}   (LP left "
                  f"{'-' if r['lp']['left'] is None else format(r['lp']['left'], '.5g')}, "
                  f"right {r['lp']['right']:.5g})")
        gv = out["gpu_value"]
        print(f"one more GPU {gv['one_more']['mean']:+.1f} ± {gv['one_more']['ci95']:.2g}, one "
              f"fewer {-gv['one_fewer']['mean']:+.1f} ± {gv['one_fewer']['ci95']:.2g} per second "
              f"(LP: {gv['lp']:.3f}); M at n-1, n, n+1: "
              f"{', '.join(str(v) for v in gv['mixed_gpus'].values())}")
        print(f"wall {wall:.0f} s ({out['compile_seconds']:.0f} s compiling), "
              f"{out['events']:,} events", flush=True)
        results[str(n)] = {**out, "wall_seconds_total": wall}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, default=float)
    print(f"\n{'all agree' if not failures else f'{failures} rows disagree'} within "
          f"{TOLERANCE:.0%} of the largest scaled LP derivative")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
