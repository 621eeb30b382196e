"""router_report / router_reports / router_summary against exact values and direct NumPy.

Monte Carlo checks: fixed seeds, stated N, 3 standard errors. Per-row figures
(gate discrepancy, its bound, entropy, load, ambiguity) are also compared with
a direct NumPy computation on the same sample, to 1e-10.
"""

import json
import os
import threading
import time

import numpy as np
import pytest

import softhard
from softhard import Gaussian, LinearRouter, exact_ambiguity_mass, exact_boundary_mass
from softhard.report import load_layers, router_report, router_reports, router_summary

N = 1 << 17
SE = 3.0


def _linear_logits(seed, n, W, b):
    x = np.random.default_rng(seed).normal(size=(n, np.shape(W)[1]))
    return x @ np.asarray(W).T + np.asarray(b)


W3, B3 = [[1.0, 0.0], [-0.5, 0.8], [-0.3, -0.9]], [0.2, 0.0, -0.1]
LAW = Gaussian(np.zeros(2), np.eye(2))


def _np_softtopk(a, tau, k):
    """T.3 by bisection on θ (independent of the sorting solution): μ = min(1, e^{(a−θ)/τ})."""
    lo = a.min(axis=1) - 60 * tau
    hi = a.max(axis=1) + 60 * tau
    for _ in range(200):
        th = 0.5 * (lo + hi)
        s = np.minimum(1.0, np.exp((a - th[:, None]) / tau)).sum(axis=1)
        lo, hi = np.where(s > k, th, lo), np.where(s > k, hi, th)
    theta = 0.5 * (lo + hi)
    return np.minimum(1.0, np.exp((a - theta[:, None]) / tau))


def _np_topk_set(a, k):
    order = np.argsort(-a, axis=1, kind="stable")
    hard = np.zeros_like(a)
    np.put_along_axis(hard, order[:, :k], 1.0, axis=1)
    return hard


def _within(est, exact, n_se=SE, slack=0.0):
    v, s = np.asarray(est.value), np.asarray(est.stderr)
    assert np.all(np.abs(v - exact) <= n_se * s + slack), (v, s, exact)


def _exact_quantile(router, p, k):
    lo, hi = 0.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(exact_boundary_mass(router, LAW, mid, k=k)) < p else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("k", [1, 2])
def test_linear_gaussian_against_exact(k):
    router = LinearRouter(W=W3, b=B3)
    a = _linear_logits(1, N, W3, B3)
    taus = np.array([0.05, 0.3, 1.0])
    r = router_report(a, k=k, taus=taus)
    assert (r.n, r.n_finite, r.K, r.k) == (N, N, 3, k)
    assert float(r.ties.value) == 0.0 and float(r.nonfinite.value) == 0.0
    _within(r.mass, np.asarray(exact_boundary_mass(router, LAW, r.widths, k=k)))
    _within(r.mass_at_1, float(exact_boundary_mass(router, LAW, 1.0, k=k)))
    for p, q, se in zip(r.quantile_levels, r.margin_quantiles.value, r.margin_quantiles.stderr):
        if p < 0.01:
            continue  # too few samples for a 3-se statement
        exact = _exact_quantile(router, p, k)
        assert abs(q - exact) <= SE * se + r.quantile_resolution * exact, (p, q, se, exact)
    # per-row figures against NumPy on the same sample
    hard = _np_topk_set(a, k)
    delta_k = np.sort(a, axis=1)[:, ::-1]
    delta_k = delta_k[:, k - 1] - delta_k[:, k]
    for t, tau in enumerate(taus):
        mu = _np_softtopk(a, tau, k)
        np.testing.assert_allclose(r.gate_discrepancy.value[t], np.abs(mu - hard).sum(1).mean())
        np.testing.assert_allclose(
            r.gate_discrepancy.stderr[t], np.abs(mu - hard).sum(1).std(ddof=1) / np.sqrt(N)
        )
        np.testing.assert_allclose(
            r.gate_bound.value[t], (2 * (3 - k) * np.exp(-delta_k / tau)).mean()
        )
        w = mu / k
        ent = -(w * np.log(np.where(w > 0, w, 1.0))).sum(1).mean()
        np.testing.assert_allclose(r.entropy.value[t], ent)
        np.testing.assert_allclose(r.soft_load.value[t], mu.mean(0), rtol=1e-10)
        low = np.where(hard > 0, mu, np.inf).min(1)
        np.testing.assert_allclose(r.ambiguity.value[t], np.mean(low < 0.9))
    if k == 1:
        _within(r.ambiguity, [float(exact_ambiguity_mass(router, LAW, t, 0.1)) for t in taus])
    assert np.all(r.gate_discrepancy.value <= r.gate_bound.value)  # T.8
    np.testing.assert_allclose(r.selection.value, hard.mean(0))
    assert r.dead_experts.size == 0
    if k == 2:
        np.testing.assert_allclose(r.coselection.value, hard.T @ hard / N)
    else:
        assert r.coselection is None


def test_float32_matches_float64():
    a = _linear_logits(2, 1 << 14, W3, B3)
    taus, ws = [0.1, 1.0], np.geomspace(1e-2, 0.5, 6)
    r64 = router_report(a, taus=taus, widths=ws, k=2)
    r32 = router_report(a.astype(np.float32), taus=taus, widths=ws, k=2)
    np.testing.assert_allclose(r32.gate_discrepancy.value, r64.gate_discrepancy.value, rtol=1e-4)
    np.testing.assert_allclose(r32.entropy.value, r64.entropy.value, rtol=1e-4)
    assert np.max(np.abs(np.asarray(r32.mass.value) - np.asarray(r64.mass.value))) <= 2e-4
    # τ far below the logit scale in float32: T.8 still holds row by row, so on average
    z = np.random.default_rng(20).normal(size=(4096, 10)) @ np.random.default_rng(21).normal(
        scale=0.1, size=(10, 4)
    )
    top = -np.sort(-z, axis=1)
    z = z[top[:, 1] - top[:, 2] > 3e-3].astype(np.float32)  # Δ_2/τ > 30: the bound is tiny
    small = router_report(z, taus=[1e-4, 3e-4], k=2, widths=ws)
    assert np.all(np.asarray(small.gate_discrepancy.value) <= np.asarray(small.gate_bound.value))


def _chi4_logits(seed, n):
    """Δ = ‖X‖² for X ~ N(0, I_4): density (w/4) e^{−w/2}, vanishing linearly at 0 (α = 2)."""
    x = np.random.default_rng(seed).normal(size=(n, 4))
    return np.stack([np.sum(x**2, axis=1), np.zeros(n)], axis=1)


def test_tail_fit_alpha_one_and_two():
    # α = 1: a transversal interface, K = 2 linear router; M(w) = 2Φ(w/|β|) − 1
    r1 = router_report(
        _linear_logits(3, 1 << 18, [[1.0, 0.0], [0.0, 0.0]], [0.0, 0.0]),
        taus=[0.1],
        widths=np.geomspace(2e-3, 2e-2, 8),
    )
    assert r1.tail.status == "ok", r1.tail_note
    assert abs(float(r1.tail.alpha.value) - 1.0) <= SE * float(r1.tail.alpha.stderr)
    # α = 2: the chi-square(4) gap, checked against its CDF 1 − e^{−w/2}(1 + w/2) first
    ws = np.geomspace(0.05, 0.3, 8)
    r2 = router_report(_chi4_logits(4, 1 << 18), taus=[0.1], widths=ws)
    _within(r2.mass, 1 - np.exp(-ws / 2) * (1 + ws / 2))
    assert r2.tail.status in ("ok", "misfit")
    assert abs(float(r2.tail.alpha.value) - 2.0) <= SE * float(r2.tail.alpha.stderr)


def test_atoms_flagged_and_certificate_refused():
    n = 1 << 16
    a = _linear_logits(5, n, W3, B3)
    tied = np.random.default_rng(6).choice(n, n // 100, replace=False)
    a[tied, 1] = a[tied, 0] = a[tied].max(axis=1)  # exact ties of the top two
    r = router_report(a, taus=[0.1, 1.0], bounds=(1.0, 1.0))
    assert float(r.ties.value) == pytest.approx(tied.size / n, abs=1e-15)
    assert r.tail is not None and r.tail.status == "atom"
    assert float(r.tail.atom.value) == pytest.approx(tied.size / n)
    assert r.certificate is None and "refused" in r.statement and "atom" in r.statement
    assert any("ties" in note for note in r.notes)
    # the fit above the atom is of P(0 < Δ ≤ w): α ≈ 1 (transversal interfaces)
    assert abs(float(r.tail.alpha.value) - 1.0) <= 0.15
    assert float(r.margin_quantiles.value[0]) == 0.0  # the 0.1 % quantile is in the atom


def test_certificate_with_bounds_is_t10():
    a = _linear_logits(7, 1 << 15, W3, B3)
    r = router_report(a, taus=[0.05, 0.2], k=2, bounds=(2.0, 1.5))
    assert r.tail.status != "atom" and "T.10" in r.statement
    expect = softhard.soft_hard_bound(
        np.array([0.05, 0.2]), 2.0, 1.5, 3, float(r.tail.C_env),
        max(float(r.tail.alpha.value), 0.0), float(r.tail.w0), k=2,
    )  # fmt: skip
    np.testing.assert_allclose(r.certificate, np.asarray(expect))
    r0 = router_report(a, taus=[0.05, 0.2], k=2)
    assert r0.certificate is None and "gate-level statement (T.8)" in r0.statement


def test_nonfinite_rows_reported_not_dropped_silently():
    a = _linear_logits(8, 4000, W3, B3)
    bad = a.copy()
    bad[[3, 10, 11], 1] = np.nan
    bad[20, 2] = np.inf
    kw = dict(taus=[0.1, 1.0], widths=[0.05, 0.2, 0.5])
    r = router_report(bad, **kw)
    ref = router_report(np.delete(a, [3, 10, 11, 20], axis=0), **kw)
    assert r.n == 4000 and r.n_finite == 3996
    assert float(r.nonfinite.value) == pytest.approx(4 / 4000)
    assert any("NaN or inf" in note for note in r.notes)
    np.testing.assert_allclose(r.mass.value, ref.mass.value)
    np.testing.assert_allclose(r.gate_discrepancy.value, ref.gate_discrepancy.value)
    with pytest.raises(ValueError, match="no finite row"):
        router_report(np.full((5, 3), np.nan))


def test_chunked_memmap_equals_unchunked(tmp_path):
    path = tmp_path / "logits.npy"
    np.save(path, _linear_logits(9, 5003, W3, B3).astype(np.float32))
    mm = np.load(path, mmap_mode="r", allow_pickle=False)
    kw = dict(k=2, taus=[0.1, 1.0], widths=[0.05, 0.3])
    whole = router_report(np.asarray(mm), **kw, chunk_size=10**6)
    parts = router_report(mm, **kw, chunk_size=777)
    d1, d2 = whole.to_dict(), parts.to_dict()
    for key in ("n_finite", "mass", "ties", "selection", "coselection", "hist_counts", "ambiguity"):
        assert d1[key] == d2[key], key
    for key in ("gate_discrepancy", "gate_bound", "entropy", "soft_load"):
        np.testing.assert_allclose(
            np.asarray(d2[key]["value"]), np.asarray(d1[key]["value"]), rtol=1e-6
        )
        np.testing.assert_allclose(
            np.asarray(d2[key]["stderr"]), np.asarray(d1[key]["stderr"]), rtol=1e-4
        )


def test_to_dict_json_and_table():
    r = router_report(_linear_logits(10, 2000, W3, B3), k=2, taus=[0.1, 1.0])
    d = json.loads(json.dumps(r.to_dict()))
    assert set(d["mass"]) == {"value", "stderr"} and len(d["mass"]["value"]) == r.widths.size
    assert d["tail"]["status"] == r.tail.status and d["k"] == 2
    text = repr(r)
    assert text.startswith("RouterReport") and "gate_discrepancy" in text and "±" in text


def test_dead_experts_and_bad_arguments():
    a = _linear_logits(11, 3000, W3, B3)
    a4 = np.concatenate([a, np.full((3000, 1), -50.0)], axis=1)
    r = router_report(a4, taus=[1.0])
    assert r.dead_experts.tolist() == [3] and any("dead" in m for m in r.notes)
    for bad, match in [
        (a[:, 0], r"shape \[N, K\]"),
        (a[:, :1], "K >= 2"),
        (a.astype(bool), "real numbers"),
    ]:
        with pytest.raises(ValueError, match=match):
            router_report(bad)
    with pytest.raises(ValueError, match="`k`"):
        router_report(a, k=3)
    with pytest.raises(ValueError, match="bounds"):
        router_report(a, bounds=(1.0,))
    with pytest.raises(ValueError, match="widths"):
        router_report(a, widths=[0.0, 1.0])
    with pytest.raises(ValueError, match="delta"):
        router_report(a, delta=0.7)


def test_layers_mapping_and_files(tmp_path):
    from safetensors.numpy import save_file

    layers = {"l0": _linear_logits(12, 3000, W3, B3), "l1": _chi4_logits(13, 3000)}
    np.savez(tmp_path / "d.npz", **layers)
    save_file({n: v.astype(np.float32) for n, v in layers.items()}, str(tmp_path / "d.safetensors"))
    kw = dict(taus=[0.1, 1.0])
    direct = router_reports(layers, **kw)
    for path in ("d.npz", "d.safetensors"):
        reps = router_reports(str(tmp_path / path), **kw)
        assert list(reps) == ["l0", "l1"]
        assert reps["l0"].n == 3000 and reps["l1"].K == 2
        np.testing.assert_allclose(reps["l1"].mass.value, direct["l1"].mass.value, atol=1e-3)
    assert isinstance(load_layers(tmp_path / "d.npz")["l0"], np.memmap)  # np.savez: mapped
    np.savez_compressed(tmp_path / "c.npz", **layers)
    np.testing.assert_array_equal(load_layers(tmp_path / "c.npz")["l1"], layers["l1"])
    np.savez(tmp_path / "o.npz", l0=np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match="never unpickles"):
        load_layers(tmp_path / "o.npz")["l0"]
    cols = router_summary(direct)
    assert cols["layer"] == ["l0", "l1"] and len(cols["alpha"]) == 2
    assert cols["tau_ref"] == [1.0, 1.0]
    assert set(load_layers(tmp_path / "d.npz", ["l1"])) == {"l1"}
    with pytest.raises(ValueError, match="no layer"):
        load_layers(tmp_path / "d.npz", ["nope"])
    with pytest.raises(ValueError, match="unknown logits file type"):
        load_layers(tmp_path / "d.txt")
    with pytest.raises(ValueError, match="layer 'bad'"):
        router_reports({"bad": np.zeros((4, 1))})


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon")


@pytest.mark.slow
def test_streaming_2gb_memmap_under_1gb_anon(tmp_path):
    n, K = 1 << 26, 8
    path = os.fspath(tmp_path / "big.npy")
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, K))
    rng = np.random.default_rng(14)
    for s in range(0, n, 1 << 22):
        mm[s : s + (1 << 22)] = rng.standard_normal((1 << 22, K), dtype=np.float32)
    mm.flush()
    del mm
    peak, stop = [_rss_anon_kb()], threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_anon_kb())
            time.sleep(0.01)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        r = router_report(np.load(path, mmap_mode="r", allow_pickle=False), k=2, taus=[0.1, 1.0])
    finally:
        stop.set()
        th.join()
    assert r.n_finite == n
    assert peak[0] < 1 << 20, f"peak RssAnon {peak[0] / 1024:.0f} MiB"


def test_tables_adoption_on_any_namedtuple():
    from typing import NamedTuple

    import jax
    import jax.numpy as jnp

    from softhard import Estimate, _tables

    class Result(NamedTuple):
        est: Estimate  # [3]
        big: jax.Array  # [20]
        status: str
        to_dict = _tables.to_dict
        __repr__ = _tables.table_repr

    r = Result(Estimate(jnp.array([1.0, jnp.nan, 3.0]), jnp.ones(3)), jnp.arange(20.0), "ok")
    assert r.to_dict() == {
        "est": {"value": [1.0, None, 3.0], "stderr": [1.0, 1.0, 1.0]},
        "big": list(map(float, range(20))),
        "status": "ok",
    }
    text = repr(r).splitlines()
    assert text[0] == "Result" and "1 ± 1" in text[1] and "[20] in [0, 19]" in text[2]
    seen = []
    jax.jit(lambda e: seen.append(repr(r._replace(est=e))) or e.value)(r.est)  # tracers
    assert "Tracer" in seen[0]


def test_rounding_ties_are_not_an_atom():
    # float32 logits near 4000 (one ulp = 2.4e-4) of a continuous law: rounding ties
    # about as many rows as it leaves one ulp apart; 1 % injected ties are an atom
    rng = np.random.default_rng(3)
    a = (4000.0 + rng.normal(size=(2**20, 4))).astype(np.float32)
    r = router_report(a, widths=np.geomspace(0.01, 0.5, 6))
    assert r.ties.value > 0 and r.near_ties > 0  # there are ties, from rounding only
    assert not r.atom and r.tail.status != "atom", (int(r.ties.value * r.n), r.near_ties)
    assert any("not an atom" in n for n in r.notes)
    b = a.copy()
    b[: len(b) // 100, 1] = b[: len(b) // 100, 0] = b[: len(b) // 100].max(axis=1)
    r2 = router_report(b, widths=np.geomspace(0.01, 0.5, 6))
    assert r2.atom and r2.tail.status == "atom" and r2.certificate is None
