"""Run the fake as a process: `python -m tests.fake_openai [--port N] [--flavor vllm]`.

For trying the app by hand (add it as an openai host) and for benchmarks; Ctrl+C stops it.
"""

from __future__ import annotations

import argparse
import threading

from .server import FakeOpenAI


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_openai")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--flavor", choices=["vllm", "llama.cpp", "bare"], default="vllm")
    parser.add_argument("--model", action="append", help="a served model id (repeatable)")
    parser.add_argument(
        "--reasoning-field",
        choices=["reasoning", "reasoning_content", "both", "harmony", "bare-harmony", "none"],
        default=None,
    )
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--busy-status", type=int, choices=[429, 503], default=429)
    parser.add_argument("--token-rate", type=float, default=200.0)
    parser.add_argument("--token", default=None, help="require this bearer token")
    args = parser.parse_args()
    fake = FakeOpenAI(
        flavor=args.flavor,
        models=args.model or ["openai/gpt-oss-safeguard-20b"],
        reasoning_field=args.reasoning_field,
        token_rate=args.token_rate,
        parallel=args.parallel,
        max_queue=args.max_queue,
        busy_status=args.busy_status,
        require_token=args.token,
        host=args.host,
        port=args.port,
    ).start()
    print(f"fake {args.flavor} server at {fake.url} serving {', '.join(fake.models)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
