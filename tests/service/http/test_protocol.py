"""The protocol fast path (service/http/protocol.py) over real sockets: the same bytes as uvicorn's ASGI path.

Two real ``python -m service`` processes serve the same artifact, one with the fast path (the default) and one
with ``BNSERVE_HTTP_FAST_PATH=false``; raw HTTP/1.1 requests written to a socket get byte-identical answers
from both (the ``date`` header aside). An in-process uvicorn server shows which path a request took.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httptools
import orjson
import pytest
import uvicorn

from bench.load import free_port
from service.http.app import create_app
from service.http.hot import HotRoute
from service.http.protocol import HotPathProtocol
from service.settings import Settings
from tests.service.serving import manifest_of, rows_like_training
from tests.test_e2e_server import running_server

pytestmark = pytest.mark.slow

TOKEN = "reader-token"


class Response:
    """One parsed HTTP response: status, headers (lower-cased names, in order), body."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    def without_date(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return self.status, [h for h in self.headers if h[0] != b"date"], self.body


def exchange(
    port: int, data: bytes, *, responses: int = 1, chunks: list[bytes] | None = None
) -> list[Response]:
    """Writes ``data`` (then each of ``chunks``, a moment apart) to a new connection; gives back the
    ``responses`` read back, in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        for chunk in chunks or []:
            time.sleep(0.05)
            sock.sendall(chunk)
        return read_responses(sock, responses)


def read_responses(sock: socket.socket, count: int) -> list[Response]:
    done: list[Response] = []
    current = Response()

    class Sink:
        def on_header(self, name: bytes, value: bytes) -> None:
            current.on_header(name, value)

        def on_body(self, body: bytes) -> None:
            current.on_body(body)

        def on_message_complete(self) -> None:
            nonlocal current
            current.status = parser.get_status_code()
            current.complete = True
            done.append(current)
            current = Response()

    parser = httptools.HttpResponseParser(Sink())
    while len(done) < count:
        data = sock.recv(65536)
        if not data:
            break
        parser.feed_data(data)
    return done


def request(
    path: str,
    body: bytes,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    version: str = "1.1",
) -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    lines += [f"{k}: {v}" for k, v in (auth if headers is None else headers).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def ports(
    breast_cancer_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int]]:
    """(fast path's port, ASGI path's port): two lean servers of the same artifact, with a read token."""
    logs = tmp_path_factory.mktemp("protocol")
    fast, asgi = free_port(), free_port()
    env = {"BNSERVE_RUNTIME": "lean", "BNSERVE_READ_TOKEN": TOKEN, "BNSERVE_DRIFT_ENABLED": "true"}

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "service", "--model", str(breast_cancer_artifact), "--port", str(port)]

    with (
        running_server(command(fast), fast, logs / "fast.log", env=env),
        running_server(command(asgi), asgi, logs / "asgi.log", env=env | {"BNSERVE_HTTP_FAST_PATH": "false"}),
    ):
        yield fast, asgi


def _cases(artifact: Path) -> dict[str, bytes]:
    m = manifest_of(artifact)
    name = m["name"]
    rows = rows_like_training(artifact, 5, seed=3)
    one = orjson.dumps({"instances": rows[:1].tolist()})
    many = orjson.dumps({"instances": rows.tolist()})
    named = orjson.dumps({"instances": [dict(zip(m["feature_names"], rows[0].tolist(), strict=True))]})
    oip = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [5, rows.shape[1]],
                    "datatype": "FP32",
                    "data": rows.ravel().tolist(),
                }
            ]
        }
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return {
        "one row": request("/predict", one),
        "many rows": request("/predict", many),
        "rows by name": request("/predict", named),
        "model and version": request(f"/predict?model={name}&version=1", one),
        "float32 in and out": request(
            "/predict",
            rows.astype("<f4").tobytes(),
            content_type="application/octet-stream",
            headers=auth | {"Accept": "application/octet-stream"},
        ),
        "oip": request(f"/v2/models/{name}/infer", oip),
        "oip version": request(f"/v2/models/{name}/versions/1/infer", oip),
        "oip gzip": request(
            f"/v2/models/{name}/infer", gzip.compress(oip), headers=auth | {"Content-Encoding": "gzip"}
        ),
        "no token": request("/predict", one, headers={}),
        "wrong media type": request("/predict", one, content_type="text/plain"),
        "malformed json": request("/predict", b'{"instances": [[1, 2'),
        "wrong width": request("/predict", b'{"instances": [[1, 2]]}'),
        "nan": request("/predict", b'{"instances": [[NaN' + b", 1" * (rows.shape[1] - 1) + b"]]}"),
        "unknown model": request("/predict?model=nope", one),
        "unknown oip model": request("/v2/models/nope/infer", oip),
        "bad oip tensor": request(f"/v2/models/{name}/infer", b'{"inputs": [{"name": "x"}]}'),
        "http/1.0": request("/predict", one, version="1.0"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "one row",
        "many rows",
        "rows by name",
        "model and version",
        "float32 in and out",
        "oip",
        "oip version",
        "oip gzip",
        "no token",
        "wrong media type",
        "malformed json",
        "wrong width",
        "nan",
        "unknown model",
        "unknown oip model",
        "bad oip tensor",
        "http/1.0",
    ],
)
def test_fast_path_answers_byte_for_byte_as_the_asgi_path(
    ports: tuple[int, int], in_process: tuple[int, list[str]], breast_cancer_artifact: Path, case: str
) -> None:
    data = _cases(breast_cancer_artifact)[case]
    fast, asgi = (exchange(port, data)[0] for port in ports)
    assert fast.complete and asgi.complete
    assert fast.without_date() == asgi.without_date()
    assert fast.header(b"date") is not None
    # The same request to a server that shows it took the fast path.
    port, seen = in_process
    before = len(seen)
    assert exchange(port, data)[0].without_date() == asgi.without_date()
    assert len(seen) == before


def test_fast_path_answers_are_the_models(ports: tuple[int, int], breast_cancer_artifact: Path) -> None:
    rows = rows_like_training(breast_cancer_artifact, 5, seed=4)
    answer = exchange(ports[0], request("/predict", orjson.dumps({"instances": rows.tolist()})))[0]
    assert answer.status == 200
    predictions = orjson.loads(answer.body)["predictions"]
    single = [
        orjson.loads(exchange(ports[1], request("/predict", orjson.dumps({"instances": [r]})))[0].body)[
            "predictions"
        ][0]
        for r in rows.tolist()
    ]
    # Each row's answer alone, through the other path: the same up to the float32 rounding of a batch of 5.
    assert [p["label"] for p in predictions] == [p["label"] for p in single]
    for merged, alone in zip(predictions, single, strict=True):
        assert merged["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-6)


def test_http_1_0_gets_connection_close_and_the_connection_is_closed(ports: tuple[int, int]) -> None:
    body = b'{"instances": [[1, 2]]}'
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=10) as sock:
        sock.sendall(request("/predict", body, version="1.0"))
        (answer,) = read_responses(sock, 1)
        assert answer.header(b"connection") == b"close"
        assert sock.recv(1) == b""  # closed by the server


def test_pipelined_requests_are_answered_in_order(
    ports: tuple[int, int], breast_cancer_artifact: Path
) -> None:
    rows = rows_like_training(breast_cancer_artifact, 3, seed=5).tolist()
    posts = [request("/predict", orjson.dumps({"instances": [r]})) for r in rows]
    ready = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = exchange(ports[0], posts[0] + ready + posts[1] + posts[2], responses=4)
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert orjson.loads(answers[1].body)["status"] == "ready"
    expected = [orjson.loads(exchange(ports[1], p)[0].body)["predictions"] for p in posts]
    assert [orjson.loads(answers[i].body)["predictions"] for i in (0, 2, 3)] == expected


def test_keep_alive_serves_many_requests_on_one_connection(ports: tuple[int, int]) -> None:
    body = orjson.dumps({"instances": [[0.5] * 30]})
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=10) as sock:
        statuses = []
        for _ in range(50):
            sock.sendall(request("/predict", body))
            statuses += [r.status for r in read_responses(sock, 1)]
    assert statuses == [200] * 50


def test_a_body_in_pieces_and_a_chunked_upload_are_answered(ports: tuple[int, int]) -> None:
    body = orjson.dumps({"instances": [[0.25] * 30]})
    whole = request("/predict", body)
    head, rest = whole[: len(whole) - len(body) + 5], whole[len(whole) - len(body) + 5 :]
    pieces = exchange(ports[0], head, chunks=[rest[:10], rest[10:]])[0]
    chunked = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    chunks = exchange(ports[0], chunked)[0]
    reference = exchange(ports[1], whole)[0]
    assert pieces.without_date() == reference.without_date()
    assert (chunks.status, chunks.body) == (reference.status, reference.body)


def test_a_body_over_the_limit_is_refused_before_it_is_read(ports: tuple[int, int]) -> None:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {64 * 1024 * 1024}\r\n\r\n"
    ).encode()
    (answer,) = exchange(ports[0], head)
    assert answer.status == 413
    assert "at most" in orjson.loads(answer.body)["error"]


def test_clients_that_leave_mid_request_do_not_hold_the_server(ports: tuple[int, int]) -> None:
    body = orjson.dumps({"instances": [[0.75] * 30] * 64})
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=10) as sock:
            sock.sendall(request("/predict", body))  # and gone before the answer
    (answer,) = exchange(ports[0], request("/predict", body))
    assert answer.status == 200
    assert len(orjson.loads(answer.body)["predictions"]) == 64


def test_concurrent_connections_each_get_their_own_rows(
    ports: tuple[int, int], breast_cancer_artifact: Path
) -> None:
    rows = rows_like_training(breast_cancer_artifact, 32, seed=6).tolist()
    posts = [request("/predict", orjson.dumps({"instances": [r]})) for r in rows]

    async def all_at_once() -> list[bytes]:
        async def one(data: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[0])
            writer.write(data)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            body = await reader.readexactly(length)
            writer.close()
            return body

        return await asyncio.gather(*(one(p) for p in posts))

    bodies = asyncio.run(all_at_once())
    expected = [exchange(ports[1], p)[0].body for p in posts]
    for got, alone in zip(bodies, expected, strict=True):  # merged into batches: float32 rounding apart
        (merged,), (single,) = orjson.loads(got)["predictions"], orjson.loads(alone)["predictions"]
        assert merged["label"] == single["label"]
        assert merged["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)


def test_request_metrics_count_fast_path_requests(ports: tuple[int, int]) -> None:
    def count(status: str) -> float:
        (answer,) = exchange(
            ports[0], f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        for line in answer.body.decode().splitlines():
            if (
                line.startswith("bnserve_requests_total{")
                and 'route="/predict"' in line
                and f'status="{status}"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    ok, refused = count("200"), count("415")
    exchange(ports[0], request("/predict", orjson.dumps({"instances": [[0.1] * 30]})))
    exchange(ports[0], request("/predict", b"{}", content_type="text/plain"))
    assert (count("200"), count("415")) == (ok + 1, refused + 1)


# ------------------------------------------------------------------------ which path a request takes


@pytest.fixture(scope="module")
def in_process(breast_cancer_artifact: Path) -> Iterator[tuple[int, list[str]]]:
    """(port, the paths that reached a hot route's ASGI app): uvicorn with HotPathProtocol in a thread, set up
    as the ``ports`` servers are."""
    seen: list[str] = []
    original = HotRoute.__call__

    async def counted(self: HotRoute, scope: dict, receive: object, send: object) -> int:  # type: ignore[type-arg]
        seen.append(scope["path"])
        return await original(self, scope, receive, send)  # type: ignore[arg-type]

    HotRoute.__call__ = counted  # type: ignore[method-assign]
    settings = Settings(
        model_dir=breast_cancer_artifact,
        runtime="lean",
        read_token=TOKEN,
        drift_enabled=True,
        log_level="warning",
    )
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=HotPathProtocol,
        loop="uvloop",
        log_level="warning",
        access_log=False,
    )
    # uvicorn logs access (and so the fast path stands aside) when its access logger has a handler, and
    # pytest's log capture gives it two: as served by python -m service, it has none.
    access = logging.getLogger("uvicorn.access")
    access.hasHandlers = lambda: False  # type: ignore[method-assign]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield port, seen
    finally:
        server.should_exit = True
        thread.join(10)
        HotRoute.__call__ = original  # type: ignore[method-assign]
        del access.hasHandlers


def test_plain_hot_requests_skip_asgi_and_the_rest_take_it(in_process: tuple[int, list[str]]) -> None:
    port, seen = in_process
    body = orjson.dumps({"instances": [[0.3] * 30]})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    plain = request("/predict", body, headers=auth)
    before = len(seen)
    assert exchange(port, plain)[0].status == 200
    assert len(seen) == before  # answered straight from the parser
    expect = request("/predict", body, headers=auth | {"Expect": "100-continue"})
    escaped = request("/pre%64ict", body, headers=auth)
    answers = [exchange(port, expect, responses=2)[-1], exchange(port, escaped)[0]]
    assert [a.status for a in answers] == [200, 200]
    assert seen[before:] == ["/predict", "/predict"]  # uvicorn's path, the same route


def test_the_fast_path_can_be_turned_off(breast_cancer_artifact: Path) -> None:
    from service.__main__ import _http_protocol

    assert _http_protocol(Settings(model_dir=breast_cancer_artifact)) is HotPathProtocol
    assert _http_protocol(Settings(model_dir=breast_cancer_artifact, http_fast_path=False)) == "httptools"


# ------------------------------------------------------------------------ the request-target table


def test_request_targets_resolve_as_uvicorn_parses_them() -> None:
    from service.http import protocol

    protocol._TARGETS.clear()
    predict = protocol._remember_target(b"/predict?model=a&version=2")
    assert predict is not None and predict[1:] == ("/predict", "/predict", b"model=a&version=2")
    infer = protocol._remember_target(b"http://x/v2/models/m/versions/3/infer")  # absolute form
    assert infer is not None and infer[1:] == (
        "/v2/models/{model}/versions/{version}/infer",
        "/v2/models/m/versions/3/infer",
        b"",
    )
    # Not a hot route, or not for the fast path: uvicorn's path decodes, refuses or routes it.
    for raw in (b"/health", b"/pre%64ict", b"/predict\xff", b"", b"*", b"/v2/models//infer"):
        assert protocol._remember_target(raw) is None, raw
    assert protocol._TARGETS[b"/pre%64ict"] is None  # remembered as such


def test_the_request_target_table_stays_bounded() -> None:
    from service.http import protocol

    protocol._TARGETS.clear()
    for i in range(protocol.MAX_TARGETS * 3):
        assert protocol._remember_target(b"/predict?n=%d" % i) is not None
        assert len(protocol._TARGETS) <= protocol.MAX_TARGETS


def test_many_distinct_targets_are_each_answered_for_what_they_name(
    in_process: tuple[int, list[str]],
) -> None:
    from service.http import protocol

    port, _ = in_process
    body = orjson.dumps({"instances": [[0.3] * 30]})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answers = [
        exchange(port, request(f"/predict?n={i}&version={1 if i % 2 else 7}", body, headers=auth))[0]
        for i in range(protocol.MAX_TARGETS + 50)
    ]
    assert {a.status for a in answers[1::2]} == {200}  # version 1 serves
    assert {a.status for a in answers[0::2]} == {404}  # version 7 does not, whatever came before
    assert len(protocol._TARGETS) <= protocol.MAX_TARGETS
