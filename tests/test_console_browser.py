"""The web console in a real browser: Playwright drives the system's Chromium
(/usr/bin/chromium; nothing is downloaded) against a registry with auth on, seeded with a
model of three versions that have different metric keys and per-epoch histories.

The tests of this module share one registry and run in file order: later ones build on
the stage moves of earlier ones. Each saves a screenshot of its page in its tmp_path; with
MODELREG_DOCS_SCREENSHOTS=DIR they also go to DIR (the README's docs/ images).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import html
import json
import os
import time
from pathlib import Path

import grpc
import pytest
from console_helpers import http, seed, weights
from playwright.sync_api import expect, sync_playwright

from modelreg import Client

pytestmark = pytest.mark.timeout(120)
CHROMIUM = os.environ.get("MODELREG_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1180, "height": 760}


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, sandbox off (CI runs as root), for this module only: sync
    Playwright runs an event loop on the main thread while it is started, and the tests
    after this module need asyncio.run there (pytest-playwright's session-wide `browser`
    would keep it for the rest of the run)."""
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Site:
    def __init__(self, registry, base: str, tokens: dict[str, str]):
        self.registry = registry
        self.base = base
        self.tokens = tokens

    def sign_in(self, page, who: str, path: str = "/") -> None:
        page.goto(self.base + path)
        expect(page.locator("h1")).to_have_text("Sign in")
        page.fill("input[name=token]", self.tokens[who])
        page.click("button[type=submit]")
        expect(page.locator("#principal")).to_have_text(who)

    def cli(self, who: str, *args: str):
        from conftest import run_cli

        return run_cli(*args, address=self.registry.address, env={"MODELREG_TOKEN": self.tokens[who]})


def _in_thread(fn, *args):
    """Runs `fn` in a thread of its own: sync Playwright keeps an event loop on the main
    thread, where asyncio.run (the fixtures' database set-up) refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


@contextlib.contextmanager
def _registry(postgres, root: Path, **overrides):
    from auth_helpers import registry_on_a_new_database

    cm = registry_on_a_new_database(postgres, root, **overrides)
    reg = _in_thread(cm.__enter__)
    try:
        yield reg
    finally:
        _in_thread(cm.__exit__, None, None, None)


@pytest.fixture(scope="module")
def site(postgres, tmp_path_factory):
    from auth_helpers import SecureRegistry, admin_token_of

    root = tmp_path_factory.mktemp("console")
    with _registry(postgres, root, auth="on", http_address="127.0.0.1:0") as reg:
        admin = admin_token_of(root / "data")
        with grpc.insecure_channel(reg.address) as channel:
            sr = SecureRegistry(reg, reg.address, admin, channel)
            sr.project("vision")
            sr.project("nlp")
            tokens = {
                "admin": admin,
                "rita": sr.principal("rita", ("releaser", "vision")),
                "vera": sr.principal("vera", ("viewer", "vision")),
            }
        with Client(reg.address, token=admin) as c:
            seed(c, "det", project="vision")
            c.create_model("tracker", project="vision", tags={"team": "edge"})
            c.create_model("secret", project="nlp")  # nobody but the admin may read it
        yield Site(reg, f"http://127.0.0.1:{reg.running.console.port}", tokens)


@pytest.fixture(scope="module")
def contexts(browser):
    """One browser context per principal for the module: each signs in once."""
    opened: dict = {}
    yield opened
    for context in opened.values():
        context.close()


@pytest.fixture
def signed_in(site, contexts, browser):
    """`signed_in(who, path)`: a fresh page of `who`'s context at `path`, closed after the
    test. The first page of a principal signs in through the sign-in page; its session
    cookie then serves every page it opens."""
    pages: list = []

    def open_page(who: str, path: str = "/"):
        if who not in contexts:
            contexts[who] = browser.new_context(viewport=VIEWPORT)
            page = contexts[who].new_page()
            pages.append(page)
            site.sign_in(page, who, path)
            return page
        page = contexts[who].new_page()
        pages.append(page)
        page.goto(site.base + path)
        return page

    yield open_page
    for page in pages:
        page.close()


def shoot(page, tmp_path: Path, name: str) -> None:
    target = tmp_path / f"{name}.png"
    page.screenshot(path=str(target), full_page=False)
    docs = os.environ.get("MODELREG_DOCS_SCREENSHOTS")
    if docs:  # the README's copies: a 64-colour palette keeps them small
        from PIL import Image

        Image.open(target).convert("RGB").quantize(64).save(Path(docs) / f"console-{name}.png", optimize=True)


def column_texts(page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def test_model_page_shows_the_union_of_metric_keys_compare_deltas_and_one_curve_per_version(site, signed_in, tmp_path):
    page = signed_in("rita", "/models/det")
    expect(page.locator("h1")).to_have_text("det")
    assert column_texts(page, "#versions thead th.metric") == ["accuracy", "f1", "loss", "map50"]
    assert column_texts(page, "#versions tbody tr td:nth-child(2)") == ["v3", "v2", "v1"]
    assert page.locator('#versions tr[data-version="1"] .stage').inner_text() == "production"
    # The best accuracy on the page (v2's 0.86) is marked; v1 has no f1 and shows nothing.
    assert page.locator('#versions td.best[data-key="accuracy"]').inner_text() == "0.86"
    assert page.locator('#versions tr[data-version="1"] td[data-key="f1"]').inner_text() == ""

    page.check('input[name=v][value="2"]')
    page.check('input[name=v][value="3"]')
    page.click("#compare-button")
    expect(page.locator("#compare")).to_be_visible()
    v2, v3 = '#compare tr[data-version="2"]', '#compare tr[data-version="3"]'
    assert page.locator(f'{v2} td[data-key="accuracy"] .delta').inner_text() == "(+0.05)"
    assert page.locator(f'{v2} td[data-key="loss"] .delta').inner_text() == "(-0.11)"
    assert "better" in page.locator(f'{v2} td[data-key="loss"] .delta').get_attribute("class")
    assert page.locator(f'{v3} td[data-key="accuracy"] .delta').inner_text() == "(+0.03)"
    assert page.locator(f'{v3} td[data-key="loss"]').inner_text() == ""  # v3 has no final loss
    assert page.locator('#compare td.best[data-key="accuracy"]').count() == 1
    assert "0.86" in page.locator('#compare td.best[data-key="accuracy"]').inner_text()

    # The training curves chart: one series per selected version (uPlot's legend lists
    # the x series first), for the metric chosen.
    expect(page.locator("#curves-chart .u-legend .u-series")).to_have_count(3)
    assert sorted(column_texts(page, "#curves-chart .u-legend .u-series th")[1:]) == ["v2", "v3"]
    assert page.locator("#curve-metric").input_value() == "loss"
    expect(page.locator("#by-version-chart canvas")).to_have_count(1)
    shoot(page, tmp_path, "model")


def test_a_cli_promotion_shows_on_an_open_page_within_two_seconds_without_a_reload(site, signed_in, tmp_path):
    page = signed_in("rita", "/models/det")
    expect(page.locator("#live-status")).to_have_text("● live")
    page.evaluate("window.__notReloaded = true")
    site.cli("admin", "promote", "det", "2", "staging", "--reason", "from the CLI")
    started = time.monotonic()
    expect(page.locator('#versions tr[data-version="2"] .stage')).to_have_text("staging", timeout=2000)
    assert time.monotonic() - started < 2.0
    assert page.evaluate("window.__notReloaded") is True


def test_a_rollback_made_on_the_deployment_page_appears_in_modelreg_history(site, signed_in, tmp_path):
    with Client(site.registry.address, token=site.tokens["admin"]) as c:
        c.promote("det", 2, "production", reason="v2 is better")
    page = signed_in("rita", "/models/det/deployment")
    expect(page.locator("#stable")).to_contain_text("v2")
    form = page.locator("form.rollback-form")
    form.locator("input[name=reason]").fill("p95 regression in eu-west")
    form.locator("button").click()
    expect(page.locator("#flash .message.ok")).to_contain_text("rolled back: v1 is production")
    expect(page.locator("#stable")).to_contain_text("v1")  # the live refresh, no reload
    expect(page.locator("#history tbody tr").first).to_contain_text("p95 regression in eu-west")
    expect(page.locator("#history tbody tr").first).to_contain_text("rita")
    shoot(page, tmp_path, "deployment")

    transitions = json.loads(site.cli("admin", "history", "det", "-o", "json").stdout)["transitions"]
    rolled = [t for t in transitions if t["reason"] == "p95 regression in eu-west"]
    assert {(t["modelVersion"], t["toStage"], t["actor"]) for t in rolled} == {
        ("models/det/versions/1", "STAGE_PRODUCTION", "rita"),
        ("models/det/versions/2", "STAGE_ARCHIVED", "rita"),
    }


def test_a_failed_action_shows_the_servers_message(site, signed_in):
    page = signed_in("rita", "/models/det/deployment")
    form = page.locator("form.canary-form")
    form.locator("select[name=version]").select_option("1")
    form.locator("input[name=reason]").fill("try the stable as canary")
    form.locator("button").click()
    message = page.locator("#flash .message.error")
    expect(message).to_be_visible()
    assert "canary" in message.inner_text() and "production" in message.inner_text()


def test_a_viewer_sees_no_actions_and_a_forged_post_is_refused(site, signed_in, tmp_path):
    page = signed_in("vera", "/models/det")
    for path in ("/models/det", "/models/det/versions/2", "/models/det/deployment"):
        page.goto(site.base + path)
        expect(page.locator("h1")).to_be_visible()
        assert page.locator("form.action").count() == 0, path
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "modelreg_csrf")
    forged = page.request.post(
        site.base + "/models/det/promote",
        form={"csrf": csrf, "version": "3", "stage": "production", "reason": "forged"},
    )
    assert forged.status == 403
    assert "principal 'vera' lacks permission 'versions.promote' in project 'vision'" in html.unescape(forged.text())
    no_csrf = page.request.post(site.base + "/models/det/deployment/rollback", form={"reason": "forged"})
    assert no_csrf.status == 403 and "CSRF token" in html.unescape(no_csrf.text())
    with Client(site.registry.address, token=site.tokens["admin"]) as c:
        assert c.get_model("det").production_version == 1


def test_version_page_diffs_config_against_the_default_and_the_parent(site, signed_in, tmp_path):
    page = signed_in("vera", "/models/det/versions/3")
    expect(page.locator("h1")).to_contain_text("det v3")
    assert page.locator('#diff-default tr[data-key="augment"] td').nth(3).inner_text() == "added"
    assert page.locator('#diff-default tr[data-key="lr"] td').nth(3).inner_text() == "changed"
    assert page.locator('#diff-parent tr[data-key="epochs"] td').nth(1).inner_text() == "4"
    assert page.locator('#diff-parent tr[data-key="epochs"] td').nth(3).inner_text() == "changed"
    assert page.locator('#diff-parent tr[data-key="lr"] td').nth(3).inner_text() == ""
    expect(page.locator("#lineage")).to_contain_text("coco-mini")
    assert page.locator("#parent-link").get_attribute("href") == "/models/det/versions/2"
    assert page.locator("#artifact").inner_text().count("sha256") == 1
    with page.expect_download() as download:
        page.click("#download")
    assert Path(download.value.path()).read_bytes() == weights(3)
    shoot(page, tmp_path, "version")


def test_models_page_searches_and_events_page_is_live(site, signed_in, tmp_path):
    page = signed_in("vera", "/")
    assert column_texts(page, "#models tbody td:first-child") == ["det", "tracker"]  # not nlp's "secret"
    assert "accuracy 0.81" in page.locator('#models tr[data-model="det"]').inner_text()
    shoot(page, tmp_path, "models")
    page.fill("input[name=q]", "team=edge")
    page.click(".search button")
    assert column_texts(page, "#models tbody td:first-child") == ["tracker"]

    page.goto(site.base + "/events")
    expect(page.locator("#live-status")).to_have_text("● live")
    before = page.locator("#events tbody tr").count()
    with Client(site.registry.address, token=site.tokens["admin"]) as c:
        c.promote("det", 3, "staging", reason="events page check")
    expect(page.locator("#events tbody tr")).to_have_count(before + 1, timeout=2000)
    expect(page.locator("#events tbody tr").first).to_contain_text("events page check")
    shoot(page, tmp_path, "events")


def test_unknown_model_is_404_and_a_bad_page_token_400_with_a_message(site, signed_in):
    page = signed_in("vera", "/")
    response = page.goto(site.base + "/models/nope")
    assert response.status == 404
    expect(page.locator("#error-message")).to_contain_text("model 'models/nope' does not exist")
    response = page.goto(site.base + "/models/det?page_token=bogus")
    assert response.status == 400
    expect(page.locator("#error-message")).to_contain_text("pass the next_page_token of the same list call")
    token = site.tokens["vera"]
    for path in ("/api/v1/models/nope", "/api/v1/models/nope/versions", "/api/v1/models/nope/deployment"):
        assert http(site.base, path, token=token).status == 404


def test_sign_in_refuses_a_bad_token_with_its_reason(site, browser):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(site.base + "/models/det")
    expect(page).to_have_url(site.base + "/signin?next=/models/det")
    page.fill("input[name=token]", "mr_not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("#error-message")).to_contain_text("unknown token")
    session = [c for c in page.context.cookies() if c["name"] == "modelreg_session"]
    assert session == []
    context.close()
