"""A small OpenAI-compatible embeddings server for tests: real HTTP on 127.0.0.1.

POST /v1/embeddings answers like the OpenAI API with deterministic vectors (seeded by the text).
``fail_next`` queues HTTP status codes to answer with before succeeding (429, 500, ...); requests
are recorded so tests can check batching.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

MODELS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}


def fake_vector(text: str, dim: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).normal(size=dim)
    return [float(x) for x in v / np.linalg.norm(v)]


@dataclass
class FakeOpenAI:
    api_key: str = "sk-test"
    fail_next: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def error(self, status: int, message: str, code: str) -> None:
                self.reply(status, {"error": {"message": message, "type": code, "code": code}})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self.error(401, "Incorrect API key provided", "invalid_api_key")
                if fake.fail_next:
                    status = fake.fail_next.pop(0)
                    return self.error(status, "simulated failure", "server_error")
                model = body.get("model")
                if model not in MODELS:
                    return self.error(404, f"The model {model} does not exist", "model_not_found")
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                dim = int(body.get("dimensions") or MODELS[model])
                data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, dim)}
                        for i, t in enumerate(inputs)]
                tokens = sum(len(str(t).split()) for t in inputs)
                self.reply(200, {"object": "list", "data": data, "model": model,
                                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
