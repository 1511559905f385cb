"""The kiosk page end to end in headless Chromium (Debian's, driven by Playwright) against a real uvicorn.

A shopper taps a suggested question and watches the answer stream in, asks a follow-up in the same
conversation, calls a staff member (recorded as a hand-off, checked through the API) and walks away:
the idle reset leaves an empty screen. Screenshots of each step go to build/test-artifacts/kiosk/.

Time in the page is Playwright's clock, paused, so the idle reset happens when the test moves the
clock on and never races a slow step; one test lets the real clock run to show the timer itself.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.api.kiosk_auth import COOKIE, USER_PREFIX
from edge.store.db import open_database
from edge.store.sync_state import CENTRAL, SyncState
from tests.conftest import ROOT
from tests.edge.api.conftest import AUTH, LiveServer, make_settings
from tests.edge.ui.conftest import answers_without

try:
    from playwright import sync_api
except ImportError:  # in the dev extra: `make test` installs it
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed: `make install`", allow_module_level=True)

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "build" / "test-artifacts" / "kiosk"
CANCEL = "How do I cancel my order?"  # no curated answer in these tests: the LLM streams it
REFUND = "Where is my refund?"
FOLLOW_UP = "How long does delivery take?"
IDLE_S = 3
HANDOFF_WAIT_S = 6  # the idle reset's longer form while a call for staff is open
WAIT_MS = 60_000  # an upper bound for an answer on a loaded CI machine, not a timing assertion
# Every text the latest answer shows while it streams, kept in the page and read back after it ends.
PARTIALS = """() => {
  window.partials = [];
  new MutationObserver(() => {
    const answers = document.querySelectorAll("#messages .turn.answer");
    const last = answers[answers.length - 1];
    if (last && last.dataset.state === "streaming") window.partials.push(last.querySelector(".text").textContent);
  }).observe(document.getElementById("messages"), {subtree: true, childList: true, characterData: true});
}"""
# WCAG 2.x contrast of every visible text against the first opaque background behind it.
CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const channel = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (node) => {
    for (; node && node.nodeType === 1; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || !node.checkVisibility() || node.closest("[disabled]")) continue;
    if (node.closest(".visually-hidden")) continue;
    const style = getComputedStyle(node);
    const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(node))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const text = walker.currentNode.textContent.trim().slice(0, 40);
    found.push({text, ratio: Math.round(ratio * 100) / 100, needed});
  }
  return found;
}"""


@pytest.fixture(scope="module")
def server(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("kiosk-browser")
    settings = make_settings(
        api_bundle,
        folder / "data",
        curated_answers_csv=answers_without(folder, "order.cancel_order"),
        llm_floor=0.0,
        # The page's token-by-token streaming is under test here, not the model's facts: unchecked
        # generation streams every token (checked, it is released a whole sentence at a time).
        llm_check=False,
        suggested_questions=[CANCEL, REFUND, "Can I change my delivery address?"],
        ui_idle_reset_s=IDLE_S,
        ui_handoff_wait_s=HANDOFF_WAIT_S,
        llm_max_tokens=48,
    )
    with LiveServer(settings) as live:
        live.settings = settings
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed: `make browser` (part of `make test`) installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


class Kiosk:
    """One kiosk screen: a fresh browser context (a portrait touch screen) that records every request."""

    def __init__(self, browser: Any, server: LiveServer, artifacts: Path, *, clock: bool) -> None:
        self.server = server
        self.artifacts = artifacts
        self.context = browser.new_context(
            viewport={"width": 800, "height": 1280}, has_touch=True, locale="en-US", base_url=server.url
        )
        self.requests: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        if clock:
            self.context.clock.install()
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)

    def open(self) -> Any:
        response = self.page.goto("/")
        self.page.wait_for_selector("body[data-ready=true]")
        return response

    def pause_clock(self) -> None:
        self.page.clock.pause_at(datetime.datetime.now() + datetime.timedelta(seconds=1))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.artifacts / f"{name}.png"))

    def answers(self) -> Any:
        return self.page.locator("#messages .turn.answer")

    def wait_answers_done(self, count: int) -> None:
        self.page.wait_for_function(
            "n => [...document.querySelectorAll('#messages .turn.answer')]"
            ".filter(a => a.dataset.state === 'done').length === n",
            arg=count,
        )

    def user(self) -> str:
        token = next(c["value"] for c in self.context.cookies() if c["name"] == COOKIE)
        return USER_PREFIX + token.split(".")[0]

    def conversation(self) -> str | None:
        return self.page.locator("#messages").get_attribute("data-conversation-id")

    def foreign_requests(self) -> list[str]:
        own = self.server.url + "/"
        return [url for url in self.requests if not (url.startswith(own) or url.startswith("data:"))]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def kiosk_factory(browser: Any, server: LiveServer, artifacts: Path) -> Iterator[Any]:
    opened: list[Kiosk] = []

    def make(clock: bool = True) -> Kiosk:
        opened.append(Kiosk(browser, server, artifacts, clock=clock))
        return opened[-1]

    yield make
    for kiosk in opened:
        assert kiosk.foreign_requests() == [], "the page asked a host other than the box"
        kiosk.close()


def history(server: LiveServer, conversation: str, user: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/v1/messages", headers=AUTH, params={"conversation_id": conversation, "user": user}
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_a_shopper_from_first_tap_to_idle_reset(kiosk_factory: Any, server: LiveServer) -> None:
    kiosk = kiosk_factory()
    page = kiosk.page
    kiosk.open()
    kiosk.pause_clock()
    expect = sync_api.expect
    expect(page.locator("#opening")).to_have_text(server.settings.opening_statement["en"])
    expect(page.locator("#suggestions button")).to_have_text(server.settings.suggested_questions["en"])
    kiosk.shot("01-welcome")

    # 1. tap a suggested question: the answer streams in, piece by piece
    page.evaluate(PARTIALS)
    page.get_by_role("button", name=CANCEL).tap()
    page.wait_for_selector("#messages .turn.answer[data-state=streaming], #messages .turn.answer[data-state=done]")
    kiosk.shot("02-answering")
    kiosk.wait_answers_done(1)
    kiosk.shot("03-answer")
    answer = kiosk.answers().nth(0)
    final = answer.locator(".text").inner_text()
    partials = [text for text in page.evaluate("window.partials") if text]
    assert answer.get_attribute("data-route") == "llm"
    assert len(set(partials)) >= 2, f"the answer did not grow on screen: {partials}"
    assert all(final.startswith(text.strip()) for text in partials)
    conversation = kiosk.conversation()
    assert conversation

    # 2. a follow-up, typed and sent with Enter, in the same conversation
    page.get_by_label("Your question", exact=True).fill(FOLLOW_UP)
    page.get_by_label("Your question", exact=True).press("Enter")
    kiosk.wait_answers_done(2)
    kiosk.shot("04-follow-up")
    assert kiosk.conversation() == conversation
    assert page.get_by_label("Your question", exact=True).input_value() == ""

    # 3. call a staff member: recorded on the box as a hand-off in this conversation
    page.get_by_role("button", name="Call a staff member").tap()
    expect(page.locator("#messages .turn.system .text")).to_have_text(
        "A staff member has been called. Please wait here."
    )
    kiosk.shot("05-staff-called")
    turns = history(server, conversation, kiosk.user())
    assert [turn["query"] for turn in turns] == [CANCEL, FOLLOW_UP, "Please call a staff member."]
    assert turns[0]["route"] == "llm" and turns[-1]["route"] == "handoff"
    assert turns[0]["answer"] == final

    # 4. the shopper walks away: the call for staff holds the screen past the idle reset, then a
    # warning, then an empty screen and a new session
    shopper = kiosk.user()
    page.clock.fast_forward((IDLE_S + 1) * 1000)
    page.wait_for_timeout(1200)  # real time for the page's idle check on the new clock
    assert page.locator("body[data-resets]").count() == 0
    page.clock.fast_forward((HANDOFF_WAIT_S - IDLE_S - 2) * 1000)
    expect(page.locator("#notice")).to_be_visible()
    kiosk.shot("06-idle-warning")
    with page.expect_response("**/kiosk/session"):
        page.clock.fast_forward(2000)
    page.wait_for_selector("body[data-resets='1']")
    kiosk.shot("07-after-idle-reset")
    expect(page.locator("#messages > *")).to_have_count(0)
    expect(page.locator("#welcome")).to_be_visible()
    expect(page.locator("#notice")).to_be_hidden()
    assert page.get_by_label("Your question", exact=True).input_value() == "" and kiosk.conversation() is None
    # the next shopper is another user, who cannot reach the previous conversation; the box keeps it
    assert kiosk.user() != shopper
    assert kiosk.context.request.get(f"/v1/messages?conversation_id={conversation}").status == 404
    assert len(history(server, conversation, shopper)) == 3


def test_offline_from_central_is_shown_and_answers_still_work(kiosk_factory: Any, server: LiveServer) -> None:
    expect = sync_api.expect
    kiosk = kiosk_factory()
    page = kiosk.page
    kiosk.open()
    kiosk.pause_clock()
    central = page.locator("#central")
    expect(central).to_be_hidden()  # unknown: no sync agent has reported yet
    db = open_database(server.settings.database_path)  # what `edge sync` writes, through its own connection
    try:
        agent = SyncState(db)
        agent.record(CENTRAL, "offline", success=False, error="connect timeout")
        page.clock.fast_forward(16_000)  # the page polls /kiosk/status every 15 s
        expect(central).to_have_text("Offline from central — answers still work")
        page.get_by_role("button", name=REFUND).tap()
        kiosk.wait_answers_done(1)
        assert kiosk.answers().nth(0).get_attribute("data-route") == "curated"
        kiosk.shot("08-offline-from-central")

        page.get_by_role("button", name="中文").tap()
        expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
        expect(central).to_have_text("与总部的连接已断开——仍可正常解答")
        expect(page.get_by_role("button", name="呼叫工作人员")).to_be_visible()
        expect(page.get_by_label("您的问题", exact=True)).to_be_visible()
        # the opening statement follows the page's language (GET /v1/parameters?language=zh)
        expect(page.locator("#opening")).to_have_text(server.settings.opening_statement["zh"])
        kiosk.shot("09-chinese")

        agent.record(CENTRAL, "online", success=True)
        page.clock.fast_forward(16_000)  # the next poll; the idle reset also comes due
        expect(central).to_be_hidden()
        expect(page.locator("html")).to_have_attribute("lang", "en")  # back to the box's language
    finally:
        db.close()


def test_the_idle_reset_on_the_real_clock(kiosk_factory: Any, artifacts: Path) -> None:
    kiosk = kiosk_factory(clock=False)
    page = kiosk.page
    kiosk.open()
    # how long the page took to load, for people to read (the clock is the browser's own here)
    timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
    (artifacts / "navigation-timing.json").write_text(json.dumps(json.loads(timing), indent=2))
    page.get_by_role("button", name=REFUND).tap()
    page.wait_for_selector("body[data-resets='1']")  # IDLE_S after the answer, however long that took
    sync_api.expect(page.locator("#messages > *")).to_have_count(0)
    sync_api.expect(page.locator("#welcome")).to_be_visible()


def test_the_page_is_labelled_keyboard_usable_and_legible(kiosk_factory: Any, artifacts: Path) -> None:
    kiosk = kiosk_factory()
    page = kiosk.page
    kiosk.open()
    kiosk.pause_clock()
    # every control has a name and a finger-sized target
    controls = page.locator("button, input")
    for index in range(controls.count()):
        control = controls.nth(index)
        box = control.bounding_box()
        name = control.get_attribute("aria-label") or control.inner_text() or control.get_attribute("id")
        assert box["width"] >= 48 and box["height"] >= 48, f"{name}: {box}"
    assert page.get_by_label("Your question", exact=True).count() == 1
    assert page.get_by_role("log", name="Conversation").count() == 1
    # the keyboard alone: tab to the first suggestion, Enter asks it
    page.keyboard.press("Tab")
    for _ in range(6):
        if page.evaluate("document.activeElement.classList.contains('chip')"):
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == CANCEL
    page.keyboard.press("Enter")
    kiosk.wait_answers_done(1)
    page.get_by_role("button", name="Call a staff member").focus()
    kiosk.shot("10-keyboard-focus")
    low = [item for item in page.evaluate(CONTRAST) if item["ratio"] < item["needed"]]
    assert low == [], f"text below WCAG AA contrast: {low}"


def test_the_page_asks_no_host_but_the_box(kiosk_factory: Any, server: LiveServer) -> None:
    kiosk = kiosk_factory()
    response = kiosk.open()
    kiosk.pause_clock()
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    kiosk.page.get_by_role("button", name="中文").tap()
    kiosk.page.get_by_role("button", name="Can I change my delivery address?").tap()
    kiosk.wait_answers_done(1)
    own = [url for url in kiosk.requests if url.startswith(server.url)]
    assert {url.split("?")[0].removeprefix(server.url) for url in own} >= {
        "/",
        "/ui/base.css",
        "/ui/kiosk.css",
        "/ui/i18n.js",
        "/ui/kiosk.js",
        "/kiosk/status",
        "/v1/parameters",
        "/v1/chat-messages",
    }
    assert kiosk.foreign_requests() == []
