import uuid

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from collab import commit
from collab.models import Document, DocumentMembership, Role
from tests.conftest import token_for
from tests.stored import stored_text

PASSWORD = "correct-horse-battery"


def api_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client


def detail_url(document) -> str:
    return f"/v1/documents/{document.pk}/"


@pytest.fixture
def team(make_user, make_document):
    """A document with one member of each role, and a user who is not a member."""
    owner = make_user("olivia")
    users = {
        "owner": owner,
        "editor": make_user("eddie"),
        "commenter": make_user("carla"),
        "viewer": make_user("victor"),
        "outsider": make_user("oscar"),
    }
    document = make_document(
        owner,
        title="Plan",
        content="hello",
        members=[
            (users["editor"], "editor"),
            (users["commenter"], "commenter"),
            (users["viewer"], "viewer"),
        ],
    )
    return document, users


# Tokens


def test_token_obtain_and_refresh(make_user):
    make_user("ada")
    client = APIClient()

    response = client.post(
        "/v1/auth/token/", {"username": "ada", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    assert set(response.data) >= {"access", "refresh"}

    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.data['access']}")
    assert client.get("/v1/documents/").status_code == 200

    refreshed = APIClient().post(
        "/v1/auth/token/refresh/", {"refresh": response.data["refresh"]}, format="json"
    )
    assert refreshed.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {refreshed.data['access']}")
    assert client.get("/v1/documents/").status_code == 200


def test_token_obtain_wrong_password(make_user):
    make_user("ada")
    response = APIClient().post(
        "/v1/auth/token/", {"username": "ada", "password": "wrong"}, format="json"
    )
    assert response.status_code == 401


def test_anonymous_request_rejected(team):
    document, _ = team
    assert api_for().get("/v1/documents/").status_code == 401
    assert api_for().get(detail_url(document)).status_code == 401


def test_invalid_token_rejected(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert client.get("/v1/documents/").status_code == 401


# Listing and creating


def test_list_shows_member_documents_with_role(team, make_document):
    document, users = team
    make_document(users["outsider"], title="Private")

    response = api_for(users["viewer"]).get("/v1/documents/")

    assert response.status_code == 200
    assert len(response.data) == 1
    entry = response.data[0]
    assert entry["id"] == str(document.pk)
    assert entry["title"] == "Plan"
    assert entry["version"] == 0
    assert entry["role"] == "viewer"
    assert "updated_at" in entry
    assert "content" not in entry


def test_list_for_each_role(team):
    document, users = team
    for role in ("owner", "editor", "commenter", "viewer"):
        response = api_for(users[role]).get("/v1/documents/")
        assert [entry["role"] for entry in response.data] == [role], role
    assert api_for(users["outsider"]).get("/v1/documents/").data == []


def test_create_document(make_user):
    ada = make_user("ada")

    response = api_for(ada).post(
        "/v1/documents/", {"title": "Notes", "content": "hi 😀"}, format="json"
    )

    assert response.status_code == 201
    assert response.data["title"] == "Notes"
    assert response.data["content"] == "hi 😀"
    assert response.data["version"] == 0
    assert response.data["role"] == "owner"
    document = Document.objects.get(pk=response.data["id"])
    assert document.owner == ada
    assert document.memberships.get().role == Role.OWNER


def test_create_document_without_content(make_user):
    ada = make_user("ada")
    response = api_for(ada).post("/v1/documents/", {"title": "Empty"}, format="json")
    assert response.status_code == 201
    assert response.data["content"] == ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "Notes", "content": None}, "content"),
    ],
)
def test_create_document_invalid_input(make_user, body, field):
    ada = make_user("ada")
    response = api_for(ada).post("/v1/documents/", body, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert Document.objects.count() == 0


def test_create_document_lone_surrogate(make_user):
    ada = make_user("ada")
    # The test client cannot encode a lone surrogate, so the body is raw JSON.
    body = '{"title": "Notes", "content": "bad \\ud800 surrogate"}'
    response = api_for(ada).post(
        "/v1/documents/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert "U+D800" in response.data["content"][0]
    assert Document.objects.count() == 0


def test_create_document_title_of_max_length(make_user):
    ada = make_user("ada")
    response = api_for(ada).post("/v1/documents/", {"title": "x" * 200}, format="json")
    assert response.status_code == 201


def test_create_document_content_over_insert_limit(make_user, settings):
    settings.MATERI = {**settings.MATERI, "MAX_INSERT_LENGTH": 5}
    ada = make_user("ada")
    response = api_for(ada).post(
        "/v1/documents/", {"title": "Long", "content": "abcdef"}, format="json"
    )
    assert response.status_code == 400
    assert "maximum is 5" in response.data["content"][0]


# Reading, renaming and deleting one document


def test_retrieve_for_each_role(team):
    document, users = team
    for role in ("owner", "editor", "commenter", "viewer"):
        response = api_for(users[role]).get(detail_url(document))
        assert response.status_code == 200, role
        assert response.data["role"] == role
        assert response.data["content"] == "hello"
        assert response.data["version"] == 0
        assert response.data["title"] == "Plan"
        assert response.data["owner"] == "olivia"


def test_non_member_gets_not_found(team):
    document, users = team
    outsider = api_for(users["outsider"])
    missing = f"/v1/documents/{uuid.uuid4()}/"

    responses = {
        "retrieve": outsider.get(detail_url(document)),
        "rename": outsider.patch(detail_url(document), {"title": "x"}, format="json"),
        "delete": outsider.delete(detail_url(document)),
        "operations": outsider.get(f"{detail_url(document)}operations/?since=0"),
        "members": outsider.get(f"{detail_url(document)}members/"),
        "add member": outsider.post(
            f"{detail_url(document)}members/",
            {"username": "oscar", "role": "editor"},
            format="json",
        ),
        "remove member": outsider.delete(f"{detail_url(document)}members/victor/"),
    }

    for name, response in responses.items():
        assert response.status_code == 404, name
    # A document that does not exist gets the same response as another's document.
    missing_response = outsider.get(missing)
    assert missing_response.status_code == 404
    assert missing_response.data == responses["retrieve"].data
    assert Document.objects.filter(pk=document.pk, title="Plan").exists()


@pytest.mark.parametrize("role", ["owner", "editor"])
def test_rename_allowed(team, role):
    document, users = team
    response = api_for(users[role]).patch(
        detail_url(document), {"title": "Renamed"}, format="json"
    )
    assert response.status_code == 200
    assert response.data["title"] == "Renamed"
    document.refresh_from_db()
    assert document.title == "Renamed"


@pytest.mark.parametrize("role", ["commenter", "viewer"])
def test_rename_forbidden(team, role):
    document, users = team
    response = api_for(users[role]).patch(
        detail_url(document), {"title": "Renamed"}, format="json"
    )
    assert response.status_code == 403
    assert role in response.data["detail"]
    document.refresh_from_db()
    assert document.title == "Plan"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "y" * 201}, "title"),
        ({"title": "New", "content": "overwritten"}, "content"),
        ({"title": "New", "version": 3}, "version"),
    ],
)
def test_rename_invalid_input(team, body, field):
    document, users = team
    response = api_for(users["owner"]).patch(detail_url(document), body, format="json")
    assert response.status_code == 400
    assert field in response.data
    document.refresh_from_db()
    assert document.title == "Plan"
    assert stored_text(document.pk) == "hello"


def test_delete_by_owner(team):
    document, users = team
    response = api_for(users["owner"]).delete(detail_url(document))
    assert response.status_code == 204
    assert not Document.objects.filter(pk=document.pk).exists()
    assert not DocumentMembership.objects.filter(document_id=document.pk).exists()


@pytest.mark.parametrize("role", ["editor", "commenter", "viewer"])
def test_delete_forbidden(team, role):
    document, users = team
    response = api_for(users[role]).delete(detail_url(document))
    assert response.status_code == 403
    assert "owner" in response.data["detail"]
    assert Document.objects.filter(pk=document.pk).exists()


# Operations


@pytest.fixture
def edited_document(make_user, make_document):
    """A document with five stored operations: versions 0 to 4, text "abcde"."""
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, members=[(bob, "viewer")])
    for version, letter in enumerate("abcde"):
        retain = [{"retain": version}] if version else []
        commit.commit(
            document.pk,
            ada,
            client_id="c1",
            message_id=f"m{version}",
            base_version=version,
            components=[*retain, {"insert": letter}],
        )
    return document, ada, bob


def operations_url(document, query: str) -> str:
    return f"/v1/documents/{document.pk}/operations/?{query}"


def test_operations_since_zero_in_order(edited_document):
    document, ada, _ = edited_document
    response = api_for(ada).get(operations_url(document, "since=0"))

    assert response.status_code == 200
    assert response.data["version"] == 5
    assert response.data["has_more"] is False
    operations = response.data["operations"]
    assert [op["version"] for op in operations] == [0, 1, 2, 3, 4]
    first = operations[0]
    assert first["operation"] == {"ops": [{"insert": "a"}]}
    assert first["client_id"] == "c1"
    assert first["message_id"] == "m0"
    assert first["user"] == {"id": ada.pk, "username": "ada"}
    assert "timestamp" in first
    assert operations[4]["operation"] == {"ops": [{"retain": 4}, {"insert": "e"}]}


def test_operations_pages_with_limit(edited_document):
    document, _, bob = edited_document
    client = api_for(bob)

    first = client.get(operations_url(document, "since=1&limit=2"))
    assert first.status_code == 200
    assert [op["version"] for op in first.data["operations"]] == [1, 2]
    assert first.data["has_more"] is True

    second = client.get(operations_url(document, "since=3&limit=2"))
    assert [op["version"] for op in second.data["operations"]] == [3, 4]
    assert second.data["has_more"] is False

    at_end = client.get(operations_url(document, "since=5"))
    assert at_end.data == {"version": 5, "operations": [], "has_more": False}


def test_operations_since_past_version(edited_document):
    document, ada, _ = edited_document
    response = api_for(ada).get(operations_url(document, "since=99"))
    assert response.status_code == 200
    assert response.data["operations"] == []
    assert response.data["has_more"] is False


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "since"),
        ("since=", "since"),
        ("since=abc", "since"),
        ("since=-1", "since"),
        ("since=1.5", "since"),
        ("since=0&limit=0", "limit"),
        ("since=0&limit=5001", "limit"),
        ("since=0&limit=many", "limit"),
    ],
)
def test_operations_invalid_query(edited_document, query, field):
    document, ada, _ = edited_document
    response = api_for(ada).get(operations_url(document, query))
    assert response.status_code == 400
    assert list(response.data) == [field]


def test_operations_max_limit_accepted(edited_document):
    document, ada, _ = edited_document
    response = api_for(ada).get(operations_url(document, "since=0&limit=5000"))
    assert response.status_code == 200
    assert len(response.data["operations"]) == 5


# Members


def members_url(document, username: str = "") -> str:
    suffix = f"{username}/" if username else ""
    return f"/v1/documents/{document.pk}/members/{suffix}"


def roles_of(document) -> dict[str, str]:
    return {
        m.user.username: m.role for m in document.memberships.select_related("user")
    }


def test_members_listed_for_each_role(team):
    document, users = team
    expected = [
        {"username": "olivia", "role": "owner"},
        {"username": "carla", "role": "commenter"},
        {"username": "eddie", "role": "editor"},
        {"username": "victor", "role": "viewer"},
    ]
    for role in ("owner", "editor", "commenter", "viewer"):
        response = api_for(users[role]).get(members_url(document))
        assert response.status_code == 200, role
        assert response.data == expected


def test_owner_adds_member(team):
    document, users = team
    response = api_for(users["owner"]).post(
        members_url(document), {"username": "oscar", "role": "viewer"}, format="json"
    )
    assert response.status_code == 201
    assert response.data == {"username": "oscar", "role": "viewer"}
    assert roles_of(document)["oscar"] == "viewer"
    assert api_for(users["outsider"]).get(detail_url(document)).status_code == 200


def test_owner_changes_member_role(team):
    document, users = team
    response = api_for(users["owner"]).post(
        members_url(document), {"username": "victor", "role": "editor"}, format="json"
    )
    assert response.status_code == 200
    assert response.data == {"username": "victor", "role": "editor"}
    assert roles_of(document)["victor"] == "editor"


def test_owner_transfers_ownership(team):
    document, users = team
    response = api_for(users["owner"]).post(
        members_url(document), {"username": "eddie", "role": "owner"}, format="json"
    )
    assert response.status_code == 200
    roles = roles_of(document)
    assert roles["eddie"] == "owner"
    assert roles["olivia"] == "editor"
    assert list(roles.values()).count("owner") == 1
    document.refresh_from_db()
    assert document.owner == users["editor"]
    # The previous owner is an editor now and can no longer manage members.
    forbidden = api_for(users["owner"]).post(
        members_url(document), {"username": "carla", "role": "viewer"}, format="json"
    )
    assert forbidden.status_code == 403


def test_transfer_to_non_member(team):
    document, users = team
    response = api_for(users["owner"]).post(
        members_url(document), {"username": "oscar", "role": "owner"}, format="json"
    )
    assert response.status_code == 201
    roles = roles_of(document)
    assert roles["oscar"] == "owner"
    assert roles["olivia"] == "editor"
    assert list(roles.values()).count("owner") == 1


def test_owner_cannot_demote_themself(team):
    document, users = team
    response = api_for(users["owner"]).post(
        members_url(document), {"username": "olivia", "role": "editor"}, format="json"
    )
    assert response.status_code == 400
    assert "transfer ownership" in response.data["role"][0]
    assert roles_of(document)["olivia"] == "owner"


@pytest.mark.parametrize("role", ["editor", "commenter", "viewer"])
def test_member_management_forbidden(team, role):
    document, users = team
    client = api_for(users[role])

    added = client.post(
        members_url(document), {"username": "oscar", "role": "viewer"}, format="json"
    )
    removed = client.delete(members_url(document, "victor"))

    assert added.status_code == 403
    assert "owner" in added.data["detail"]
    assert removed.status_code == 403
    assert "oscar" not in roles_of(document)
    assert "victor" in roles_of(document)


def test_add_member_unknown_username(team):
    document, users = team
    response = api_for(users["owner"]).post(
        members_url(document), {"username": "nobody", "role": "editor"}, format="json"
    )
    assert response.status_code == 400
    assert "nobody" in response.data["username"][0]


@pytest.mark.parametrize("role", ["admin", "", "Owner"])
def test_add_member_invalid_role(team, role):
    document, users = team
    response = api_for(users["owner"]).post(
        members_url(document), {"username": "oscar", "role": role}, format="json"
    )
    assert response.status_code == 400
    assert "role" in response.data
    assert "oscar" not in roles_of(document)


def test_add_member_missing_fields(team):
    document, users = team
    response = api_for(users["owner"]).post(members_url(document), {}, format="json")
    assert response.status_code == 400
    assert set(response.data) == {"username", "role"}


def test_invalid_role_message_lists_roles(team):
    document, users = team
    response = api_for(users["owner"]).post(
        members_url(document), {"username": "oscar", "role": "admin"}, format="json"
    )
    message = response.data["role"][0]
    assert '"admin" is not a valid role' in message
    assert "editor" in message


def test_owner_removes_member(team):
    document, users = team
    response = api_for(users["owner"]).delete(members_url(document, "victor"))
    assert response.status_code == 204
    assert "victor" not in roles_of(document)
    assert api_for(users["viewer"]).get(detail_url(document)).status_code == 404


def test_owner_cannot_remove_themself(team):
    document, users = team
    response = api_for(users["owner"]).delete(members_url(document, "olivia"))
    assert response.status_code == 400
    assert "owner" in response.data["username"][0]
    assert roles_of(document)["olivia"] == "owner"


def test_remove_non_member(team):
    document, users = team
    client = api_for(users["owner"])
    assert client.delete(members_url(document, "oscar")).status_code == 404
    assert client.delete(members_url(document, "nobody")).status_code == 404


# Session tokens


def test_session_token_for_logged_in_user(make_user):
    ada = make_user("ada")
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="ada", password=PASSWORD)
    client.get("/")  # The page sets the CSRF cookie.
    csrf_token = client.cookies["csrftoken"].value

    response = client.post("/v1/auth/session-token/", HTTP_X_CSRFTOKEN=csrf_token)

    assert response.status_code == 200
    token = AccessToken(response.data["access"])
    assert str(token["user_id"]) == str(ada.pk)
    listing = api_for().get(
        "/v1/documents/", HTTP_AUTHORIZATION=f"Bearer {response.data['access']}"
    )
    assert listing.status_code == 200


def test_session_token_requires_csrf(make_user):
    make_user("ada")
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="ada", password=PASSWORD)
    response = client.post("/v1/auth/session-token/")
    assert response.status_code == 403
    assert "CSRF" in response.data["detail"]


def test_session_token_requires_session(make_user):
    ada = make_user("ada")
    assert api_for().post("/v1/auth/session-token/").status_code == 403
    # A JWT is not accepted here: the endpoint exchanges a session for a token.
    assert api_for(ada).post("/v1/auth/session-token/").status_code == 403
