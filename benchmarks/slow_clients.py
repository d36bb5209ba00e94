"""Slow clients against ``lso serve`` (loopback only, bounded, stops by itself).

What runs, with one replica of the demo checkpoint (ONNX FP32, 1 ORT thread; ``--onnx`` to reuse an export):

1. ``lso serve MODEL --replicas 1 --num-cpus 2`` as a subprocess with its default client limits.
   Phase ``unloaded``: ``--valid`` valid requests (``--size``² x4, npz) one after another.
2. Phase ``trickle_30_addresses``: ``--tricklers`` clients, each from its own loopback address
   (127.0.0.2, .3, ...), send the headers of a valid-sized npz request and then its body at 1 byte per
   second; from 2 s into the stall a valid request is sent every second (after the previous answer)
   until the trickling clients are done (at most ``--valid`` of them). What each trickling client got (408,
   closed, 429, still open) and when.
3. Phase ``trickle_one_address``: the same with every trickling client on 127.0.0.1 (the per-client cap
   answers most of them 429 at once); the valid requests come from 127.0.0.200.
4. Phase ``serve_proxy_baseline`` (skip with ``--no-baseline``): the same application behind Ray Serve's
   own HTTP proxy (what ``lso serve`` used before the front door), the trickling clients as in phase 2,
   one valid request with a ``--baseline-timeout`` client timeout; the trickling clients give up after
   that timeout plus 5 s.

Every client has a time limit; the server is stopped with SIGINT (then killed after 60 s).

    python benchmarks/slow_clients.py                  # writes benchmarks/results/slow_clients.json + .md
    python benchmarks/slow_clients.py --no-baseline --no-write
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scene(size: int) -> tuple[np.ndarray, np.ndarray]:
    from lso.data import degrade, synthetic_scene
    from lso.data.synthetic import EVAL_SEEDS

    hr, lr = degrade(synthetic_scene(EVAL_SEEDS[0], size), 4)
    return hr.astype(np.float32), lr.astype(np.float32)


def _trickle(port: int, source: str, declared: int, limit_s: float, path: str = "/fuse") -> dict[str, Any]:
    """Headers declaring ``declared`` bytes, then 1 byte/s until an answer, a close, or ``limit_s``."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        try:
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-npz\r\n"
                         f"Content-Length: {declared}\r\n\r\n".encode())
        except OSError as exc:
            return {"outcome": f"connect failed: {exc}", "seconds": 0.0, "bytes_sent": 0}
        start = time.monotonic()
        sock.settimeout(1.0)
        while time.monotonic() - start < limit_s:
            try:
                sock.sendall(b"P")
                sent += 1
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return {"outcome": "closed", "seconds": time.monotonic() - start, "bytes_sent": sent}
            if not data:
                return {"outcome": "closed", "seconds": time.monotonic() - start, "bytes_sent": sent}
            return {"outcome": data.split(b" ", 2)[1].decode(), "seconds": time.monotonic() - start,
                    "bytes_sent": sent}
        return {"outcome": "still open", "seconds": time.monotonic() - start, "bytes_sent": sent}


class _SourceHTTPConnection:
    """urllib opener whose connections leave from a given loopback address."""

    def __init__(self, source: str) -> None:
        import http.client

        class Conn(http.client.HTTPConnection):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["source_address"] = (source, 0)
                super().__init__(*args, **kwargs)

        class Handler(urllib.request.HTTPHandler):
            def http_open(self, req: Any) -> Any:
                return self.do_open(Conn, req)

        self.opener = urllib.request.build_opener(Handler)


def _valid(url: str, body: bytes, want: np.ndarray, timeout: float, source: str = "127.0.0.1") -> dict[str, Any]:
    from lso.scaleout.wire import decode_response

    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-npz"}, method="POST")
    opener = _SourceHTTPConnection(source).opener
    start = time.perf_counter()
    try:
        with opener.open(request, timeout=timeout) as response:
            data = response.read()
            status = response.status
            got = decode_response(data, response.headers.get("content-type"), {})
            wrong = bool(got.shape != want.shape or float(np.max(np.abs(got - want))) > 1e-4)
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "seconds": time.perf_counter() - start, "error": exc.read()[:200].decode()}
    except (urllib.error.URLError, OSError) as exc:
        return {"status": 0, "seconds": time.perf_counter() - start, "error": f"no answer: {exc}"[:200]}
    return {"status": status, "seconds": time.perf_counter() - start, "wrong": wrong}


def _stall_phase(name: str, url: str, port: int, body: bytes, want: np.ndarray, *, tricklers: int,
                 sources: list[str], valid_source: str, trickle_limit_s: float, max_valid: int,
                 valid_timeout: float, single_valid: bool = False) -> dict[str, Any]:
    """Tricklers start; 2 s later valid requests go one after another until the tricklers are done."""
    print(f"phase {name}: {tricklers} trickling clients ...", flush=True)
    valid: list[dict[str, Any]] = []
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=tricklers) as pool:
        futures = [pool.submit(_trickle, port, sources[i], len(body), trickle_limit_s) for i in range(tricklers)]
        next_at = t0 + 2.0
        while len(valid) < max_valid and not all(f.done() for f in futures):
            time.sleep(max(0.0, next_at - time.monotonic()))  # one valid request a second, from 2 s in
            next_at = time.monotonic() + 1.0
            result = _valid(url, body, want, valid_timeout, valid_source)
            result["sent_at_s"] = round(time.monotonic() - t0 - result["seconds"], 2)
            valid.append(result)
            print(f"  valid request: {result}", flush=True)
            if single_valid:
                break
        outcomes = [f.result(timeout=trickle_limit_s + 30) for f in futures]
    got: dict[str, int] = {}
    for o in outcomes:
        got[o["outcome"]] = got.get(o["outcome"], 0) + 1
    secs = [o["seconds"] for o in outcomes]
    return {"phase": name, "tricklers": tricklers, "trickler_sources": sorted(set(sources[:tricklers])),
            "declared_body_bytes": len(body), "trickler_outcomes": got,
            "trickler_seconds": {"min": round(min(secs), 2), "max": round(max(secs), 2)},
            "trickler_bytes_sent_max": max(o["bytes_sent"] for o in outcomes),
            "valid": valid, "valid_latency_s": _stats([v["seconds"] for v in valid if v["status"] == 200]),
            "valid_statuses": sorted({v["status"] for v in valid}), "wall_s": round(time.monotonic() - t0, 2)}


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "max": None}
    return {"n": len(values), "median": round(float(np.median(values)), 3), "max": round(float(max(values)), 3)}


def _wait_ready(base: str, proc: subprocess.Popen | None, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"lso serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/-/healthz", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server was not ready after {timeout:.0f} s")


def _baseline(onnx: Path, body: bytes, want: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """The same application behind Ray Serve's own HTTP proxy (no front door)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from lso.scaleout.serve import ServeOptions, build_app

    port = _free_port()
    opts = ServeOptions(artifact=onnx, replicas=1, port=port, num_cpus_per_replica=1.0, app_name="baseline")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(opts), name="baseline", route_prefix="/fuse", blocking=False)
        url = f"http://127.0.0.1:{port}/fuse"
        unloaded = [_valid(url, body, want, 120)]
        unloaded += [_valid(url, body, want, 120) for _ in range(2)]
        result = _stall_phase("serve_proxy_baseline", url, port, body, want, tricklers=args.tricklers,
                              sources=[f"127.0.0.{2 + i}" for i in range(args.tricklers)], valid_source="127.0.0.1",
                              trickle_limit_s=args.baseline_timeout + 5, max_valid=1,
                              valid_timeout=args.baseline_timeout, single_valid=True)
        result["unloaded_latency_s"] = _stats([v["seconds"] for v in unloaded[1:] if v["status"] == 200])
        result["valid_client_timeout_s"] = args.baseline_timeout
        return result
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", help="exported ONNX of the demo checkpoint (default: export it now)")
    parser.add_argument("--size", type=int, default=64, help="HR size of the valid requests")
    parser.add_argument("--tricklers", type=int, default=30)
    parser.add_argument("--valid", type=int, default=12, help="valid requests per phase (at most)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--baseline-timeout", type=float, default=20.0,
                        help="client timeout of the valid request in the Serve-proxy baseline")
    parser.add_argument("--no-baseline", action="store_true", help="skip the Serve-proxy baseline")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not 1 <= args.tricklers <= 200 or not 1 <= args.valid <= 50:
        parser.error("--tricklers must be in 1..200 and --valid in 1..50 (the benchmark is bounded)")

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from lso.benchmarks._report import machine_info
    from lso.runtime import load
    from lso.scaleout.frontdoor import ClientLimits
    from lso.scaleout.wire import encode_request

    work = Path(tempfile.mkdtemp(prefix="lso_slow_clients_"))
    onnx = Path(args.onnx) if args.onnx else None
    if onnx is None:
        from lso.export import export_onnx

        print("exporting the demo checkpoint to ONNX ...", flush=True)
        onnx = export_onnx(None, work / "lso_demo.onnx")
    hr, lr = _scene(args.size)
    body, _ = encode_request(hr, lr)
    with load(onnx, threads=1) as runner:
        want = runner.fuse(hr, lr)
    limits = ClientLimits()
    phases: dict[str, Any] = {}

    port = _free_port()
    base, url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/fuse"
    cmd = [sys.executable, "-m", "lso", "serve", str(onnx), "--replicas", "1", "--threads", "1",
           "--num-cpus", str(args.num_cpus), "--port", str(port)]
    print("starting:", " ".join(cmd), flush=True)
    log_path = work / "serve.log"
    log_file = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        startup = _wait_ready(base, proc, 300)
        print(f"ready after {startup:.1f} s", flush=True)
        _valid(url, body, want, 120)  # warm-up
        unloaded = [_valid(url, body, want, 120) for _ in range(args.valid)]
        phases["unloaded"] = {"phase": "unloaded", "valid": unloaded,
                              "valid_latency_s": _stats([v["seconds"] for v in unloaded if v["status"] == 200]),
                              "valid_statuses": sorted({v["status"] for v in unloaded})}
        print(json.dumps(phases["unloaded"]["valid_latency_s"]), flush=True)
        limit_s = limits.transfer_deadline_s(len(body)) + limits.header_timeout_s + 5
        phases["trickle_30_addresses"] = _stall_phase(
            "trickle_30_addresses", url, port, body, want, tricklers=args.tricklers,
            sources=[f"127.0.0.{2 + i}" for i in range(args.tricklers)], valid_source="127.0.0.1",
            trickle_limit_s=limit_s, max_valid=args.valid, valid_timeout=60)
        phases["trickle_one_address"] = _stall_phase(
            "trickle_one_address", url, port, body, want, tricklers=args.tricklers,
            sources=["127.0.0.1"] * args.tricklers, valid_source="127.0.0.200", trickle_limit_s=limit_s,
            max_valid=args.valid, valid_timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log_file.close()
    if not args.no_baseline:
        phases["serve_proxy_baseline"] = _baseline(onnx, body, want, args)

    unloaded_median = phases["unloaded"]["valid_latency_s"]["median"]
    stalled = phases["trickle_30_addresses"]
    ok = (stalled["valid_statuses"] == [200] and unloaded_median is not None
          and stalled["valid_latency_s"]["max"] < 2.0 + unloaded_median
          and set(stalled["trickler_outcomes"]) <= {"408", "closed"})
    data = {"machine": {**machine_info(), "ray": ray.__version__, "cpu_count_used_by_ray": args.num_cpus},
            "config": {"model": "bundled demo checkpoint (paper config), ONNX FP32, 1 ORT thread",
                       "replicas": 1, "max_ongoing_requests": 2, "size": args.size, "ratio": 4,
                       "encoding": "application/x-npz", "request_bytes": len(body), "tricklers": args.tricklers,
                       "trickle_rate": "1 byte/s after the headers", "client_limits": limits.__dict__,
                       "body_deadline_s": limits.transfer_deadline_s(len(body)),
                       "process_niceness": os.getpriority(os.PRIO_PROCESS, 0)},
            "server_startup_s": round(startup, 1), "phases": phases,
            "check": {"valid_under_2s_plus_unloaded": ok}}
    md = _markdown(data)
    print(md)
    if not args.no_write:
        from lso.benchmarks._report import write_results

        for path in write_results("slow_clients", data, md):
            print("wrote", path)
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"the check failed; the server log is {log_path}", file=sys.stderr)
    return 0 if ok else 1


def _markdown(data: dict[str, Any]) -> str:
    from lso.benchmarks._report import markdown_table

    m, cfg = data["machine"], data["config"]
    lim = cfg["client_limits"]
    rows = []
    for p in data["phases"].values():
        lat = p["valid_latency_s"]
        sent = [v["sent_at_s"] for v in p["valid"] if "sent_at_s" in v]
        rows.append([p["phase"], p.get("tricklers", 0),
                     f"{len(p['valid'])}" + (f" ({sent[0]:g}-{sent[-1]:g} s in)" if sent else ""),
                     ", ".join(map(str, p["valid_statuses"])), lat["n"],
                     lat["median"], lat["max"],
                     ", ".join(f"{k}: {v}" for k, v in sorted(p.get("trickler_outcomes", {}).items())) or "-",
                     (f"{p['trickler_seconds']['min']}-{p['trickler_seconds']['max']}"
                      if "trickler_seconds" in p else "-")])
    table = markdown_table(["phase", "trickling clients", "valid requests sent", "valid: statuses", "valid: answered",
                            "valid p50 (s)",
                            "valid max (s)", "trickling clients got", "trickling clients ended after (s)"], rows)
    base = data["phases"].get("serve_proxy_baseline")
    lines = [f"# `lso serve` under slow clients ({cfg['tricklers']} clients trickling a declared body at 1 byte/s)",
             "",
             f"{m['cpu']} ({m['cpu_count']} cores, shared with other jobs; niceness {cfg['process_niceness']}), "
             f"Python {m['python']}, Ray {m['ray']} (local, {m['cpu_count_used_by_ray']} CPUs), loopback only. "
             f"{cfg['model']}, 1 replica, max_ongoing_requests {cfg['max_ongoing_requests']}; valid requests "
             f"{cfg['size']}x{cfg['size']} x{cfg['ratio']} npz ({cfg['request_bytes']} bytes), the trickling "
             f"clients declare the same size.", "",
             f"Front door defaults: headers within {lim['header_timeout_s']:g} s, body within "
             f"max({lim['body_timeout_s']:g} s, size / {lim['body_rate_mb_s']:g} MiB/s) = "
             f"{cfg['body_deadline_s']:g} s here, keep-alive {lim['keep_alive_s']:g} s, "
             f"{lim['max_connections_per_client']} connections per client address, {lim['max_connections']} in "
             f"all.", "", table, "",
             "- `trickle_30_addresses`: each trickling client from its own address (127.0.0.2-31); valid requests "
             "from 127.0.0.1, one a second (after the previous answer) from 2 s into the stall.",
             "- `trickle_one_address`: every trickling client from 127.0.0.1 (the per-client cap answers all but "
             f"{lim['max_connections_per_client']} of them 429 at once); valid requests from 127.0.0.200.",
             ]
    if base:
        first = base["valid"][0] if base["valid"] else {}
        answer = (f"answered {first['status']} after {first['seconds']:.2f} s" if first.get("status")
                  else f"got no answer within {base['valid_client_timeout_s']:g} s")
        lines.append(f"- `serve_proxy_baseline`: the same application behind Ray Serve's own HTTP proxy (what "
                     f"`lso serve` used before the front door, no request timeout), one valid request with a "
                     f"{base['valid_client_timeout_s']:g} s client timeout, sent 2 s into the stall: it {answer} "
                     f"(unloaded latency there {base['unloaded_latency_s']['median']} s). The trickling clients "
                     f"were never answered and gave up by themselves after {base['valid_client_timeout_s'] + 5:g} s.")
    lines += ["", f"Check (valid requests during the stall answered within 2 s + the unloaded median, every "
                  f"trickling client got 408 or a closed connection): "
                  f"{'passed' if data['check']['valid_under_2s_plus_unloaded'] else 'FAILED'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
