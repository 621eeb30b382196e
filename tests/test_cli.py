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
