"""`softhard analyze FILE`: router reports from a logits dump, written atomically.

Reads `.npy` (memory-mapped), `.npz` and `.safetensors` logits dumps (never
pickle), runs `softhard.report.router_report` on every layer, and writes into
`--out`:

- `report.json`: every layer's `RouterReport.to_dict()` and the summary;
- `layers.csv` and `layers.tex`: the summary table across layers (`router_summary`);
- `<layer>.png`: per layer, `M_k(w)` on log–log axes with error bars and the
  fitted tail, the margin histogram, and the gate discrepancy with its T.8
  bound (and the T.10 certificate when `--bounds` is given) against τ;
- `layers.png`: the boundary mass `M_k(1)` and the dead experts per layer.

Everything is computed and checked before the first file is written, and every
file is written through a temporary file and a rename (`softhard.diagnostics.io`),
so a bad input (wrong rank, K = 1, a truncated file, pickled arrays, an unknown
suffix, non-finite rows without `--allow-nonfinite`) exits with status 2 and a
clear message and leaves nothing half-written in `--out`.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

__all__ = ["analyze", "run_cli", "write_outputs", "layer_figure", "layers_figure"]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "layer"


def analyze(
    path,
    *,
    k: int = 1,
    layers=None,
    taus=None,
    bounds=None,
    delta: float = 0.1,
    allow_nonfinite: bool = False,
    progress: bool = False,
) -> dict:
    """Reports for every (selected) layer of a logits file; raises `ValueError` on bad input.

    Returns:
        `{name: RouterReport}`. Non-finite rows raise unless `allow_nonfinite`
        (the reports then count them in `nonfinite` and cover the finite rows).
    """
    from ..report import load_layers, router_reports

    found = load_layers(path, layers)
    reports = router_reports(found, k=k, taus=taus, bounds=bounds, delta=delta, progress=progress)
    bad = {n: r.n - r.n_finite for n, r in reports.items() if r.n_finite < r.n}
    if bad and not allow_nonfinite:
        listing = ", ".join(f"{n!r}: {c} rows" for n, c in bad.items())
        raise ValueError(
            f"non-finite logits (NaN or inf) in {listing}; repair them, or pass "
            "--allow-nonfinite to report over the finite rows (the count is reported)"
        )
    return reports


def layer_figure(name: str, r):
    """Three panels for one layer: M_k(w) log–log with the tail fit, the histogram, gates vs τ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    edges, counts = np.asarray(r.hist_edges), np.asarray(r.hist_counts, np.float64)
    n = r.n_finite
    cdf = (float(r.ties.value) * n + np.cumsum(counts[:-1])) / n  # P(Δ_k < e_i)
    keep = cdf > 0
    ax[0].step(edges[keep], cdf[keep], where="post", color="0.6", lw=1, label="histogram CDF")
    m, s = np.asarray(r.mass.value), np.asarray(r.mass.stderr)
    ax[0].errorbar(r.widths, m, yerr=2 * s, fmt="o", ms=3, capsize=2, label=r"$M_k(w)$ ± 2 se")
    if r.tail is not None:
        w = np.asarray(r.tail.ws)
        fit = float(r.tail.C_m.value) * w ** float(r.tail.alpha.value) + float(r.tail.atom.value)
        ax[0].plot(
            w, fit, "-", color="C3",
            label=rf"fit $\alpha$ = {float(r.tail.alpha.value):.3g} ({r.tail.status})",
        )  # fmt: skip
    if r.atom:
        ax[0].axhline(float(r.ties.value), ls=":", color="k", label="atom P(Δ_k = 0)")
    ax[0].set(xscale="log", yscale="log", xlabel="width w", ylabel=r"$P(\Delta_k \leq w)$")
    ax[0].set_title(f"{name}: boundary mass (k = {r.k})")
    ax[0].legend(fontsize=7)
    group = 16  # the plot merges 16 of the histogram's geometric bins
    inner = counts[1:-1]
    coarse = inner[: inner.size // group * group].reshape(-1, group).sum(axis=1)
    ax[1].stairs(coarse / n, edges[::group][: coarse.size + 1], fill=True, alpha=0.6)
    ax[1].set(xscale="log", xlabel=r"margin $\Delta_k$", ylabel="fraction of tokens per bin")
    ax[1].set_title(
        f"margin histogram (ties {float(r.ties.value):.3g}, below {edges[0]:.2g}: "
        f"{counts[0] / n:.2g})"
    )
    t = np.asarray(r.taus)
    ax[2].errorbar(
        t, r.gate_discrepancy.value, yerr=2 * np.asarray(r.gate_discrepancy.stderr),
        fmt="o-", ms=3, capsize=2, label=r"$E\|\mu^\tau - \mu^0\|_1$",
    )  # fmt: skip
    ax[2].errorbar(
        t, r.gate_bound.value, yerr=2 * np.asarray(r.gate_bound.stderr),
        fmt="s--", ms=3, capsize=2, label=r"$2(K-k)E[e^{-\Delta_k/\tau}]$ (T.8)",
    )  # fmt: skip
    if r.certificate is not None:
        ax[2].plot(t, r.certificate, "^:", ms=3, label="T.10 certificate")
    ax[2].set(xscale="log", yscale="log", xlabel=r"temperature $\tau$")
    ax[2].set_title("gate discrepancy and its bound")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def layers_figure(reports: dict):
    """Boundary mass `M_k(1)` (± 2 se) and dead experts per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(reports)
    x = np.arange(len(names))
    fig, ax = plt.subplots(1, 2, figsize=(max(6, 0.5 * len(names) + 4), 3.6))
    mass = [float(r.mass_at_1.value) for r in reports.values()]
    err = [2 * float(r.mass_at_1.stderr) for r in reports.values()]
    ax[0].bar(x, mass, yerr=err, capsize=2)
    ax[0].set(ylabel=r"$M_k(1) = P(\Delta_k \leq 1)$", title="boundary mass per layer")
    ax[1].bar(x, [r.dead_experts.size for r in reports.values()], color="C1")
    ax[1].set(ylabel="experts never selected", title="dead experts per layer")
    for a in ax:
        a.set_xticks(x, names, rotation=45 if len(names) > 4 else 0, ha="right")
    fig.tight_layout()
    return fig


_TEX_COLUMNS = {
    "layer": "layer",
    "n_finite": "$N$",
    "K": "$K$",
    "k": "$k$",
    "ties": r"$P(\Delta_k=0)$",
    "median_margin": r"median $\Delta_k$",
    "mass_at_1": "$M_k(1)$",
    "tail_status": "tail",
    "alpha": r"$\alpha$",
    "alpha_se": r"se($\alpha$)",
    "ambiguity": r"$m_\delta^{(k)}(\tau_{\rm ref})$",
    "gate_discrepancy": r"$E\|\mu^\tau-\mu^0\|_1$",
    "dead_experts": "dead",
}


def write_outputs(out, source, reports: dict, *, meta: dict) -> list[str]:
    """Write report.json, layers.csv, layers.tex and the figures into `out` (atomically)."""
    import matplotlib.pyplot as plt

    from ..report import router_summary
    from .io import TMP_PREFIX, output_lock, save_figure, write_csv, write_json, write_latex

    cols = router_summary(reports)
    # the figures are drawn before the first file is written
    figures = {f"{_safe_name(n)}.png": layer_figure(n, r) for n, r in reports.items()}
    figures["layers.png"] = layers_figure(reports)
    if len(set(figures)) != len(reports) + 1:
        raise ValueError("layer names collide once made safe for file names; rename the layers")
    try:
        with output_lock(out, "--out") as d:
            for stale in glob.glob(os.path.join(glob.escape(d), TMP_PREFIX + "stage-*")):
                shutil.rmtree(stale, ignore_errors=True)
            # every file is written into a hidden staging folder first, then renamed into
            # `out` one by one: a failure while writing leaves `out` as it was
            stage = tempfile.mkdtemp(dir=d, prefix=TMP_PREFIX + "stage-")
            try:
                payload = {
                    "source": os.fspath(source),
                    **meta,
                    "summary": cols,
                    "layers": {n: r.to_dict() for n, r in reports.items()},
                }
                write_json(os.path.join(stage, "report.json"), payload)
                write_csv(os.path.join(stage, "layers.csv"), cols, meta=meta)
                tex = {c: cols[c] for c in _TEX_COLUMNS}
                write_latex(
                    os.path.join(stage, "layers.tex"), tex, headers=_TEX_COLUMNS,
                    formats={"n_finite": "d", "K": "d", "k": "d", "dead_experts": "d"}, meta=meta,
                )  # fmt: skip
                for fname, fig in figures.items():
                    save_figure(fig, os.path.join(stage, fname), meta=meta)
                names = ["report.json", "layers.csv", "layers.tex", *figures]
                for fname in names:
                    os.replace(os.path.join(stage, fname), os.path.join(d, fname))
            finally:
                shutil.rmtree(stage, ignore_errors=True)
    finally:
        for fig in figures.values():
            plt.close(fig)
    return [os.path.join(os.fspath(out), f) for f in names]


def _print_summary(reports: dict) -> None:
    for name, r in reports.items():
        tail = "no fit" if r.tail is None else (
            f"alpha = {float(r.tail.alpha.value):.3g} ± {float(r.tail.alpha.stderr):.2g}, "
            f"C_m = {float(r.tail.C_m.value):.3g} ({r.tail.status})"
        )  # fmt: skip
        print(f"[{name}] N = {r.n_finite} of {r.n}, K = {r.K}, k = {r.k}; tail: {tail}")
        print(f"  ties {float(r.ties.value):.3g}, M_k(1) = {float(r.mass_at_1.value):.4g}, "
              f"dead experts {r.dead_experts.tolist()}")  # fmt: skip
        print("  " + r.statement)
        for note in r.notes:
            print("  note: " + note)
        head = f"  {'tau':>10} {'gate_disc':>10} {'se':>9} {'T.8 bound':>10} {'ambiguity':>10}"
        print(head + (f" {'T.10':>10}" if r.certificate is not None else ""))
        for t in range(r.taus.size):
            line = (
                f"  {r.taus[t]:>10.4g} {r.gate_discrepancy.value[t]:>10.4g} "
                f"{r.gate_discrepancy.stderr[t]:>9.2g} {r.gate_bound.value[t]:>10.4g} "
                f"{r.ambiguity.value[t]:>10.4g}"
            )
            if r.certificate is not None:
                line += f" {r.certificate[t]:>10.4g}"
            print(line)


def run_cli(args) -> int:
    """The `softhard analyze` command: 0 on success, 2 (with a message) on bad input."""
    from .io import new_run_id

    t0 = time.perf_counter()
    try:
        if args.bounds is not None and any(b < 0 for b in args.bounds):
            raise ValueError(f"--bounds B_Y B_f must be >= 0, got {args.bounds}")
        reports = analyze(
            args.file,
            k=args.k,
            layers=args.layer,
            taus=args.taus,
            bounds=None if args.bounds is None else tuple(args.bounds),
            delta=args.delta,
            allow_nonfinite=args.allow_nonfinite,
            progress=sys.stderr.isatty(),
        )
        elapsed = time.perf_counter() - t0
        _print_summary(reports)
        meta = {"run_id": new_run_id()}
        if args.out:
            files = write_outputs(args.out, args.file, reports, meta=meta)
            print(f"wrote {len(files)} files to {args.out}/ (report.json, layers.csv, ...)")
    except ValueError as e:
        print(f"softhard analyze: {e}", file=sys.stderr)
        return 2
    print(f"{args.file}: {len(reports)} layers, {elapsed:.2f} s")
    return 0
