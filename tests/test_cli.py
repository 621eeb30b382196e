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


def _rejected(cfg, pattern, tmp_path, capsys):
    """`cfg` fails `parse_config` matching `pattern`, and `softhard sweep` exits 2 on it."""
    with pytest.raises(ValueError, match=pattern):
        parse_config(cfg)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    assert main(["sweep", str(path)]) == 2
    return capsys.readouterr()


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
    err = _rejected({**GOOD, **patch}, f"`{field}", tmp_path, capsys).err
    assert f"`{field}" in err


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


# --- issue 14: formats, booleans, τ grids, random init, progress bars, atoms ---


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".txt", ""])
def test_unsupported_suffix_names_the_formats(suffix, tmp_path, capsys):
    """A YAML (or any non-.json/.toml) file is refused by its suffix, not parsed as JSON."""
    from softhard.diagnostics.config import load_config

    path = tmp_path / f"cfg{suffix}"
    path.write_text(json.dumps(GOOD))  # valid JSON content: the suffix alone decides
    with pytest.raises(ValueError, match=r"JSON \(\.json\) and TOML \(\.toml\)"):
        load_config(path)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "JSON (.json)" in err and "TOML (.toml)" in err and "not valid JSON" not in err


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"seed": True}, "seed"),
        ({"seed": False}, "seed"),
        ({"n": True}, "n"),
        ({"law": {"type": "standard_gaussian", "d": True}}, "law.d"),
        ({"taus": {"geomspace": [0.05, 0.5, True]}}, "taus.geomspace"),
        ({"taus": [0.1, True]}, "taus"),
        (
            {"router": {"type": "linear", "W": [[True, 0.0], [0.0, 0.0]], "b": [0.0, 0.0]}},
            "router.W",
        ),
        ({"target": {"type": "self", "noise_std": True}}, "target.noise_std"),
        ({"target": {"type": "linear", "w": [0.0, 1.0], "c": True}}, "target.c"),
        ({"seed": -1}, "seed"),
    ],
)
def test_booleans_are_not_integers(patch, field, tmp_path, capsys):
    """`true` is rejected (not taken as 1) with a message naming the field."""
    err = _rejected({**GOOD, **patch}, f"`{field}`", tmp_path, capsys).err
    assert f"`{field}`" in err


@pytest.mark.parametrize(
    "spec",
    [[-1, 1, 4], [0, 1, 4], [0.1, -0.5, 3], [0.1, float("inf"), 3], [0.1, "1", 3], [0.1, 1, 0]],
)
def test_geomspace_needs_positive_finite_bounds(spec, tmp_path, capsys):
    """No NumPy warning, no NaN: a non-positive/non-finite bound is a config error on `taus`.

    pytest turns warnings into errors, so the old RuntimeWarning of
    `np.geomspace(-1, 1, 4)` fails this test before the check runs.
    """
    cfg = {**GOOD, "taus": {"geomspace": spec}}
    out = _rejected(cfg, r"`taus\.geomspace` must be \[lo, hi, T\]", tmp_path, capsys)
    assert "`taus" in out.err and "nan" not in (out.out + out.err).lower()


INIT = {
    **GOOD,
    "router": {
        "type": "mlp",
        "K": 3,
        "hidden": 4,
        "activation": "relu",
        "init": {"seed": 7, "scale": 0.5},
    },  # fmt: skip
    "experts": {"type": "mlp", "K": 3, "hidden": 2, "init": {"seed": 8, "scale": 2.0}},
    "law": {"type": "standard_gaussian", "d": 5},
}


def _leaves(tree):
    import jax

    return [np.asarray(v) for v in jax.tree.leaves(tree)]


def test_init_draws_the_shapes_the_config_determines():
    cfg = parse_config(INIT)
    r, e = cfg.model.router, cfg.model.experts
    K, H_r, H_e, d = 3, 4, 2, 5
    assert (r.W1.shape, r.b1.shape, r.W2.shape, r.b2.shape) == ((H_r, d), (H_r,), (K, H_r), (K,))
    assert (e.W1.shape, e.b1.shape, e.W2.shape, e.b2.shape) == (
        (K, H_e, d),
        (K, H_e),
        (K, H_e),
        (K,),
    )
    init = {"seed": 0, "scale": 1.0}
    lin = parse_config(
        {
            **GOOD,
            "router": {"type": "linear", "K": 2, "init": init},
            "experts": {"type": "linear", "K": 2, "init": init},
        }
    )
    assert (lin.model.router.W.shape, lin.model.router.b.shape) == ((2, 2), (2,))
    assert (lin.model.experts.B.shape, lin.model.experts.c.shape) == ((2, 2), (2,))
    # the model runs: logits [K] and outputs [K] at a point of R^d
    x0 = np.ones(d)
    assert np.asarray(r(x0)).shape == (K,) and np.asarray(e(x0)).shape == (K,)


def test_init_same_seed_same_model_and_scale():
    a, b = parse_config(INIT), parse_config(INIT)
    for u, v in zip(_leaves(a.model), _leaves(b.model)):
        np.testing.assert_array_equal(u, v)
    other = parse_config({**INIT, "router": {**INIT["router"], "init": {"seed": 9, "scale": 0.5}}})
    assert not np.array_equal(np.asarray(other.model.router.W1), np.asarray(a.model.router.W1))
    # the scale multiplies one fixed standard-normal draw
    doubled = parse_config(
        {**INIT, "router": {**INIT["router"], "init": {"seed": 7, "scale": 1.0}}}
    )
    for u, v in zip(_leaves(a.model.router), _leaves(doubled.model.router)):
        np.testing.assert_allclose(v, 2 * u, rtol=1e-15)
    # N(0, s^2): 4000 draws of W (s = 3) have mean 0 and sd 3 within 5 standard errors
    big = parse_config(
        {
            **GOOD,
            "law": {"type": "standard_gaussian", "d": 2000},
            "router": {"type": "linear", "K": 2, "init": {"seed": 3, "scale": 3.0}},
            "experts": {"type": "linear", "K": 2, "init": {"seed": 4, "scale": 1.0}},
        }
    )
    w = np.asarray(big.model.router.W).ravel()
    assert abs(w.mean()) < 5 * 3.0 / np.sqrt(w.size)
    assert abs(w.std() - 3.0) < 5 * 3.0 / np.sqrt(2 * w.size)


@pytest.mark.parametrize(
    "router, field",
    [
        (
            {
                "type": "linear",
                "W": [[1.0, 0.0], [0.0, 0.0]],
                "b": [0.0, 0.0],
                "K": 2,
                "init": {"seed": 0, "scale": 1.0},
            },
            "router.init",
        ),  # fmt: skip
        (
            {"type": "mlp", "K": 2, "hidden": 3, "W2": [[1.0]], "init": {"seed": 0, "scale": 1.0}},
            "router.init",
        ),  # fmt: skip
        ({"type": "linear", "init": {"seed": 0, "scale": 1.0}}, "router.K"),
        ({"type": "mlp", "K": 2, "init": {"seed": 0, "scale": 1.0}}, "router.hidden"),
        ({"type": "linear", "K": 2, "init": {"seed": 0, "scale": 0.0}}, "router.init.scale"),
        ({"type": "linear", "K": 2, "init": {"seed": True, "scale": 1.0}}, "router.init.seed"),
        ({"type": "linear", "K": 2, "init": {"seed": 0}}, "router.init.scale"),
        (
            {"type": "linear", "K": 2, "init": {"seed": 0, "scale": 1, "mean": 0}},
            "router.init.mean",
        ),
        ({"type": "linear", "K": 2, "init": [0, 1.0]}, "router.init"),
        ({"type": "linear", "K": 1, "init": {"seed": 0, "scale": 1.0}}, "router.K"),
        ({"type": "linear", "K": True, "init": {"seed": 0, "scale": 1.0}}, "router.K"),
        ({"type": "linear", "K": 2, "W": [[1.0, 0.0], [0.0, 0.0]], "b": [0.0, 0.0]}, "router.K"),
    ],
)
def test_init_misuse_is_a_clear_error(router, field, tmp_path, capsys):
    err = _rejected({**GOOD, "router": router}, f"`{field}`", tmp_path, capsys).err
    assert f"`{field}`" in err


def test_init_config_sweeps_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "init.json"
    path.write_text(json.dumps({**INIT, "n": 4096, "target": {"type": "teacher",
        "router": {"type": "linear", "K": 2, "init": {"seed": 1, "scale": 1.0}},
        "experts": {"type": "linear", "K": 2, "init": {"seed": 2, "scale": 1.0}}}}))  # fmt: skip
    assert main(["sweep", str(path)]) == 0
    assert "gap_over_tau" in capsys.readouterr().out


class _FakeTTY:
    """A stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return True


_BAR = ("%|", "it/s", "chunk/s", "s/chunk", "table/s", "s/table")


def test_sweep_progress_bar_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    from softhard.cli import sweep_columns

    small = {**GOOD, "n": 5000}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(small))
    assert main(["sweep", str(path)]) == 0
    err = capsys.readouterr().err
    assert "softhard sweep" not in err and not any(b in err for b in _BAR)
    assert "warning" not in err  # GOOD's margin |x_1| is continuous: no atom, no warning
    tty = _FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    assert main(["sweep", str(path)]) == 0
    assert "softhard sweep" in tty.text and "/1 [" in tty.text  # n = 5000: one chunk
    # the bar counts chunks without changing the sweep
    cfg = parse_config(small)
    with_bar, without = sweep_columns(cfg, progress=True), sweep_columns(cfg)
    for name in without:  # same sample; the two programs may sum in another order
        np.testing.assert_allclose(with_bar[name], without[name], rtol=1e-12, atol=1e-15)


def test_reproduce_progress_bar_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    """The bar of `softhard reproduce` (tables stubbed out: only the bar is under test)."""
    import types

    from softhard.diagnostics import reproduce as rep

    monkeypatch.setattr(
        rep, "_run_table", lambda name, key, sizes: types.SimpleNamespace(checks=[])
    )
    monkeypatch.setattr(rep, "_write_table", lambda out_dir, res, run: [])
    args = ["reproduce", "--quick", "--only", "table1,table2", "--out", str(tmp_path / "r")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "softhard reproduce" not in err and not any(b in err for b in _BAR)
    tty = _FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    assert main(args) == 0
    assert "softhard reproduce" in tty.text and "table" in tty.text


def test_analyze_progress_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    """`softhard analyze` asks `router_reports` for its chunk bar only when stderr is a tty."""
    import softhard.report

    seen = []

    def fake_reports(layers, **kwargs):
        seen.append(kwargs["progress"])
        return {}

    monkeypatch.setattr(softhard.report, "router_reports", fake_reports)
    path = tmp_path / "logits.npy"
    np.save(path, np.random.default_rng(0).normal(size=(64, 4)))
    assert main(["analyze", str(path)]) == 0
    assert not any(b in capsys.readouterr().err for b in _BAR)
    monkeypatch.setattr("sys.stderr", _FakeTTY())
    assert main(["analyze", str(path)]) == 0
    assert seen == [False, True]


TIES = {
    **GOOD,
    "router": {"type": "linear", "W": [[1.0, 0.0], [1.0, 0.0]], "b": [0.0, 0.0]},
    "target": {"type": "linear", "w": [0.0, 1.0]},
}


def test_sweep_warns_when_router_logits_tie(tmp_path, capsys):
    """Two identical router rows: every row ties, the gap tends to a nonzero limit, a warning."""
    path = tmp_path / "ties.json"
    path.write_text(json.dumps(TIES))
    assert main(["sweep", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "fraction 1 of" in err and "non-vanishing limit" in err


def test_tie_fraction_of_a_relu_router():
    """logits = (relu(x_1), 0): an exact tie iff x_1 <= 0, probability 1/2 under N(0, I)."""
    from softhard.cli import tie_fraction

    relu = {"type": "mlp", "activation": "relu",
            "W1": [[1.0, 0.0]], "b1": [0.0], "W2": [[1.0], [0.0]], "b2": [0.0, 0.0]}  # fmt: skip
    cfg = parse_config({**GOOD, "router": relu, "n": 50000})
    frac, rows = tie_fraction(cfg, rows=20000)
    assert rows == 20000
    assert abs(frac - 0.5) < 5 * np.sqrt(0.25 / rows)
    assert tie_fraction(parse_config(TIES))[0] == 1.0
    assert tie_fraction(parse_config(GOOD))[0] == 0.0
