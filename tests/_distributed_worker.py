"""One process of the 2-process `jax.distributed` check (tests/test_distributed.py).

    python tests/_distributed_worker.py PROCESS_ID PORT NUM_PROCESSES

Each process joins the coordinator on 127.0.0.1:PORT (CPU collectives:
gloo), holds its slice of one global float64 sample (rows
`[i·N/P, (i+1)·N/P)`, built with `jax.make_array_from_process_local_data`),
runs `softhard.diagnostic_sweep` and a streamed, sharded Hessian top-k on
the global arrays, and (process 0) prints one JSON line `RESULT {...}`.
`problem()` is imported by the test for the single-process reference.
Exit code 3 with a `PORT-TAKEN` line: the coordinator port is in use.
"""

import json
import socket
import sys
import time

import numpy as np

K, D, N, TAU, TOPK, CHUNK, STEPS = 4, 5, 2 * 300, 0.3, 3, 100, 32
TAUS = (0.01, 0.1, 1.0)


def problem():
    """`(W, b, B, c, x, y)` NumPy float64: the same in every process (fixed seed)."""
    rng = np.random.default_rng(18)
    W, b = rng.normal(size=(K, D)), rng.normal(size=K)
    B, c = rng.normal(size=(K, D)), rng.normal(size=K)
    return W, b, B, c, rng.normal(size=(N, D)), rng.normal(size=N)


def port_free(port: int) -> bool:
    """True when 127.0.0.1:`port` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(pid: int, port: int, nproc: int) -> None:
    if pid == 0 and not port_free(port):
        print(f"PORT-TAKEN: the coordinator port 127.0.0.1:{port} is already in use", flush=True)
        sys.exit(3)
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=nproc,
        process_id=pid,
        initialization_timeout=40,
    )
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import softhard as sh
    from softhard import landscape as L

    assert jax.process_count() == nproc and len(jax.devices()) == nproc * len(jax.local_devices())
    W, b, B, c, x, y = problem()
    model = sh.MoE(sh.LinearRouter(W, b), sh.LinearExperts(B, c))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = slice(pid * N // nproc, (pid + 1) * N // nproc)
    sharding = NamedSharding(mesh, P("data"))
    xs = jax.make_array_from_process_local_data(sharding, x[rows], (N, D))
    ys = jax.make_array_from_process_local_data(sharding, y[rows], (N,))
    assert not xs.is_fully_addressable
    t0 = time.perf_counter()
    sweep = sh.diagnostic_sweep(model, xs, ys, jnp.asarray(TAUS))
    t1 = time.perf_counter()
    spec = L.hessian_spectrum(
        sh.soft_risk,
        model,
        k=TOPK,
        which="both",
        data=(xs, ys),
        chunk_size=CHUNK,
        num_matvecs=STEPS,
        tau=TAU,
    )
    out = {
        "sweep": [np.asarray(v).tolist() for v in jax.tree.leaves(sweep)],
        "eigenvalues": np.asarray(spec.eigenvalues).tolist(),
        "devices": len(jax.devices()),
        "processes": jax.process_count(),
        "seconds": [t1 - t0, time.perf_counter() - t1],
    }
    if pid == 0:
        print("RESULT " + json.dumps(out), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 2)
