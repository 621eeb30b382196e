"""The `softhard` command: the demo sweep and config-driven sweeps."""

import csv
import json

import numpy as np
import pytest

from softhard.cli import main
from softhard.diagnostics.config import parse_config

GOOD = {
    "router": {"type": "linear", "W": [[1.0, 0.0], [0.0, 0.0]], "b": [0.0, 0.0]},
    "experts": {"type": "linear", "B": [[0.0, 2.0], [0.0, 0.0]], "c": [0.0, 0.0]},
    "law": {"type": "standard_gaussian", "d": 2},
    "target": {"type": "self"},
    "taus": {"geomspace": [0.05, 0.5, 3]},
    "n": 20000,
    "seed": 1,
}


def test_demo_prints_a_table(capsys):
    assert main(["demo", "--n", "4096", "--taus", "0.1", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "gap/tau" in out and "0.1" in out


def test_sweep_config_writes_csv_and_plot(tmp_path, capsys):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(GOOD))
    csv_path, png_path = tmp_path / "out.csv", tmp_path / "out.png"
    assert main(["sweep", str(path), "--csv", str(csv_path), "--plot", str(png_path)]) == 0
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and {"tau", "gap", "gap_stderr", "mass_2tau"} <= set(rows[0])
    # realizable: L_0 = 0 and the gap equals the soft risk
    assert all(float(r["hard_risk"]) == 0.0 for r in rows)
    np.testing.assert_allclose(
        [float(r["gap"]) for r in rows], [float(r["soft_risk"]) for r in rows]
    )
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave no temporaries


def test_sweep_toml_config(tmp_path):
    toml = """
n = 4096
taus = [0.1, 0.3]
[router]
type = "linear"
W = [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
b = [0.0, 0.0, 0.0]
[experts]
type = "linear"
B = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
c = [0.0, 0.0, 0.0]
[law]
type = "gaussian"
mean = [0.5, 0.0]
cov = [[1.0, 0.2], [0.2, 2.0]]
[target]
type = "linear"
w = [1.0, -1.0]
noise_std = 0.1
"""
    path = tmp_path / "cfg.toml"
    path.write_text(toml)
    assert main(["sweep", str(path)]) == 0


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"router": {"type": "linear", "W": [[1.0, 0.0]], "b": [0.0]}}, "router"),
        ({"router": {"type": "conv"}}, "router.type"),
        ({"experts": {"type": "linear", "B": [[0.0, 2.0]], "c": [0.0]}}, "experts"),
        ({"experts": {"type": "linear", "B": [[0.0, 2.0], [0.0, 0.0]]}}, "experts.c"),
        ({"law": {"type": "gaussian", "mean": [0.0, 0.0], "cov": [[1.0, 2.0], [2.0, 1.0]]}}, "law"),
        ({"law": {"type": "standard_gaussian", "d": 3}}, "router"),
        ({"taus": [0.1, -0.2]}, "taus"),
        ({"taus": {"geomspace": [0.1, 1.0]}}, "taus.geomspace"),
        ({"n": "many"}, "n"),
        ({"target": {"type": "linear", "w": [1.0]}}, "target.w"),
        ({"target": {"type": "self", "noise_std": -1}}, "target.noise_std"),
        ({"temperature": 1}, "temperature"),
    ],
)
def test_malformed_config_names_the_field(patch, field, tmp_path, capsys):
    cfg = {**GOOD, **patch}
    with pytest.raises(ValueError, match=f"`{field}"):
        parse_config(cfg)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    assert main(["sweep", str(path)]) == 2
    assert f"`{field}" in capsys.readouterr().err


def test_unreadable_config(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    assert main(["sweep", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.json")]) == 2


def test_sweep_columns_against_closed_forms():
    """GOOD is Table 2 at offset 0: M(2τ) = 2Φ(2τ) − 1 and L_τ from 1-D quadrature."""
    from scipy import stats

    from softhard.cli import sweep_columns

    cfg = parse_config({**GOOD, "n": 2**18})
    cols = sweep_columns(cfg)
    exact_mass = 2 * stats.norm.cdf(2 * cols["tau"]) - 1
    assert np.all(np.abs(cols["mass_2tau"] - exact_mass) < 4 * cols["mass_stderr"])
    assert np.all(cols["mass_stderr"] > 0) and np.all(cols["mass_stderr"] < 2e-3)
    import softhard as sh

    exact = [float(sh.exact_risk_gap(cfg.model, cfg.target, cfg.law, t)) for t in cols["tau"]]
    assert np.all(np.abs(cols["gap"] - exact) < 4 * cols["gap_stderr"])
    np.testing.assert_allclose(cols["gap_over_tau"], cols["gap"] / cols["tau"])


def test_sweep_memory_does_not_grow_with_n(tmp_path):
    """`softhard sweep` streams: 2^24 samples, T = 16, in a fresh process under 1.5 GB.

    Materialising the sample and `[T, N]` indicator arrays (the old path) needs
    several GB at this size.
    """
    import subprocess
    import sys

    cfg = {**GOOD, "n": 2**24, "taus": {"geomspace": [0.01, 1.0, 16]}}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(cfg))
    code = (
        "import sys; from softhard.cli import main; rc = main(['sweep', sys.argv[1]]); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
        "print('HWM', int(hwm[0].split()[1])); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    hwm_kb = int(proc.stdout.rsplit("HWM", 1)[1].split()[0])
    assert hwm_kb / 2**20 < 1.5, f"peak RSS {hwm_kb / 2**10:.0f} MB"
