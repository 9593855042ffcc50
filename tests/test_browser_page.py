"""The page at / in a real browser (Debian's chromium driven by Playwright) against a real server process.

Skipped, with the reason, where chromium or Playwright is missing; scripts/test installs both when it can
(root with apt-get; Playwright comes with the dev extra). Screenshots go to each test's temporary directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.load import free_port
from tests.test_e2e_server import running_server
from training import TrainConfig, train
from training.data import load_builtin

CHROMIUM = Path(os.environ.get("BNSERVE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REFRESH_MS = 500
WAIT_MS = 30_000  # a busy 2-core machine: the page's fetches can queue behind a forward pass

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is not installed (it comes with the dev extra: pip install -e '.[dev]')",
)
if not CHROMIUM.is_file():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium (scripts/test does so as root with apt-get) "
        "or point BNSERVE_CHROMIUM at a Chromium binary",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained long enough (20 epochs) that the EMA statistics describe the training data well, so real
    rows read as no drift."""
    out_dir = tmp_path_factory.mktemp("browser") / "breast_cancer"
    return train(
        TrainConfig(
            dataset="breast_cancer",
            epochs=20,
            hidden=(32, 32),
            device="cpu",
            out_dir=str(out_dir),
            progress=False,
        )
    )


@pytest.fixture(scope="module")
def server(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("browser-server") / "server.log"
    command = [sys.executable, "-m", "service", "--model", str(artifact_dir), "--port", str(port)]
    env = {"BNSERVE_DEVICE": "cpu", "BNSERVE_DRIFT_WINDOW": "256", "BNSERVE_DRIFT_MIN_ROWS": "100"}
    with running_server(command, port, log, env=env) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    """A fresh tab that records every URL it loaded, and every request the browser refused to send."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    tab = context.new_page()
    tab.loaded, tab.blocked = [], []
    tab.on("requestfinished", lambda request: tab.loaded.append(request.url))
    tab.on("requestfailed", lambda request: tab.blocked.append((request.url, request.failure)))
    tab.set_default_timeout(WAIT_MS)
    yield tab
    context.close()


def _outside(urls: list[str], server: str) -> list[str]:
    """Gives back the URLs not served by ``server`` (a blob the page made itself counts as its own)."""
    return [
        u
        for u in urls
        if not (u.startswith(server) or u.startswith(f"blob:{server}") or u.startswith("data:"))
    ]


def _open(page: Any, server: str) -> None:
    page.goto(f"{server}/?refresh={REFRESH_MS}")
    page.wait_for_selector("body[data-ready='1']")


def _number(text: str) -> float:
    return float(text.strip())


def test_the_page_shows_exactly_the_numbers_of_metadata_and_bn_stats(
    page: Any, server: str, tmp_path: Path
) -> None:
    _open(page, server)
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    meta = httpx.get(f"{server}/metadata").json()
    stats = httpx.get(f"{server}/bn-stats").json()

    assert page.inner_text("#card-name") == meta["name"]
    assert page.inner_text("#card-task") == meta["task"]
    assert page.inner_text("#card-sha256") == meta["artifact_sha256"]
    assert page.inner_text("#card-fingerprint") == meta["bn_fingerprint"] == stats["artifact_fingerprint"]
    assert page.inner_text("#card-classes") == ", ".join(meta["class_labels"])
    assert page.locator("#card-features li").all_text_contents() == meta["feature_names"]
    assert "match the artifact" in page.inner_text("#card-fingerprint-check")
    for name, value in meta["metrics"].items():
        shown = page.inner_text(f"#card-metrics tr[data-metric='{name}'] td:nth-child(2)")
        assert _number(shown) == pytest.approx(value, rel=1e-5), name
    layers = page.locator(".bn-layer")
    assert layers.count() == len(stats["layers"])
    for layer in stats["layers"]:
        section = page.locator(f".bn-layer[data-layer='{layer['name']}']")
        assert f"{layer['num_batches_tracked']} batches tracked" in section.locator("h3").inner_text()
        for field, summary in layer["summary"].items():
            for statistic, value in summary.items():
                shown = section.locator(f"td[data-field='{field}.{statistic}']").inner_text()
                assert _number(shown) == pytest.approx(value, rel=1e-5, abs=1e-12), (
                    layer["name"],
                    field,
                    statistic,
                )
    assert not _outside(page.loaded, server) and not page.blocked, page.blocked


def test_the_charts_draw_every_channel_and_every_epoch(page: Any, server: str, tmp_path: Path) -> None:
    _open(page, server)
    stats = httpx.get(f"{server}/bn-stats").json()
    history = httpx.get(f"{server}/history").json()["history"]

    for layer in stats["layers"]:
        section = page.locator(f".bn-layer[data-layer='{layer['name']}']")
        for chart in ("chart-stats", "chart-affine"):
            svg = section.locator(f"svg.{chart}")
            assert svg.get_attribute("data-channels") == str(layer["num_features"])
            points = svg.locator("path.series").evaluate_all("ps => ps.map(p => Number(p.dataset.points))")
            assert points and all(p == layer["num_features"] for p in points), (layer["name"], chart, points)
        assert section.locator("svg.chart-stats path.band").count() == 1  # the ± one running std band
    epochs = len(history["epochs"])
    for chart in ("#chart-loss", "#chart-metric"):
        points = page.locator(f"{chart} path.series").evaluate_all(
            "ps => ps.map(p => Number(p.dataset.points))"
        )
        assert points == [epochs, epochs], chart
    page.locator("#bn").screenshot(path=str(tmp_path / "bn.png"))


def _post_rows(server: str, rows: np.ndarray, batch: int = 50) -> int:
    with httpx.Client(base_url=server, timeout=30) as http:
        for start in range(0, len(rows), batch):
            answer = http.post("/predict", json={"instances": rows[start : start + batch].tolist()})
            assert answer.status_code == 200, answer.text
    return -(-len(rows) // batch)


def test_shifted_traffic_turns_the_verdict_on_the_page_from_ok_to_drift(
    page: Any, server: str, tmp_path: Path
) -> None:
    real = load_builtin("breast_cancer").features
    shifted = real.copy()
    shifted[:, 0] *= 10  # 'mean radius' ten times larger: a unit mix-up upstream
    before = _requests_so_far(server)
    _open(page, server)

    sent = _post_rows(server, real[:300])
    page.wait_for_selector("#drift-verdict[data-verdict='ok']")
    assert page.inner_text("#drift-verdict") == "OK"
    assert page.inner_text("#drift-message").startswith("no drift")
    page.screenshot(path=str(tmp_path / "ok.png"), full_page=True)

    sent += _post_rows(server, shifted[:300])
    page.wait_for_selector("#drift-verdict[data-verdict='drift']")
    assert page.inner_text("#drift-verdict") == "DRIFT"
    message = page.inner_text("#drift-message")
    assert message.startswith("drift:") and "'mean radius'" in message
    assert _number(page.inner_text("#drift-score")) > _number(page.inner_text("#drift-threshold"))
    page.wait_for_function(
        "total => Number(document.getElementById('requests-total').textContent) === total", arg=before + sent
    )
    bars = page.locator("#drift-features rect.bar").evaluate_all(
        "bs => bs.map(b => [b.dataset.label, Number(b.dataset.value)])"
    )
    assert max(bars, key=lambda bar: bar[1])[0] == "mean radius"
    page.screenshot(path=str(tmp_path / "drift.png"), full_page=True)


def _requests_so_far(server: str) -> int:
    text = httpx.get(f"{server}/metrics").text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("bnserve_requests_total{") and 'route="/predict"' in line
        )
    )


def test_docs_render_every_operation_without_the_internet(page: Any, server: str, tmp_path: Path) -> None:
    page.goto(f"{server}/docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = set(page.locator(".opblock-summary-path").all_inner_texts())
    operations = httpx.get(f"{server}/openapi.json").json()["paths"]
    page.screenshot(path=str(tmp_path / "docs.png"))

    assert paths == set(operations) and {"/predict", "/bn-stats", "/history", "/drift"} <= paths
    page.goto(f"{server}/redoc")
    page.wait_for_selector("text=/bn-stats")
    assert not _outside(page.loaded, server)
    # ReDoc's footer asks for its vendor's logo from a CDN; the page's Content-Security-Policy stops it
    # in the browser, so nothing leaves the machine.
    assert all(failure == "csp" for _, failure in page.blocked), page.blocked


REPOSITORY = {
    "default": "breast_cancer",
    "models": [
        {
            "name": "breast_cancer",
            "versions": [{"version": "1", "state": "READY", "reason": "", "artifact_sha256": "a" * 64}],
        },
        {
            "name": "wine",
            "versions": [
                {"version": "1", "state": "READY", "reason": "", "artifact_sha256": "b" * 64},
                {
                    "version": "2",
                    "state": "LOADING",
                    "reason": "checking the canary",
                    "artifact_sha256": "c" * 64,
                },
            ],
        },
    ],
}


def test_without_a_model_repository_the_page_shows_the_single_model_and_no_picker(
    page: Any, server: str
) -> None:
    _open(page, server)

    assert page.locator("#picker").is_hidden()
    assert "model=" not in " ".join(page.loaded)


def test_with_a_model_repository_the_picker_sends_model_and_version_to_the_json_views(
    page: Any, server: str, tmp_path: Path
) -> None:
    # GET /models is issue 13's model repository; until this server has one, the browser is handed its answer.
    page.route("**/models", lambda route: route.fulfill(json=REPOSITORY))
    _open(page, server)

    assert page.locator("#picker").is_visible()
    assert page.locator("#model-select option").all_text_contents() == ["breast_cancer", "wine"]
    assert any("/metadata?model=breast_cancer&version=1" in url for url in page.loaded)

    page.select_option("#model-select", "wine")
    page.wait_for_function("() => location.search.includes('model=wine')")
    assert page.locator("#version-select option").all_text_contents() == ["1 (READY)", "2 (LOADING)"]
    page.select_option("#version-select", "2")
    page.wait_for_function("() => location.search.includes('version=2')")
    assert "LOADING: checking the canary" in page.inner_text("#picker-state")
    for view in ("/metadata", "/bn-stats", "/history", "/drift"):
        page.wait_for_function(
            "url => performance.getEntriesByType('resource').some(e => e.name.includes(url))",
            arg=f"{view}?model=wine&version=2",
        )
    page.locator("header").screenshot(path=str(tmp_path / "picker.png"))
