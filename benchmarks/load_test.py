"""Load test of ``lso serve``: N concurrent clients on loopback, then the same while one replica is killed.

What runs:

1. The demo checkpoint exported to ONNX (``--onnx`` to reuse one), a local Ray started by this script
   (``--num-cpus``, default 2), and ``lso serve MODEL --address <that Ray> --replicas R --threads 1`` as a
   subprocess (the command users run, joining a cluster as it would on a real one).
2. Phase ``steady``: ``--clients`` threads each POST a ``--size``² x``--ratio`` held-out synthetic scene
   (npz) back to back for ``--seconds``; every answer is compared with the same scene fused locally.
3. Phase ``replica_killed``: the same, and ``--kill-at`` seconds in one replica actor is killed
   (``ray.kill``); the script watches Serve until R replicas run again (recovery time).

Clients retry a request that got no answer or a 5xx (up to ``--attempts`` tries, 0.5 s apart: fusion is
idempotent); 4xx are never retried. Every request ends as *completed* (possibly after retries) or
*failed* with its last error, so none is lost silently; a completed answer that differs from the local
result (max abs > 1e-4) counts as *wrong*.

    python benchmarks/load_test.py                       # 2 replicas, 4 clients, 60 s per phase
    python benchmarks/load_test.py --seconds 20 --clients 2 --no-write

Writes ``benchmarks/results/load_test.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RETRY_STATUSES = (0, 500, 502, 503, 504)


@dataclass
class Outcome:
    """One client request, after its retries."""

    start: float
    seconds: float
    status: int
    attempts: int
    error: str = ""
    wrong: bool = False
    attempt_errors: list = field(default_factory=list)


def _version() -> str:
    import lso

    return lso.__version__


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scene(size: int, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    from lso.data import degrade, synthetic_scene
    from lso.data.synthetic import EVAL_SEEDS

    gt = synthetic_scene(EVAL_SEEDS[0], size)
    hr, lr = degrade(gt, ratio)
    return hr.astype(np.float32), lr.astype(np.float32)


def _request(url: str, hr: np.ndarray, lr: np.ndarray, want: np.ndarray, attempts: int, t0: float) -> Outcome:
    from lso.scaleout.client import RemoteError, fuse_remote

    start = time.perf_counter()
    errors = []
    for attempt in range(1, attempts + 1):
        try:
            got = fuse_remote(url, hr, lr, timeout=120)
        except RemoteError as exc:
            errors.append(f"{exc.status}: {exc.reason[:160]}")
            if exc.status not in RETRY_STATUSES or attempt == attempts:
                return Outcome(start - t0, time.perf_counter() - start, exc.status, attempt, errors[-1],
                               attempt_errors=errors)
            time.sleep(0.5)
            continue
        wrong = got.shape != want.shape or float(np.max(np.abs(got - want))) > 1e-4
        return Outcome(start - t0, time.perf_counter() - start, 200, attempt, "", wrong, errors)
    raise AssertionError("unreachable")


def _phase(url: str, hr: np.ndarray, lr: np.ndarray, want: np.ndarray, *, clients: int, seconds: float,
           attempts: int, during: Any | None = None) -> tuple[list[Outcome], float]:
    """Run ``clients`` closed-loop clients for ``seconds``; in-flight requests finish after the deadline."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    def client() -> None:
        while time.perf_counter() < deadline:
            outcome = _request(url, hr, lr, want, attempts, t0)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    if during is not None:
        during(t0)
    for t in threads:
        t.join()
    return outcomes, time.perf_counter() - t0


def _summarise(name: str, outcomes: list[Outcome], wall: float, clients: int, size: int) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == 200]
    lat = np.array([o.seconds for o in ok]) if ok else np.array([np.nan])
    errors: dict[str, int] = {}
    for o in outcomes:
        if o.status != 200:
            errors[o.error] = errors.get(o.error, 0) + 1
    return {
        "phase": name, "clients": clients, "wall_s": round(wall, 2), "requests": len(outcomes),
        "completed": len(ok), "failed": len(outcomes) - len(ok), "wrong": sum(o.wrong for o in ok),
        "retried": sum(o.attempts > 1 for o in outcomes), "completed_after_retry": sum(o.attempts > 1 for o in ok),
        "throughput_rps": round(len(ok) / wall, 3), "megapixels_per_s": round(len(ok) * size * size / wall / 1e6, 4),
        "latency_s": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                      "p99": float(np.percentile(lat, 99)), "mean": float(np.mean(lat)), "max": float(np.max(lat))},
        "errors": errors,
        "retry_errors": sorted({e for o in outcomes for e in o.attempt_errors}),
    }


def _replicas(ray: Any) -> list[str]:
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith("SERVE_REPLICA::"))


def _running_replicas(app: str) -> int:
    from ray import serve

    try:
        status = serve.status().applications[app]
    except Exception:  # controller busy, or the application not there yet
        return 0
    return sum(int(n) for d in status.deployments.values() for state, n in d.replica_states.items()
               if state == "RUNNING")  # ReplicaState is a str enum


def _recovered(ray: Any, victim: str, replicas: int) -> bool:
    """A replacement exists (R replica actors, the victim not among them) and Serve reports R running."""
    names = _replicas(ray)
    return victim not in names and len(names) == replicas and _running_replicas("lso") == replicas


def _wait(predicate, timeout: float, what: str) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", help="exported ONNX of the demo checkpoint (default: export it now)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--kill-at", type=float, default=15.0, help="seconds into the second phase")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--ratio", type=int, default=4)
    parser.add_argument("--attempts", type=int, default=3, help="tries per request (retries on no answer/5xx)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--port", type=int, help="HTTP port (default: a free one)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from lso.runtime import load

    work = Path(tempfile.mkdtemp(prefix="lso_load_test_"))
    onnx = Path(args.onnx) if args.onnx else None
    if onnx is None:
        from lso.export import export_onnx

        print("exporting the demo checkpoint to ONNX ...", flush=True)
        onnx = export_onnx(None, work / "lso_demo.onnx")
    hr, lr = _scene(args.size, args.ratio)
    with load(onnx, threads=1) as runner:
        t = time.perf_counter()
        want = runner.fuse(hr, lr)
        local_1thread_s = time.perf_counter() - t
    print(f"local fusion, 1 ORT thread: {local_1thread_s:.2f} s", flush=True)

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    address = ray.get_runtime_context().gcs_address
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}/fuse"
    log_path = work / "serve.log"
    cmd = [sys.executable, "-m", "lso", "serve", str(onnx), "--address", address, "--replicas", str(args.replicas),
           "--threads", "1", "--num-cpus-per-replica", "1", "--max-ongoing-requests", "2", "--port", str(port)]
    print("starting:", " ".join(cmd), flush=True)
    log_file = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    results: dict[str, Any] = {}
    try:
        startup = _wait(lambda: _running_replicas("lso") == args.replicas or proc.poll() is not None, 300,
                        "the replicas")
        if proc.poll() is not None:
            raise RuntimeError(f"lso serve exited with {proc.returncode}; see {log_path}")
        print(f"{args.replicas} replicas running after {startup:.1f} s", flush=True)
        for _ in range(args.replicas * 2):  # warm-up: every replica's first run
            _request(url, hr, lr, want, args.attempts, time.perf_counter())

        steady, wall = _phase(url, hr, lr, want, clients=args.clients, seconds=args.seconds, attempts=args.attempts)
        results["steady"] = _summarise("steady", steady, wall, args.clients, args.size)
        print(json.dumps(results["steady"], indent=1), flush=True)

        kill: dict[str, Any] = {}

        def killer(t0: float) -> None:
            time.sleep(max(0.0, t0 + args.kill_at - time.perf_counter()))
            names = _replicas(ray)
            victim = names[0]
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            kill["at_s"] = round(time.perf_counter() - t0, 2)
            kill["replica"] = victim
            kill["replicas_before"] = len(names)
            try:
                kill["recovered_after_s"] = round(_wait(lambda: _recovered(ray, victim, args.replicas), 120,
                                                        "a replacement replica"), 2)
            except TimeoutError as exc:
                kill["recovered_after_s"] = None
                kill["recovery_error"] = str(exc)
            kill["replicas_after"] = _replicas(ray)

        killed, wall = _phase(url, hr, lr, want, clients=args.clients, seconds=args.seconds, attempts=args.attempts,
                              during=killer)
        results["replica_killed"] = _summarise("replica_killed", killed, wall, args.clients, args.size)
        results["replica_killed"]["kill"] = kill
        recovered_at = (kill.get("at_s") or 0) + (kill.get("recovered_after_s") or 0)
        after = [o for o in killed if o.start >= recovered_at]
        results["replica_killed"]["after_recovery"] = {
            "requests": len(after), "completed": sum(o.status == 200 for o in after),
            "retried": sum(o.attempts > 1 for o in after)}
        print(json.dumps(results["replica_killed"], indent=1), flush=True)
        alive = _running_replicas("lso")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # lso serve shuts Serve down on Ctrl-C
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log_file.close()
        ray.shutdown()

    data = {"config": {"replicas": args.replicas, "clients": args.clients, "seconds_per_phase": args.seconds,
                       "kill_at_s": args.kill_at, "size": args.size, "ratio": args.ratio, "attempts": args.attempts,
                       "ray_num_cpus": args.num_cpus, "ort_threads_per_replica": 1, "max_ongoing_requests": 2,
                       "encoding": "application/x-npz", "model": "bundled demo checkpoint (paper config), ONNX FP32",
                       "process_niceness": os.getpriority(os.PRIO_PROCESS, 0)},
            "versions": {"ray": ray.__version__, "lso-deploy": _version()},
            "local_fusion_1thread_s": round(local_1thread_s, 3), "replicas_running_at_end": alive,
            "phases": results}
    md = _markdown(data)
    print(md)
    if not args.no_write:
        from lso.benchmarks._report import write_results

        for path in write_results("load_test", data, md):
            print("wrote", path)
    ok = all(p["failed"] == 0 and p["wrong"] == 0 for p in results.values())
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"requests failed or were wrong; the server log is {log_path}", file=sys.stderr)
    return 0 if ok else 1


def _markdown(data: dict[str, Any]) -> str:
    from lso.benchmarks._report import markdown_table

    cfg = data["config"]
    ray_version = f"; Ray {data['versions']['ray']}" if data.get("versions", {}).get("ray") else ""
    rows = []
    for p in data["phases"].values():
        lat = p["latency_s"]
        rows.append([p["phase"], p["clients"], p["wall_s"], p["requests"], p["completed"], p["failed"], p["wrong"],
                     p["completed_after_retry"], p["throughput_rps"], lat["p50"], lat["p99"], lat["max"]])
    table = markdown_table(["phase", "clients", "wall (s)", "requests", "completed", "failed", "wrong",
                            "completed after retry", "req/s", "p50 (s)", "p99 (s)", "max (s)"], rows)
    lines = [f"# `lso serve` load test ({cfg['replicas']} replicas, {cfg['size']}x{cfg['size']} x{cfg['ratio']}, "
             f"{cfg['clients']} clients, {cfg['seconds_per_phase']:.0f} s per phase)", "",
             f"{cfg['model']}{ray_version}; ONNX Runtime CPU, {cfg['ort_threads_per_replica']} intra-op thread and "
             f"1 Ray CPU per replica, local Ray with {cfg['ray_num_cpus']} CPUs, loopback HTTP, {cfg['encoding']}. "
             f"Local fusion of the same scene with 1 thread: {data['local_fusion_1thread_s']:.2f} s. Clients retry "
             f"no-answer/5xx up to {cfg['attempts']} tries; failed = gave up, wrong = answer differs from local "
             f"fusion.", "",
             table, ""]
    kill = data["phases"].get("replica_killed", {}).get("kill")
    if kill:
        after = data["phases"]["replica_killed"]["after_recovery"]
        rec = kill.get("recovered_after_s")
        lines.append(f"Replica `{kill['replica']}` killed (`ray.kill`) {kill['at_s']} s into the second phase; "
                     + (f"{kill['replicas_before']} replicas running again {rec} s later" if rec is not None
                        else f"not recovered: {kill.get('recovery_error')}")
                     + f". After recovery: {after['completed']}/{after['requests']} requests completed.")
        errs = data["phases"]["replica_killed"].get("retry_errors")
        if errs:
            lines.append("")
            lines.append("Errors seen by retried attempts: " + "; ".join(f"`{e}`" for e in errs[:5]))
    lines.append("")
    lines.append(f"Process niceness {cfg['process_niceness']}; this 2-core machine was shared with other jobs "
                 f"during the run, so absolute latencies are indicative.")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
