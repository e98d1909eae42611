"""The editor page in headless Chromium against a real server process."""

from playwright.sync_api import expect

from tests.web.browser import (
    PASSWORD,
    TIMEOUT_MS,
    click_line_end,
    close_pages,
    open_editor,
    stored_content,
    text_before_caret,
    wait_until_converged,
)


def test_concurrent_typing_converges(server, make_user, make_document, launch_browser):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(
        ada,
        title="Concurrent notes",
        content="alpha\nbravo\ncharlie\ndelta\n",
        members=[(bob, "editor")],
    )
    browser = launch_browser()
    errors: list[str] = []
    page_a = open_editor(browser, server, "ada", document.pk, errors)
    page_b = open_editor(browser, server, "bob", document.pk, errors)

    click_line_end(page_a, 0)
    click_line_end(page_b, 2)
    page_a.keyboard.type(" one")
    page_b.keyboard.type(" uno")
    page_a.keyboard.type(" two 😀")
    page_b.keyboard.type(" dos")
    # Backspace removes the emoji (two UTF-16 units, one code point) and the space.
    page_a.keyboard.press("Backspace")
    page_a.keyboard.press("Backspace")
    page_b.keyboard.type(" tres 🎉")
    page_a.keyboard.type("!")
    page_b.evaluate("navigator.clipboard.writeText('[pasted ✂]')")
    page_b.keyboard.press("Control+V")
    click_line_end(page_a, 3)
    page_a.keyboard.type(" fin")
    # Cut the last two characters, "✂]", and type the bracket back.
    page_b.keyboard.press("Shift+ArrowLeft")
    page_b.keyboard.press("Shift+ArrowLeft")
    page_b.keyboard.press("Control+X")
    page_b.keyboard.type("]")

    content = wait_until_converged([page_a, page_b], document.pk)

    assert content == (
        "alpha one two!\nbravo\ncharlie uno dos tres 🎉[pasted ]\ndelta fin\n"
    )
    assert page_a.locator("#connection-state").get_attribute("data-state") == (
        "connected"
    )
    assert errors == []
    page_a.screenshot(path="/tmp/editor.png")
    close_pages(page_a, page_b)


def test_remote_edits_move_caret(server, make_user, make_document, launch_browser):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(
        ada, title="Caret", content="hello world", members=[(bob, "editor")]
    )
    browser = launch_browser()
    page_a = open_editor(browser, server, "ada", document.pk)
    page_b = open_editor(browser, server, "bob", document.pk)
    editor_a = page_a.locator("#editor")

    page_a.locator("#editor").click()
    page_a.keyboard.press("Control+Home")
    for _ in range(5):
        page_a.keyboard.press("ArrowRight")
    assert text_before_caret(page_a) == "hello"

    # An insert before the caret, with an emoji, moves the caret by its length.
    page_b.locator("#editor").click()
    page_b.keyboard.press("Control+Home")
    page_b.keyboard.type("😀 ab ")
    expect(editor_a).to_have_value("😀 ab hello world")
    assert text_before_caret(page_a) == "😀 ab hello"

    # An insert exactly at the caret leaves the caret before it.
    for _ in range(5):
        page_b.keyboard.press("ArrowRight")
    page_b.keyboard.type("X")
    expect(editor_a).to_have_value("😀 ab helloX world")
    assert text_before_caret(page_a) == "😀 ab hello"

    # A delete before the caret moves the caret back.
    page_b.keyboard.press("Control+Home")
    page_b.keyboard.press("Delete")
    page_b.keyboard.press("Delete")
    page_b.keyboard.press("Delete")
    expect(editor_a).to_have_value("b helloX world")
    assert text_before_caret(page_a) == "b hello"

    page_a.keyboard.type("!")
    content = wait_until_converged([page_a, page_b], document.pk)
    assert content == "b hello!X world"
    close_pages(page_a, page_b)


def test_viewer_textarea_read_only(server, make_user, make_document, launch_browser):
    ada = make_user("ada")
    vic = make_user("vic")
    document = make_document(
        ada, title="Read me", content="fixed text", members=[(vic, "viewer")]
    )
    browser = launch_browser()
    context = browser.new_context(base_url=server.http_url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"/accounts/login/?next=/documents/{document.pk}/")
    page.fill("#id_username", "vic")
    page.fill("#id_password", PASSWORD)
    page.click("form.stacked-form button[type=submit]")
    expect(page.locator("#connection-state")).to_have_attribute(
        "data-state", "connected"
    )
    editor = page.locator("#editor")

    expect(editor).to_have_value("fixed text")
    expect(editor).not_to_be_editable()
    expect(page.locator("#role")).to_have_attribute("data-role", "viewer")
    editor.click()
    page.keyboard.type("typed")
    expect(editor).to_have_value("fixed text")
    assert stored_content(document.pk) == "fixed text"
    context.close()


def test_token_refreshed_through_session(
    start_server, make_user, make_document, launch_browser
):
    # Access tokens of 3 s make the client fetch new ones from the session endpoint
    # shortly before each expires, because the server closes a socket whose token
    # expired.
    server = start_server(MATERI_ACCESS_TOKEN_SECONDS="3")
    ada = make_user("ada")
    document = make_document(ada, title="Short tokens", content="start")
    browser = launch_browser()
    errors: list[str] = []
    page = open_editor(browser, server, "ada", document.pk, errors)
    statuses: list[int] = []

    def record_token_response(response) -> None:
        if response.url.endswith("/v1/auth/session-token/"):
            statuses.append(response.status)

    page.on("response", record_token_response)

    page.wait_for_timeout(7_000)
    expect(page.locator("#connection-state")).to_have_attribute(
        "data-state", "connected"
    )
    page.locator("#editor").click()
    page.keyboard.press("Control+End")
    page.keyboard.type(" and later")

    content = wait_until_converged([page], document.pk)
    assert content == "start and later"
    assert len(statuses) >= 2
    assert set(statuses) == {200}
    assert errors == []
    close_pages(page)
