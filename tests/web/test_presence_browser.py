"""Presence in the editor page: avatars and remote carets, in headless Chromium."""

from playwright.sync_api import Page, expect

from presence.service import color_for_user
from tests.web.browser import (
    TIMEOUT_MS,
    click_line_end,
    close_pages,
    open_editor,
    text_before_caret,
    wait_until_converged,
)

# Milliseconds within which a closed page's avatar must disappear from the others.
LEAVE_TIMEOUT_MS = 5_000


def rgb(hex_color: str) -> str:
    """Return a #rrggbb colour as getComputedStyle writes it."""
    red, green, blue = (int(hex_color[index : index + 2], 16) for index in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def caret_box(page: Page, user_id: int) -> dict:
    """Return where a remote caret is drawn.

    The query and the measurement run in one script, because the editor rebuilds the
    layer on every presence change, and a caret taken from the old layer measures as
    an empty box at 0,0.
    """
    return page.evaluate(
        """(selector) => {
            const rect = document.querySelector(selector).getBoundingClientRect();
            return {x: rect.x, y: rect.y, height: rect.height};
        }""",
        f'#editor-mirror .remote-caret[data-user-id="{user_id}"]',
    )


def hide_page(page: Page) -> None:
    """Make the page report itself hidden, as a background tab does."""
    page.evaluate(
        """() => {
            Object.defineProperty(document, 'visibilityState', {
                value: 'hidden', configurable: true,
            });
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )


def test_remote_caret_and_avatars(server, make_user, make_document, launch_browser):
    ada = make_user("ada")
    ada.first_name = "Ada"
    ada.last_name = "Lovelace"
    ada.save()
    bob = make_user("bob")
    document = make_document(
        ada,
        title="Presence",
        content="alpha 😀\nbravo\ncharlie\n",
        members=[(bob, "editor")],
    )
    color = color_for_user(ada.pk)
    browser = launch_browser()
    errors: list[str] = []
    page_a = open_editor(browser, server, "ada", document.pk, errors)
    page_b = open_editor(browser, server, "bob", document.pk, errors)

    # Ada puts her caret at the end of "bravo", 13 code points and 14 UTF-16 units
    # from the start.
    click_line_end(page_a, 1)
    assert text_before_caret(page_a) == "alpha 😀\nbravo"
    caret = page_b.locator(f'#editor-mirror .remote-caret[data-user-id="{ada.pk}"]')
    expect(caret).to_have_count(1, timeout=TIMEOUT_MS)
    expect(caret).to_have_attribute("data-position", "13")
    expect(caret.locator(".remote-caret-label")).to_have_text("Ada Lovelace")
    assert (
        caret.evaluate("(caret) => caret.style.getPropertyValue('--presence-color')")
        == color
    )
    assert caret.locator(".remote-caret-label").evaluate(
        "(label) => getComputedStyle(label).backgroundColor"
    ) == rgb(color)

    # Clicking Bob's textarea just right of the drawn caret puts his own caret at the
    # same character, so the layer is aligned with the textarea's text.
    box = caret_box(page_b, ada.pk)
    page_b.mouse.click(box["x"] + 1, box["y"] + box["height"] / 2)
    assert text_before_caret(page_b) == "alpha 😀\nbravo"

    # Bob types before Ada's caret, which moves by the typed length.
    page_b.keyboard.press("Control+Home")
    page_b.keyboard.type("XYZ ")
    expect(caret).to_have_attribute("data-position", "17", timeout=TIMEOUT_MS)
    content = wait_until_converged([page_a, page_b], document.pk)
    assert content == "XYZ alpha 😀\nbravo\ncharlie\n"
    assert text_before_caret(page_a) == "XYZ alpha 😀\nbravo"
    moved = caret_box(page_b, ada.pk)
    assert moved["y"] == box["y"]
    assert moved["x"] == box["x"]

    # Bob's caret shows on Ada's page, and not on his own.
    bob_caret = page_a.locator(f'#editor-mirror .remote-caret[data-user-id="{bob.pk}"]')
    expect(bob_caret).to_have_attribute("data-position", "4", timeout=TIMEOUT_MS)
    expect(page_b.locator(f'.remote-caret[data-user-id="{bob.pk}"]')).to_have_count(0)

    avatars = page_b.locator("#presence-avatars .avatar")
    expect(avatars).to_have_count(1)
    avatar = avatars.first
    expect(avatar).to_have_attribute("data-user-id", str(ada.pk))
    expect(avatar).to_have_text("AL")
    expect(avatar).to_have_attribute("title", "Ada Lovelace (active)")
    expect(avatar).to_have_attribute("data-activity", "active")

    # Ada selects "bravo" backwards, so her caret is at its start.
    page_a.locator("#editor").focus()
    for _ in range(5):
        page_a.keyboard.press("Shift+ArrowLeft")
    expect(caret).to_have_attribute("data-position", "12", timeout=TIMEOUT_MS)
    highlight = page_b.locator("#editor-mirror .remote-selection")
    expect(highlight).to_have_text("bravo")
    assert (
        highlight.evaluate("(span) => span.style.getPropertyValue('--presence-color')")
        == color
    )

    page_b.screenshot(path="/tmp/presence.png")

    # A second tab of Ada's adds no avatar. While it is hidden, Ada counts as active
    # because of her first tab, and as away once only the hidden tab is left.
    page_a2 = open_editor(browser, server, "ada", document.pk, errors)
    expect(avatar).to_have_attribute(
        "title", "Ada Lovelace (active, 2 tabs)", timeout=TIMEOUT_MS
    )
    expect(avatars).to_have_count(1)
    hide_page(page_a2)
    close_pages(page_a)
    expect(avatar).to_have_attribute("data-activity", "away", timeout=LEAVE_TIMEOUT_MS)
    expect(avatar).to_have_attribute("title", "Ada Lovelace (away)")
    expect(caret).to_have_count(0)

    close_pages(page_a2)
    expect(avatars).to_have_count(0, timeout=LEAVE_TIMEOUT_MS)
    assert errors == []
    close_pages(page_b)


def test_caret_label_fades_after_drawing(
    server, make_user, make_document, launch_browser
):
    """The name label covers the line above, so it fades once the caret is still."""
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, content="alpha\nbravo\n", members=[(bob, "editor")])
    browser = launch_browser()
    errors: list[str] = []
    page_a = open_editor(browser, server, "ada", document.pk, errors)
    page_b = open_editor(browser, server, "bob", document.pk, errors)

    click_line_end(page_a, 1)
    label = page_b.locator("#editor-mirror .remote-caret-label")
    expect(label).to_have_count(1, timeout=TIMEOUT_MS)
    expect(label).to_have_css("opacity", "1")
    expect(label).to_have_css("opacity", "0", timeout=10_000)

    # Moving the caret draws the label again.
    page_a.keyboard.press("ArrowLeft")
    expect(label).to_have_css("opacity", "1", timeout=TIMEOUT_MS)
    assert errors == []
    close_pages(page_a, page_b)
