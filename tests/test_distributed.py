"""Two real processes under `jax.distributed` equal one process (issue 18).

Two local CPU processes (`tests/_distributed_worker.py`) join a coordinator on
127.0.0.1 (a free port found by binding a socket), each holding half of one
global float64 sample; `diagnostic_sweep` and a streamed Hessian top-k on the
global arrays must equal the single-process answers computed here to
relative 1e-10. A taken coordinator port gives a clean message, not a hang.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softhard as sh
from softhard import landscape as L

WORKER = pathlib.Path(__file__).resolve().parent / "_distributed_worker.py"
sys.path.insert(0, str(WORKER.parent))
import _distributed_worker as W  # noqa: E402

TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    return env


def _launch(port: int, nproc: int = 2):
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(i), str(port), str(nproc)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for i in range(nproc)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT_S))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.communicate()
        pytest.fail(f"jax.distributed workers on 127.0.0.1:{port} did not finish in {TIMEOUT_S} s")
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outs)]


def _model():
    Wr, b, B, c, _, _ = W.problem()
    return sh.MoE(sh.LinearRouter(Wr, b), sh.LinearExperts(B, c))


def _data():
    return tuple(jnp.asarray(a) for a in W.problem()[4:])


def _single_process():
    model, (x, y) = _model(), _data()
    sweep = sh.diagnostic_sweep(model, x, y, jnp.asarray(W.TAUS))
    spec = L.hessian_spectrum(
        lambda m: sh.soft_risk(m, x, y, W.TAU), model, k=W.TOPK, which="both", num_matvecs=W.STEPS
    )
    return [np.asarray(v) for v in jax.tree.leaves(sweep)], np.asarray(spec.eigenvalues)


def test_two_processes_equal_one():
    port = _free_port()
    results = _launch(port)
    for i, (rc, out, err) in enumerate(results):
        if rc == 3 and "PORT-TAKEN" in out:
            pytest.fail(f"coordinator port 127.0.0.1:{port} was taken before the workers started")
        assert rc == 0, f"process {i} exited {rc}:\n{err[-3000:]}"
    line = next(s for s in results[0][1].splitlines() if s.startswith("RESULT "))
    got = json.loads(line[len("RESULT ") :])
    assert got["processes"] == 2 and got["devices"] == 2
    sweep, eig = _single_process()
    assert len(got["sweep"]) == len(sweep)
    for a, b in zip(got["sweep"], sweep):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(got["eigenvalues"]), eig, rtol=1e-10)
    dense = np.linalg.eigvalsh(
        np.asarray(L.hessian(sh.soft_risk, _model(), data=_data(), tau=W.TAU))
    )
    np.testing.assert_allclose(eig, np.r_[dense[: W.TOPK], dense[-W.TOPK :]], rtol=1e-8)


def test_taken_port_fails_cleanly():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, str(WORKER), "0", str(port), "2"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
    assert proc.returncode == 3
    assert f"coordinator port 127.0.0.1:{port} is already in use" in proc.stdout
