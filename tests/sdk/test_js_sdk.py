"""The JavaScript SDK's own tests under Node, with a real server for the live one."""

import os
import shutil
import subprocess

import pytest

from tests.conftest import token_for
from tests.live import ROOT

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js 20 is needed for the JavaScript SDK")
@pytest.mark.timeout(300)
def test_javascript_sdk_suite(server, make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, members=[(bob, "editor")])
    env = {
        **os.environ,
        "MATERI_URL": server.ws_url,
        "MATERI_DOCUMENT_ID": str(document.pk),
        "MATERI_TOKEN_A": token_for(ada),
        "MATERI_TOKEN_B": token_for(bob),
    }
    result = subprocess.run(
        [NODE, "--experimental-websocket", "--test", "tests/js/"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    summary = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    assert "# fail 0" in result.stdout, summary
    # The live test must have run against the server, not been skipped.
    assert "# skipped 0" in result.stdout, summary
