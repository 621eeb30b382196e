"""`softhard reproduce --quick`: every file, the summary checks, atomic re-runs."""

import csv
import json

import numpy as np
import pytest

from softhard.cli import main
from softhard.diagnostics.experiments import PAPER_TABLE2

COLUMNS = {
    "table1": {"tau", "mass", "mass_se", "mass_exact", "gap", "gap_se", "gap_exact",
               "gap_over_tau", "coarea_coef", "coarea_coef_se", "coarea_coef_exact"},
    "table2": {"offset", "mass", "mass_se", "mass_exact", "gap", "gap_se", "gap_exact",
               "flip", "flip_se", "flip_exact"},
    "table3": {"tau", "risk", "alignment", "phi_norm", "mass", "entropy", "sharpness"},
    "table4": {"K", "rho", "tau", "mass", "mass_se", "mass_exact", "gap", "gap_se", "gap_exact",
               "gap_over_tau", "gap_over_tau_exact", "coef", "coef_se", "coef_exact",
               "certificate"},
}  # fmt: skip


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    rc = main(["reproduce", "--quick", "--out", str(out)])
    return out, rc


def test_reproduce_quick_writes_every_file_and_passes(quick_run):
    out, rc = quick_run
    summary = json.loads((out / "summary.json").read_text())
    failed = [c for t in summary["tables"].values() for c in t["checks"] if not c["passed"]]
    assert rc == 0 and summary["all_passed"], failed
    assert summary["device"] and summary["seconds"] < 600
    for n in (1, 2, 3, 4):
        for ext in ("csv", "json", "tex"):
            assert (out / f"table{n}.{ext}").stat().st_size > 0
        png = (out / f"fig{n}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(out.glob(".tmp-*"))


@pytest.mark.parametrize("name", ["table1", "table2", "table3", "table4"])
def test_csv_columns_parse(quick_run, name):
    out, _ = quick_run
    with (out / f"{name}.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and COLUMNS[name] <= set(rows[0])
    for r in rows:
        for c in COLUMNS[name]:
            float(r[c])
    tex = (out / f"{name}.tex").read_text()
    assert tex.startswith(r"\begin{tabular}") and tex.count(r"\\") == len(rows) + 1
    payload = json.loads((out / f"{name}.json").read_text())
    assert payload["table"] == name and payload["checks"]


def test_table2_exact_column_equals_paper_brackets(quick_run):
    out, _ = quick_run
    with (out / "table2.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    mass = np.array([float(r["mass_exact"]) for r in rows])
    gap = np.array([float(r["gap_exact"]) for r in rows])
    np.testing.assert_array_equal(np.round(mass, 4), PAPER_TABLE2["mass_exact"])
    np.testing.assert_array_equal(np.round(gap, 5), PAPER_TABLE2["gap_exact"])
    for k in ("mass", "gap", "flip"):
        mc = np.array([float(r[k]) for r in rows])
        se = np.array([float(r[f"{k}_se"]) for r in rows])
        ex = np.array([float(r[f"{k}_exact"]) for r in rows])
        assert np.all(np.abs(mc - ex) <= 3 * se), k


def test_rerun_replaces_results_cleanly(quick_run, capsys):
    out, _ = quick_run
    before = (out / "table2.csv").read_text()
    (out / "table2.csv").write_text("stale")
    assert main(["reproduce", "--quick", "--only", "table2", "--out", str(out)]) == 0

    def numbers(text):  # everything but the run id (a fresh one per run)
        return [
            {k: v for k, v in r.items() if k != "run_id"} for r in csv.DictReader(text.splitlines())
        ]

    after = (out / "table2.csv").read_text()
    assert numbers(after) == numbers(before)  # same seed, same numbers
    assert {r["seed"] for r in csv.DictReader(after.splitlines())} == {"0"}
    assert set(json.loads((out / "summary.json").read_text())["tables"]) == {"table2"}


def test_reproduce_rejects_unknown_table(tmp_path, capsys):
    assert main(["reproduce", "--only", "table9", "--out", str(tmp_path)]) == 2
    assert "table9" in capsys.readouterr().err


def test_reproduce_paper_script_collects_checks_over_seeds(tmp_path):
    """`scripts/reproduce_paper.py` (the fast case): two seeds of Table 2 at quick size."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "reproduce_paper.py"
    spec = importlib.util.spec_from_file_location("reproduce_paper", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "paper"
    rc = mod.main(["--out", str(out), "--seeds", "0", "1", "--only", "table2", "--quick"])
    data = json.loads((out / "seeds.json").read_text())
    assert data["seeds"] == [0, 1]
    assert (out / "seed0" / "table2.csv").exists() and (out / "seed1" / "fig2.png").exists()
    checks = data["checks"]
    assert checks and all(row["of"] == 2 for row in checks.values())
    assert rc == (0 if all(r["passed"] == 2 for r in checks.values()) else 1)
    # the exact columns do not depend on the seed
    rows = [
        list(csv.DictReader((out / f"seed{s}" / "table2.csv").read_text().splitlines()))
        for s in (0, 1)
    ]
    assert [r["gap_exact"] for r in rows[0]] == [r["gap_exact"] for r in rows[1]]
    assert [r["gap"] for r in rows[0]] != [r["gap"] for r in rows[1]]
    with pytest.raises(SystemExit):
        mod.main(["--n", "10"])
