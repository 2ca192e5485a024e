"""A small OpenAI-compatible embeddings server for tests: real HTTP on 127.0.0.1.

POST /v1/embeddings answers like the OpenAI API with deterministic vectors (seeded by the text).
``fail_next`` queues HTTP status codes to answer with before succeeding (429, 500, ...); requests
are recorded so tests can check batching. Like the real API it refuses a request with more than
2,048 inputs or 300,000 tokens, an input over 8,192 tokens (counted with cl100k_base) and
``dimensions`` above the model's; ``wrong_dimension`` makes it answer with vectors of another size
(a misconfigured compatible server); ``extra_models`` adds models a compatible server serves.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from vecdash.embedders import count_text_tokens

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
    wrong_dimension: int | None = None
    extra_models: dict[str, int] = field(default_factory=dict)
    token_counts: list[int] = field(default_factory=list)  # tokens per successful request

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
                models = {**MODELS, **fake.extra_models}
                if model not in models:
                    return self.error(404, f"The model {model} does not exist", "model_not_found")
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                if len(inputs) > 2048:
                    return self.error(400, "'input' must have at most 2048 items",
                                      "invalid_request_error")
                counts = [count_text_tokens(str(t)) for t in inputs]
                if max(counts, default=0) > 8192:
                    return self.error(400, "This model's maximum context length is 8192 tokens",
                                      "invalid_request_error")
                if sum(counts) > 300_000:
                    return self.error(400, "Requested 300001+ tokens, max 300000 tokens per "
                                      "request", "max_tokens_per_request")
                if body.get("dimensions") and int(body["dimensions"]) > models[model]:
                    return self.error(400, "This model does not support the requested dimensions",
                                      "invalid_request_error")
                dim = fake.wrong_dimension or int(body.get("dimensions") or models[model])
                fake.token_counts.append(sum(counts))
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
