"""The editor keeps what the user typed while its server was down."""

from playwright.sync_api import expect

from tests.web.browser import (
    TIMEOUT_MS,
    close_pages,
    open_editor,
    wait_until_converged,
)


def test_typing_during_server_restart_is_kept(
    start_server, make_user, make_document, launch_browser
):
    server = start_server()
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(
        ada, title="Outage notes", content="", members=[(bob, "editor")]
    )
    browser = launch_browser()
    page_a = open_editor(browser, server, "ada", document.pk)
    page_b = open_editor(browser, server, "bob", document.pk)

    page_a.locator("#editor").click()
    page_a.keyboard.type("before ")
    wait_until_converged([page_a, page_b], document.pk)

    server.kill()
    badge = page_a.locator("#connection-state")
    expect(badge).not_to_have_attribute("data-state", "connected", timeout=TIMEOUT_MS)
    page_a.keyboard.type("during ")
    page_b.locator("#editor").press("Control+End")
    page_b.keyboard.type("offline-b ")
    expect(page_a.locator("#save-state")).to_have_attribute("data-pending", "true")

    server.start()
    expect(badge).to_have_attribute("data-state", "connected", timeout=TIMEOUT_MS)
    content = wait_until_converged([page_a, page_b], document.pk, timeout=30)
    assert "before " in content
    assert "during " in content
    assert "offline-b " in content
    assert len(content) == len("before during offline-b ")
    close_pages(page_a, page_b)
