"""`python -m tests.fake_dify --port 5001 --seed-demo`: a fake central Dify for demos and manual tests."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvicorn

from tests.fake_dify.app import create_fake_dify
from tests.fake_dify.demo import seed_chat, seed_demo
from tests.fake_dify.live import uvicorn_config
from tests.fake_dify.snapshot import restore
from tests.fake_dify.state import Clock, FakeDifyState


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_dify", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback)")
    parser.add_argument("--port", type=int, default=5001, help="port to listen on (default: 5001)")
    parser.add_argument("--seed-demo", action="store_true", help="create the demo apps, keys and knowledge")
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and keys (default: random)")
    parser.add_argument("--ping-interval", type=float, default=10.0, help="seconds between SSE keep-alive pings")
    parser.add_argument("--token-delay", type=float, default=0.05, help="seconds between streamed answer chunks")
    parser.add_argument("--load", type=Path, help="start from a snapshot (JSON from GET /_fake/snapshot)")
    parser.add_argument("--index-step", type=float, default=0.0, help="seconds per indexing stage (0: instant)")
    parser.add_argument("--run-seconds", type=float, default=0.0, help="seconds a workflow run stays running")
    parser.add_argument("--list-delay", type=float, default=0.0, help="seconds before a new run shows in the logs")
    parser.add_argument(
        "--older-logs", action="store_true", help="a Dify whose workflow logs ignore the end-user filter"
    )
    parser.add_argument(
        "--chat-knowledge",
        type=Path,
        help="add a chat app answering from these facts (JSON lines with `content`, and `id` or `title`), "
        "e.g. bench/answers/central_knowledge.jsonl",
    )
    parser.add_argument("--chat-min-score", type=float, default=0.0, help="least query-term overlap of an answer")
    return parser.parse_args(argv)


def banner(args: argparse.Namespace, state: FakeDifyState) -> str:
    base = f"http://{args.host}:{args.port}"
    lines = [f"fake Dify on {base}/v1  (control API: {base}/_fake/state, loopback only)"]
    for key in state.keys.values():
        owner = state.apps[key.app_id].name if key.app_id else "all datasets"
        lines.append(f"  {key.token}  {key.kind} key  ({owner})")
    for dataset in state.knowledge.datasets.values():
        lines.append(f"  dataset {dataset.id}  {dataset.name}")
    if state.keys:
        chat_key = next((k.token for k in state.keys.values() if k.kind == "app"), "")
        lines += [
            "try:",
            f"  curl -s {base}/v1/chat-messages -H 'Authorization: Bearer {chat_key}' \\",
            "    -H 'Content-Type: application/json' \\",
            """    -d '{"query": "Where is my refund?", "user": "demo", "inputs": {}}'""",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.load:
        state = restore(json.loads(args.load.read_text(encoding="utf-8")), seed=args.seed)
    else:
        state = FakeDifyState(seed=args.seed, clock=Clock())  # wall-clock time for a demo
    state.knowledge.index_step_seconds = args.index_step
    if args.seed_demo:
        seed_demo(state)
    if args.chat_knowledge:
        rows = [
            json.loads(line) for line in args.chat_knowledge.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
        seed_chat(state, [{"title": r.get("title") or r.get("id") or "", "content": r["content"]} for r in rows])
    app = create_fake_dify(
        state,
        ping_interval=args.ping_interval,
        token_delay=args.token_delay,
        run_seconds=args.run_seconds,
        run_list_delay=args.list_delay,
        logs_user_filter=not args.older_logs,
        chat_min_score=args.chat_min_score,
    )
    print(banner(args, state), file=sys.stdout, flush=True)
    uvicorn.Server(uvicorn_config(app, args.host, args.port, log_config=uvicorn.config.LOGGING_CONFIG)).run()


if __name__ == "__main__":
    main()
