"""Load test of `mmar serve`: N concurrent clients (gradio_client) send text-to-image requests at
once to the app on 127.0.0.1, started here (a checkpoint, or --tiny: a random tiny model) or
already running (--url). Every request must end in an image or a clean "busy, try again"
(Gradio's queue is full: HTTP 503, which gradio_client raises as QueueError "Queue is full!
Please try again."); anything else is an error. Prints the counts and the p50 / p95 latency of
each outcome, checks that the server still answers afterwards, and writes JSON with --json.
Exits 1 when a request ended in an error or the server did not answer afterwards.

    python benchmarks/serve_load.py --tiny --clients 24 --requests-per-client 2 \\
        [--concurrency 1] [--max-queue 16] [--json FILE]
    python benchmarks/serve_load.py --model runs/quickstart --clients 24 --num-steps 10
    python benchmarks/serve_load.py --url http://127.0.0.1:7860/ --clients 24
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

OUTCOMES = ("ok", "busy", "error")
TINY_CORPUS = ["a red circle", "a blue square at the top", "digit seven"]


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile (q in (0, 1]) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def load_model(args: argparse.Namespace) -> Any:
    import torch

    from mmar.model.config import tiny_config
    from mmar.pipelines.mmar import MMAR

    if args.tiny:
        torch.manual_seed(0)
        model = MMAR.from_config(tiny_config(), TINY_CORPUS)
        model.model.eval()
        return model
    return MMAR.from_pretrained(args.model, device=args.device)


@contextlib.contextmanager
def served(args: argparse.Namespace) -> Iterator[str]:
    """The URL of the app under test: --url, or an app started here (closed afterwards)."""
    if args.url:
        yield args.url
        return
    from mmar.serve.app import build_demo, launch
    from mmar.serve.config import ServeConfig, free_port
    from mmar.serve.handlers import Service

    port = free_port()
    cfg = ServeConfig(port=port, concurrency=args.concurrency, max_queue=args.max_queue)
    cfg.validate()
    demo = build_demo(Service(load_model(args), cfg, "tiny" if args.tiny else args.model))
    launch(demo, cfg, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def request_args(client: Any, args: argparse.Namespace, seed: int) -> list[Any]:
    """The /generate endpoint's inputs: the prompt and the sampling form (the server's
    defaults, --num-steps if given)."""
    params = client.view_api(print_info=False, return_format="dict")
    defaults = [
        p.get("parameter_default") for p in params["named_endpoints"]["/generate"]["parameters"]
    ]
    values = [args.prompt, *defaults[1:]]
    if args.num_steps is not None:
        values[3] = args.num_steps  # prompt, num_iter, guidance, num_steps, scheduler, T, seed
    values[6] = seed
    return values


def one_request(client: Any, values: list[Any], timeout: float) -> dict[str, Any]:
    """Send one request and classify its outcome: ok (an image came back), busy (the queue was
    full) or error (anything else), with the latency and the message."""
    from gradio_client.utils import QueueError

    t0 = time.perf_counter()
    try:
        out = client.submit(*values, api_name="/generate").result(timeout=timeout)
        ok = isinstance(out, (list, tuple)) and bool(out[0])
        outcome, message = ("ok", str(out[1])) if ok else ("error", f"no image: {out!r}")
    except QueueError as e:
        outcome, message = "busy", str(e)
    except Exception as e:
        outcome, message = "error", f"{type(e).__name__}: {e}"
    return {"outcome": outcome, "latency_s": time.perf_counter() - t0, "message": message}


def run_clients(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """--clients threads, each with its own gradio_client.Client, released at once by a
    barrier; each sends --requests-per-client requests one after the other."""
    from gradio_client import Client

    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(args.clients)

    def client_thread(i: int) -> None:
        try:
            client = Client(url, verbose=False, analytics_enabled=False)
            values = request_args(client, args, seed=i)
        except Exception as e:  # could not even connect: every request of it is an error
            barrier.wait()
            row = {"outcome": "error", "latency_s": 0.0, "message": f"connect: {e}"}
            with lock:
                results.extend({"client": i, "request": j, **row} for j in range(args.requests))
            return
        barrier.wait()
        for j in range(args.requests):
            row = one_request(client, values, args.timeout)
            with lock:
                results.append({"client": i, "request": j, **row})

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results, key=lambda r: (r["client"], r["request"]))


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
    latency = {}
    for o in OUTCOMES:
        xs = [r["latency_s"] for r in results if r["outcome"] == o]
        latency[o] = {"p50": percentile(xs, 0.5), "p95": percentile(xs, 0.95), "n": len(xs)}
    return {"counts": counts, "latency_s": latency}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR", help="serve this checkpoint")
    src.add_argument("--tiny", action="store_true", help="serve a random tiny model")
    src.add_argument("--url", help="a running app, e.g. http://127.0.0.1:7860/")
    ap.add_argument("--device", default=None, help="--model's device (default: torch's)")
    ap.add_argument("--clients", type=int, default=24, help="concurrent clients (default 24)")
    ap.add_argument("--requests-per-client", dest="requests", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=1, help="the app's (not with --url)")
    ap.add_argument("--max-queue", type=int, default=16, help="the app's (not with --url)")
    ap.add_argument("--prompt", default="a red circle")
    ap.add_argument("--num-steps", type=int, default=None, help="diffusion steps per token")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        ap.error("--clients and --requests-per-client must be >= 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    with served(args) as url:
        t0 = time.perf_counter()
        results = run_clients(url, args)
        wall = time.perf_counter() - t0
        from gradio_client import Client

        client = Client(url, verbose=False, analytics_enabled=False)
        after = one_request(client, request_args(client, args, seed=0), args.timeout)

    report = {
        "url": None if not args.url else args.url,
        "server": None
        if args.url
        else {
            "concurrency": args.concurrency,
            "max_queue": args.max_queue,
            "model": "tiny" if args.tiny else args.model,
        },
        "clients": args.clients,
        "requests_per_client": args.requests,
        "wall_s": wall,
        **summarise(results),
        "after": after,
        "requests": results,
    }
    c, lat = report["counts"], report["latency_s"]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{1000 * x:.0f} ms"

    print(
        f"{len(results)} requests from {args.clients} clients in {wall:.1f} s: "
        f"{c['ok']} ok, {c['busy']} busy, {c['error']} error"
    )
    for o in OUTCOMES:
        if lat[o]["n"]:
            print(f"  {o:5s} latency p50 {ms(lat[o]['p50'])}, p95 {ms(lat[o]['p95'])}")
    busy = {r["message"] for r in results if r["outcome"] == "busy"}
    if busy:
        print(f"  busy answer: {' | '.join(sorted(busy))}")
    for r in results:
        if r["outcome"] == "error":
            print(f"  error (client {r['client']}, request {r['request']}): {r['message']}")
    print(f"afterwards: {after['outcome']} ({after['message']}, {ms(after['latency_s'])})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if c["error"] == 0 and after["outcome"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
