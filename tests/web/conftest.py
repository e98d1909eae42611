from contextlib import ExitStack

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.web.browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture
def launch_browser():
    """Return a function that starts Chromium, to call after the test data exists."""
    with ExitStack() as stack:

        def launch() -> Browser:
            playwright = stack.enter_context(sync_playwright())
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
            stack.callback(browser.close)
            return browser

        yield launch
