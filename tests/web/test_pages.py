import json
import re
import uuid
from html import unescape

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken

from collab.models import Document, Role

PASSWORD = "correct-horse-battery"


@pytest.fixture
def client():
    return Client()


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def editor_config(response) -> dict:
    """Return the JSON that the editor page embeds with json_script."""
    match = re.search(
        r'<script id="editor-config" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match, "the editor page has no editor-config script"
    return json.loads(match.group(1))


# Accounts


@pytest.mark.parametrize(
    "path",
    [
        "/",
        f"/documents/{uuid.uuid4()}/",
        f"/documents/{uuid.uuid4()}/share/",
    ],
)
def test_anonymous_redirected_to_sign_in(client, db, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_sign_up_signs_in(client, db):
    response = client.post(
        "/accounts/signup/",
        {"username": "ada", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert get_user_model().objects.filter(username="ada").exists()
    page = client.get("/")
    assert page.status_code == 200
    assert "Signed in as <strong>ada</strong>" in page.content.decode()


def test_sign_up_password_mismatch(client, db):
    response = client.post(
        "/accounts/signup/",
        {"username": "ada", "password1": PASSWORD, "password2": "other-password-1"},
    )
    assert response.status_code == 200
    assert "didn’t match" in unescape(response.content.decode())
    assert not get_user_model().objects.filter(username="ada").exists()


def test_sign_up_page_renders(client, db):
    response = client.get("/accounts/signup/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="password1"' in body
    assert 'name="password2"' in body
    assert "Materi Realtime" in body


def test_sign_in_and_out(client, make_user):
    make_user("ada")
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert 'name="username"' in page.content.decode()

    response = client.post(
        "/accounts/login/", {"username": "ada", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert "Signed in as <strong>ada</strong>" in client.get("/").content.decode()

    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


def test_sign_in_wrong_password(client, make_user):
    make_user("ada")
    response = client.post("/accounts/login/", {"username": "ada", "password": "no"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()


def test_sign_in_follows_next(client, make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada)
    editor_path = f"/documents/{document.pk}/"
    response = client.post(
        f"/accounts/login/?next={editor_path}",
        {"username": "ada", "password": PASSWORD, "next": editor_path},
    )
    assert response.status_code == 302
    assert response["Location"] == editor_path


# Document list


def test_list_shows_member_documents(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    make_document(ada, title="Ada's plan", members=[(bob, "viewer")])
    make_document(bob, title="Bob's secret")

    response = signed_in(ada).get("/")

    body = unescape(response.content.decode())
    assert response.status_code == 200
    assert "Ada's plan" in body
    assert "Bob's secret" not in body


def test_list_empty(make_user):
    ada = make_user("ada")
    response = signed_in(ada).get("/")
    assert "No documents yet" in response.content.decode()


def test_create_document_opens_editor(make_user):
    ada = make_user("ada")
    response = signed_in(ada).post("/", {"title": "Minutes"})
    document = Document.objects.get(title="Minutes")
    assert response.status_code == 302
    assert response["Location"] == f"/documents/{document.pk}/"
    assert document.owner == ada
    assert document.memberships.get(user=ada).role == Role.OWNER


@pytest.mark.parametrize("title", ["", "x" * 201])
def test_create_document_invalid_title(make_user, title):
    ada = make_user("ada")
    response = signed_in(ada).post("/", {"title": title})
    assert response.status_code == 200
    assert 'class="errorlist' in response.content.decode()
    assert Document.objects.count() == 0


# Sharing


def test_share_page_for_owner(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, members=[(bob, "viewer")])

    response = signed_in(ada).get(f"/documents/{document.pk}/share/")

    body = response.content.decode()
    assert response.status_code == 200
    assert 'name="username"' in body
    assert 'name="role"' in body
    assert f"/documents/{document.pk}/members/bob/remove/" in body
    # The owner has no remove button.
    assert f"/documents/{document.pk}/members/ada/remove/" not in body


def test_share_adds_and_changes_member(make_user, make_document):
    ada = make_user("ada")
    make_user("bob")
    document = make_document(ada)
    client = signed_in(ada)
    share_path = f"/documents/{document.pk}/share/"

    response = client.post(share_path, {"username": "bob", "role": "editor"})
    assert response.status_code == 302
    assert document.memberships.get(user__username="bob").role == Role.EDITOR

    client.post(share_path, {"username": "bob", "role": "viewer"})
    assert document.memberships.get(user__username="bob").role == Role.VIEWER
    page = client.get(share_path)
    assert "bob now has the viewer role." in page.content.decode()


def test_share_unknown_username(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada)
    response = signed_in(ada).post(
        f"/documents/{document.pk}/share/", {"username": "nobody", "role": "editor"}
    )
    assert response.status_code == 200
    body = unescape(response.content.decode())
    assert "No user with username 'nobody' exists" in body
    assert document.memberships.count() == 1


def test_share_transfers_ownership(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, members=[(bob, "editor")])
    response = signed_in(ada).post(
        f"/documents/{document.pk}/share/", {"username": "bob", "role": "owner"}
    )
    assert response.status_code == 302
    document.refresh_from_db()
    assert document.owner == bob
    assert document.memberships.get(user=ada).role == Role.EDITOR


def test_remove_member(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, members=[(bob, "viewer")])
    client = signed_in(ada)

    response = client.post(f"/documents/{document.pk}/members/bob/remove/")

    assert response.status_code == 302
    assert not document.memberships.filter(user=bob).exists()
    assert signed_in(bob).get(f"/documents/{document.pk}/").status_code == 404


def test_owner_cannot_remove_themself(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada)
    client = signed_in(ada)
    response = client.post(f"/documents/{document.pk}/members/ada/remove/", follow=True)
    assert "ada is the owner and cannot be removed" in response.content.decode()
    assert document.memberships.filter(user=ada).exists()


def test_remove_member_requires_post(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, members=[(bob, "viewer")])
    response = signed_in(ada).get(f"/documents/{document.pk}/members/bob/remove/")
    assert response.status_code == 405
    assert document.memberships.filter(user=bob).exists()


def test_share_page_for_other_member(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    make_user("carol")
    document = make_document(ada, members=[(bob, "editor")])
    client = signed_in(bob)

    page = client.get(f"/documents/{document.pk}/share/")
    added = client.post(
        f"/documents/{document.pk}/share/", {"username": "carol", "role": "viewer"}
    )
    removed = client.post(f"/documents/{document.pk}/members/ada/remove/")

    assert page.status_code == 200
    assert 'name="username"' not in page.content.decode()
    assert "remove/" not in page.content.decode()
    assert added.status_code == 403
    assert removed.status_code == 403
    assert document.memberships.count() == 2


def test_pages_hidden_from_non_members(make_user, make_document):
    ada = make_user("ada")
    eve = make_user("eve")
    document = make_document(ada)
    client = signed_in(eve)
    assert client.get(f"/documents/{document.pk}/").status_code == 404
    assert client.get(f"/documents/{document.pk}/share/").status_code == 404
    remove_path = f"/documents/{document.pk}/members/ada/remove/"
    assert client.post(remove_path).status_code == 404


# Editor


def test_editor_embeds_config(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada, title="Draft", content="Hello")

    response = signed_in(ada).get(f"/documents/{document.pk}/")

    assert response.status_code == 200
    body = response.content.decode()
    config = editor_config(response)
    assert config["documentId"] == str(document.pk)
    assert config["username"] == "ada"
    assert config["role"] == "owner"
    assert config["title"] == "Draft"
    assert config["websocketUrl"] == "ws://testserver"
    assert config["sessionTokenUrl"] == "/v1/auth/session-token/"
    assert config["csrfToken"]
    token = AccessToken(config["accessToken"])
    assert str(token["user_id"]) == str(ada.pk)
    assert '<textarea id="editor"' in body
    assert 'data-state="connecting"' in body
    assert '<script type="module" src="/static/editor/editor.js">' in body
    assert "no-cache" in response["Cache-Control"]


def test_editor_uses_wss_on_https(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada)
    response = signed_in(ada).get(f"/documents/{document.pk}/", secure=True)
    assert editor_config(response)["websocketUrl"] == "wss://testserver"


def test_editor_shows_viewer_role(make_user, make_document):
    ada = make_user("ada")
    vic = make_user("vic")
    document = make_document(ada, members=[(vic, "viewer")])
    response = signed_in(vic).get(f"/documents/{document.pk}/")
    assert editor_config(response)["role"] == "viewer"
    assert 'data-role="viewer"' in response.content.decode()


def test_editor_escapes_title(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada, title="</script><b>x</b>")
    response = signed_in(ada).get(f"/documents/{document.pk}/")
    body = response.content.decode()
    assert "<b>x</b>" not in body
    assert editor_config(response)["title"] == "</script><b>x</b>"


def test_editor_script_served(client, db):
    response = client.get("/static/editor/editor.js")
    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    response.close()
    assert b"from '../materi/realtime.js'" in content
