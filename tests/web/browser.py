"""Helpers that drive the editor page in headless Chromium.

Playwright's sync API keeps an event loop running on the test's thread, and Django
rejects ORM calls from such a thread. So tests create their data before they launch
the browser, and every later database access goes through `in_thread`.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from django.db import connections
from playwright.sync_api import Page, expect

from tests.stored import stored_text

PASSWORD = "correct-horse-battery"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Milliseconds that Playwright waits for a page condition.
TIMEOUT_MS = 15_000


def in_thread(function):
    """Run a function that uses the ORM on a new thread and return its result."""

    def run():
        try:
            return function()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def stored_content(document_id) -> str:
    return in_thread(lambda: stored_text(document_id))


def open_editor(browser, server, username: str, document_id, errors=None) -> Page:
    """Sign in through the sign-in form and wait until the editor is connected.

    Uncaught script errors of the page are appended to `errors` when it is given.
    """
    context = browser.new_context(
        base_url=server.http_url,
        permissions=["clipboard-read", "clipboard-write"],
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(f"{username}: {error}"))
    editor_path = f"/documents/{document_id}/"
    page.goto(f"/accounts/login/?next={editor_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form.stacked-form button[type=submit]")
    page.wait_for_url(f"**{editor_path}")
    badge = page.locator("#connection-state")
    expect(badge).to_have_attribute("data-state", "connected", timeout=TIMEOUT_MS)
    expect(badge).to_have_text("Connected")
    expect(page.locator("#editor")).to_be_editable()
    return page


def click_line_end(page: Page, line: int) -> None:
    """Click right of the text on a line (0-based) to put the caret at its end."""
    editor = page.locator("#editor")
    box = editor.bounding_box()
    metrics = editor.evaluate(
        """(element) => {
            const style = getComputedStyle(element);
            return {
                lineHeight: parseFloat(style.lineHeight),
                top: parseFloat(style.paddingTop) + parseFloat(style.borderTopWidth),
            };
        }"""
    )
    y = box["y"] + metrics["top"] + metrics["lineHeight"] * (line + 0.5)
    page.mouse.click(box["x"] + box["width"] - 40, y)


def text_before_caret(page: Page) -> str:
    return page.locator("#editor").evaluate(
        "(element) => element.value.slice(0, element.selectionStart)"
    )


def wait_until_converged(pages: list[Page], document_id, timeout: float = 20.0) -> str:
    """Wait until every page is saved and shows the stored content, and return it."""
    deadline = time.monotonic() + timeout
    values: list[str] = []
    stored = None
    while time.monotonic() < deadline:
        pending = [
            page.locator("#save-state").get_attribute("data-pending") for page in pages
        ]
        values = [page.locator("#editor").input_value() for page in pages]
        stored = stored_content(document_id)
        if pending == ["false"] * len(pages) and all(v == stored for v in values):
            return stored
        time.sleep(0.1)
    raise AssertionError(
        f"pages did not converge within {timeout} s: pages {values!r}, "
        f"stored {stored!r}"
    )


def close_pages(*pages: Page) -> None:
    for page in pages:
        page.context.close()
