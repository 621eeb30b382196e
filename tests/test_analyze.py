"""`softhard analyze`: good files of every format, bad files (exit 2, message, nothing written)."""

import csv
import json
import re

import numpy as np
import pytest
from safetensors.numpy import save_file

from softhard.cli import main

N = 3000


def _logits(seed, n=N, K=4):
    x = np.random.default_rng(seed).normal(size=(n, 2))
    W = np.array([[1.0, 0.0], [-0.5, 0.8], [-0.3, -0.9], [0.4, 0.4]])[:K]
    return (x @ W.T).astype(np.float32)


def _written(out):
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.mark.parametrize("fmt", ["npy", "npz", "safetensors"])
def test_good_files(tmp_path, capsys, fmt):
    layers = {"blocks.0.router": _logits(1), "blocks.1.router": 2.0 * _logits(2)}
    path = tmp_path / f"logits.{fmt}"
    if fmt == "npy":
        np.save(path, layers["blocks.0.router"])
        names = ["logits"]
    elif fmt == "npz":
        np.savez(path, **layers)
        names = list(layers)
    else:
        save_file(layers, str(path))
        names = list(layers)
    out = tmp_path / "out"
    args = ["analyze", str(path), "--k", "2", "--taus", "0.1", "1", "--out", str(out)]
    assert main(args + ["--bounds", "1", "2"]) == 0
    stdout = capsys.readouterr().out
    assert "T.10 certificate" in stdout and "gate_disc" in stdout
    files = _written(out)
    assert {"report.json", "layers.csv", "layers.tex", "layers.png"} <= set(files)
    assert {f"{n}.png" for n in names} <= set(files)
    assert not [f for f in files if f.startswith(".tmp-")]
    rep = json.loads((out / "report.json").read_text())
    assert list(rep["layers"]) == names
    first = rep["layers"][names[0]]
    assert first["k"] == 2 and first["n"] == N and len(first["gate_discrepancy"]["value"]) == 2
    assert first["certificate"] is not None
    with (out / "layers.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["layer"] for r in rows] == names and rows[0]["k"] == "2"
    assert (out / f"{names[0]}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r"\toprule" in (out / "layers.tex").read_text()


def _bad_files(tmp_path):
    """`{case: (path, message regex)}` for every bad input."""
    cases = {}
    p = tmp_path / "rank1.npy"
    np.save(p, np.zeros(10, np.float32))
    cases["wrong rank"] = (p, r"shape \[N, K\]")
    p = tmp_path / "rank3.npz"
    np.savez(p, layer=np.zeros((2, 3, 4), np.float32))
    cases["wrong rank npz"] = (p, r"layer 'layer'.*shape \[N, K\]")
    p = tmp_path / "k1.npy"
    np.save(p, np.zeros((10, 1), np.float32))
    cases["K = 1"] = (p, "K >= 2")
    p = tmp_path / "nan.safetensors"
    a = _logits(3)
    a[[5, 7]] = np.nan
    save_file({"l0": a}, str(p))
    cases["NaN rows"] = (p, r"non-finite logits .*'l0': 2 rows.*--allow-nonfinite")
    p = tmp_path / "truncated.npy"
    np.save(p, _logits(4))
    p.write_bytes(p.read_bytes()[:2000])
    cases["truncated npy"] = (p, "truncated or corrupt")
    p = tmp_path / "truncated.safetensors"
    save_file({"l0": _logits(4)}, str(p))
    p.write_bytes(p.read_bytes()[:3000])
    cases["truncated safetensors"] = (p, "safetensors")
    p = tmp_path / "truncated.npz"
    np.savez(p, l0=_logits(4))
    p.write_bytes(p.read_bytes()[:3000])
    cases["truncated npz"] = (p, "truncated")
    p = tmp_path / "pickle.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    cases["pickle-only npy"] = (p, "never unpickles")
    p = tmp_path / "logits.txt"
    p.write_text("1 2 3\n")
    cases["unknown extension"] = (p, "unknown logits file type '.txt'")
    p = tmp_path / "strings.npy"
    np.save(p, np.array([["a", "b"], ["c", "d"]]))
    cases["string dtype"] = (p, "real numbers")
    cases["missing file"] = (tmp_path / "nope.npy", "does not exist")
    return cases


def test_bad_files_exit_2_and_write_nothing(tmp_path, capsys):
    for case, (path, message) in _bad_files(tmp_path).items():
        out = tmp_path / f"out-{case.replace(' ', '-')}"
        rc = main(["analyze", str(path), "--taus", "0.5", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2, case
        assert err.startswith("softhard analyze: "), (case, err)
        assert re.search(message, err), (case, err)
        assert _written(out) == [], case


def test_bad_options_and_existing_results_kept(tmp_path, capsys):
    path = tmp_path / "d.npz"
    np.savez(path, l0=_logits(5, K=3))
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("old")
    for extra, message in [
        (["--k", "3"], "`k` must be < K = 3"),
        (["--layer", "l9"], "no layer"),
        (["--delta", "0.8"], "delta"),
        (["--bounds", "-1", "1"], "--bounds"),
        (["--taus", "0"], "taus"),
    ]:
        assert main(["analyze", str(path), "--out", str(out), *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert (out / "report.json").read_text() == "old" and _written(out) == ["report.json"]


def test_allow_nonfinite_reports_the_count(tmp_path, capsys):
    a = _logits(6)
    a[:30, 0] = np.inf
    path = tmp_path / "nan.npy"
    np.save(path, a)
    out = tmp_path / "out"
    assert main(["analyze", str(path), "--allow-nonfinite", "--taus", "1", "--out", str(out)]) == 0
    assert "30 of 3000 rows hold NaN or inf" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())["layers"]["nan"]
    assert rep["n_finite"] == N - 30 and rep["nonfinite"]["value"] == pytest.approx(0.01)


def test_no_out_prints_only(tmp_path, capsys):
    path = tmp_path / "d.npy"
    np.save(path, _logits(7, K=3).astype(np.float16))
    assert main(["analyze", str(path), "--taus", "0.3", "1"]) == 0
    assert "[d] N = 3000" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy"]
