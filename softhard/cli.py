"""The `softhard` command.

    softhard                 a temperature sweep of the Table 2 example (= `softhard demo`)
    softhard demo [--offset B] [--n N] [--taus ...] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _device_note() -> str:
    import jax

    devs = jax.devices()
    return f"{devs[0].platform} x{len(devs)} ({devs[0].device_kind})"


def _demo(args) -> int:
    import jax
    import jax.numpy as jnp

    from .diagnostics import table2_setup
    from .risk import risk_sweep
    from .routing import logits, top_two_margin

    model, teacher, law = table2_setup(args.offset)
    taus = np.asarray(args.taus, dtype=float)
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    x, y = teacher.sample(key, law, args.n)
    sweep = risk_sweep(model, x, y, jnp.asarray(taus))
    margin = top_two_margin(logits(model.router, x))
    mass = np.array([float(jnp.mean(margin <= 2 * t)) for t in taus])
    soft, gap = np.asarray(sweep.soft.value), np.asarray(sweep.gap.value)
    gap_se = np.asarray(sweep.gap.stderr)
    elapsed = time.perf_counter() - t0
    print(
        f"Table 2 example (offset b = {args.offset:g}): X ~ N(0, I_2), s = x_1 - b, "
        f"f_1 - f_2 = 2 x_2, realizable (L_0 = {float(sweep.hard.value):.3g})"
    )
    print(f"N = {args.n}, seed {args.seed}, device {_device_note()}, {elapsed:.2f} s")
    header = f"{'tau':>8} {'M(2tau)':>9} {'L_tau':>10} {'gap':>10} {'± stderr':>10} {'gap/tau':>9}"
    print(header)
    print("-" * len(header))
    for i, t in enumerate(taus):
        print(
            f"{t:8.4g} {mass[i]:9.4f} {soft[i]:10.5f} {gap[i]:10.5f} {gap_se[i]:10.2g} "
            f"{gap[i] / t:9.4f}"
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="softhard", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="temperature sweep of the Table 2 example")
    demo.add_argument("--offset", type=float, default=0.0, help="interface offset b")
    demo.add_argument("--n", type=int, default=2**20, help="Monte Carlo samples")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--taus", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2, 0.45, 0.6]
    )
    demo.set_defaults(func=_demo)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = _parser()
    if not argv:
        argv = ["demo"]
    args = p.parse_args(argv)
    if args.command == "demo":
        if args.n < 2:
            p.error("--n must be at least 2")
        if any(t <= 0 for t in args.taus):
            p.error("--taus must all be > 0")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
