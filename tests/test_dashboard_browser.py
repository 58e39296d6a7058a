"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright.

``idresolve up`` runs as a user runs it (a subprocess, its own dashboard); the page must show every node
on the map, numbers that move under load, a resolution's trace drawn hop by hop, and a killed node down
(then the failover in the next trace). Skipped, saying why, only where no browser can be had (``.ci/run``
installs Chromium and Playwright).

``IDRESOLVE_SCREENSHOT=docs/dashboard.png`` keeps a screenshot (taken after the traced resolution);
``IDRESOLVE_DASHBOARD_CONFIG=config/shandong.toml`` runs the same checks on another topology and
``IDRESOLVE_DASHBOARD_LATENCY=on`` with the latency model on (the README's screenshot is of Shandong, with
latency).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from clusterutil import IDRESOLVE, ROOT, Proc, cli_env, free_base_port, spawn, stop_proc
from idresolve.core.topology import load_topology
from idresolve.net.blocking import BlockingClient
from opsutil import ENT, REC, TOP, mirrored_minimal

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO = "88.118.8/JXDY2106023"
WAIT_MS = 20_000  # hang guard for every wait on the page


def _playwright():  # type: ignore[no-untyped-def]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no browser here: the Python package playwright is not installed (.ci/run installs it)")
    if not CHROMIUM.exists():
        pytest.skip(f"no browser here: {CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    return sync_playwright


def _load(port: int, stop: threading.Event) -> None:
    """Resolutions through the recursive node until ``stop``: cached ones and a few that walk."""
    with BlockingClient("127.0.0.1", port, timeout_s=10) as c:
        i = 0
        while not stop.is_set():
            c.resolve(DEMO)
            if i % 20 == 0:
                c.resolve(f"88.118.9/LOAD-{i}")  # not found: walks the hierarchy each time
            i += 1
            time.sleep(0.001)


def _start_up(config: Path, data_dir: Path, nodes: int, attempts: int = 3) -> tuple[Proc, int, str]:
    """``idresolve up`` with its dashboard just below its base port; other ports if someone took one first."""
    for _ in range(attempts):
        base = free_base_port(2 * nodes + 1)
        up = spawn([IDRESOLVE, "up", "--config", str(config), "--data-dir", str(data_dir), "--base-port", str(base + 1),
                    "--latency", os.environ.get("IDRESOLVE_DASHBOARD_LATENCY", "off"), "--workers", "2",
                    "--dashboard", f"127.0.0.1:{base}"], cwd=ROOT, env=cli_env())
        try:
            up.wait_for_line("admin credentials", timeout_s=60)  # printed after the dashboard's line (or warning)
        except (RuntimeError, TimeoutError):
            stop_proc(up)
            if "in use" not in up.stderr:
                raise
            continue
        line = next((x for x in up.out if "dashboard: " in x), None)
        if line is not None:
            return up, base, line.split("dashboard: ", 1)[1].strip()
        stop_proc(up)
        assert "in use" in up.stderr, up.stderr
    raise RuntimeError(f"no free ports for the cluster in {attempts} attempts")


def test_the_dashboard_shows_the_cluster_live(tmp_path: Path) -> None:
    sync_playwright = _playwright()
    config = Path(os.environ.get("IDRESOLVE_DASHBOARD_CONFIG") or mirrored_minimal(tmp_path))
    topology = load_topology(config)
    names = topology.running_node_names()
    up, base, url = _start_up(config, tmp_path / "data", len(names))
    stop = threading.Event()
    loader = None
    try:
        assert url == f"http://127.0.0.1:{base}/"
        rec_port = base + 1 + 2 * names.index(REC)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 820})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url)
                # Every node on the map, each marked up once the first snapshot arrives.
                page.wait_for_function(f"document.querySelectorAll('#nodes .node[data-state=up]').length === {len(names)}",
                                       timeout=WAIT_MS)
                drawn = page.eval_on_selector_all("#nodes .node", "els => els.map(e => e.dataset.node)")
                assert sorted(drawn) == sorted(names)
                # Numbers move under load.
                loader = threading.Thread(target=_load, args=(rec_port, stop), daemon=True)
                loader.start()
                cell = f"td[data-field=rps][data-node={REC}]"
                page.wait_for_function(f"parseFloat(document.querySelector('{cell}').textContent) > 5", timeout=WAIT_MS)
                page.wait_for_selector(f"#traffic path[data-link^='{REC}>']", timeout=WAIT_MS)  # a link with traffic
                # A resolution's trace, hop by hop, on the map and in the list.
                page.fill("#resolve-input", DEMO)
                page.click("#resolve-button")
                page.wait_for_function("document.querySelectorAll('#trace li').length >= 3", timeout=WAIT_MS)
                assert page.locator("#trace-layer line.hop").count() >= 3
                first = page.inner_text("#trace li:first-child")
                assert TOP in first and "303" in first
                page.click(f"#nodes .node[data-node={REC}] circle.body")  # its detail view, with charts
                page.wait_for_selector("#charts .chart svg path.line", timeout=WAIT_MS)
                page.wait_for_timeout(1500)  # a point or two more in the charts
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot))
                if os.environ.get("IDRESOLVE_SCREENSHOT"):
                    shutil.copyfile(shot, os.environ["IDRESOLVE_SCREENSHOT"])
                # Kill a top-level node from the page: it shows down, and the next trace fails over (the load
                # stops first, so that the page's resolution is the first to meet the dead node).
                stop.set()
                loader.join(10)
                page.click(f"#nodes .node[data-node={TOP}] circle.body")
                page.click("#btn-kill")
                page.wait_for_selector(f"#nodes .node[data-node={TOP}][data-state=down]", timeout=WAIT_MS)
                page.wait_for_selector(f"td[data-field=state][data-node={TOP}].down", timeout=WAIT_MS)
                page.click("#resolve-button")
                page.wait_for_function("document.querySelector('#trace li') && "
                                       "document.querySelector('#trace li').textContent.includes('timed out')",
                                       timeout=WAIT_MS)
                hops = page.eval_on_selector_all("#trace li", "els => els.map(e => e.textContent)")
                assert TOP in hops[0] and hops[1].startswith("top-") and TOP not in hops[1]  # the next top-level node
                assert any(h.split()[0] == ENT for h in hops[2:])
                page.click("#btn-heal")
                page.wait_for_selector(f"#nodes .node[data-node={TOP}][data-state=up]", timeout=WAIT_MS)
                assert errors == [], f"errors in the page: {errors}"
            finally:
                browser.close()
    finally:
        stop.set()
        if loader is not None:
            loader.join(10)
        stop_proc(up)
