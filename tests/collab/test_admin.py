import pytest
from django.contrib.admin.sites import site
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory

from collab import commit
from collab.models import Document, DocumentMembership, Operation, Role
from tests.stored import stored_text


@pytest.fixture
def admin_client(transactional_db):
    superuser = get_user_model().objects.create_superuser(
        "root", password="correct-horse-battery"
    )
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def edited_document(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, title="Roadmap", members=[(bob, "editor")])
    commit.commit(document.pk, ada, "c1", "m1", 0, [{"insert": "hi"}])
    return document


def test_document_pages_load(admin_client, edited_document):
    listing = admin_client.get("/admin/collab/document/")
    change = admin_client.get(f"/admin/collab/document/{edited_document.pk}/change/")
    assert listing.status_code == 200
    assert "Roadmap" in listing.content.decode()
    assert change.status_code == 200
    assert "1 stored operations" in change.content.decode()


def test_document_search_by_title(admin_client, edited_document, make_document):
    make_document(edited_document.owner, title="Shopping list")
    response = admin_client.get("/admin/collab/document/?q=road")
    body = response.content.decode()
    assert "Roadmap" in body
    assert "Shopping list" not in body


def test_membership_pages_load(admin_client, edited_document):
    membership = edited_document.memberships.get(role=Role.EDITOR)
    listing = admin_client.get("/admin/collab/documentmembership/")
    change = admin_client.get(
        f"/admin/collab/documentmembership/{membership.pk}/change/"
    )
    assert listing.status_code == 200
    assert change.status_code == 200


def test_operation_pages_load(admin_client, edited_document):
    operation = Operation.objects.get()
    listing = admin_client.get("/admin/collab/operation/")
    filtered = admin_client.get(
        f"/admin/collab/operation/?document={edited_document.pk}"
    )
    detail = admin_client.get(f"/admin/collab/operation/{operation.pk}/change/")
    assert listing.status_code == 200
    assert filtered.status_code == 200
    assert "Roadmap" in filtered.content.decode()
    assert detail.status_code == 200
    # The detail page is view-only: no save button.
    assert 'name="_save"' not in detail.content.decode()


def test_operations_read_only(admin_client, edited_document):
    operation = Operation.objects.get()
    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.get(username="root")
    operation_admin = site._registry[Operation]

    assert not operation_admin.has_add_permission(request)
    assert not operation_admin.has_change_permission(request, operation)
    assert not operation_admin.has_delete_permission(request, operation)
    assert admin_client.get("/admin/collab/operation/add/").status_code == 403
    delete_path = f"/admin/collab/operation/{operation.pk}/delete/"
    assert admin_client.post(delete_path, {"post": "yes"}).status_code == 403
    change_path = f"/admin/collab/operation/{operation.pk}/change/"
    admin_client.post(change_path, {"client_id": "changed"})
    operation.refresh_from_db()
    assert operation.client_id == "c1"


def test_document_cannot_be_added(admin_client, db):
    assert admin_client.get("/admin/collab/document/add/").status_code == 403


def test_document_delete_removes_operations(admin_client, edited_document):
    path = f"/admin/collab/document/{edited_document.pk}/delete/"
    confirm = admin_client.get(path)
    assert confirm.status_code == 200
    response = admin_client.post(path, {"post": "yes"})
    assert response.status_code == 302
    assert not Document.objects.exists()
    assert not Operation.objects.exists()


def _inline_form_data(document, roles: dict[int, str]) -> dict[str, str]:
    """Return the POST data of the document's change form with the given roles."""
    memberships = list(document.memberships.order_by("pk"))
    data = {
        "title": document.title,
        "memberships-TOTAL_FORMS": str(len(memberships)),
        "memberships-INITIAL_FORMS": str(len(memberships)),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    for index, membership in enumerate(memberships):
        prefix = f"memberships-{index}"
        data[f"{prefix}-id"] = str(membership.pk)
        data[f"{prefix}-document"] = str(document.pk)
        data[f"{prefix}-user"] = str(membership.user_id)
        data[f"{prefix}-role"] = roles.get(membership.user_id, membership.role)
    return data


def test_inline_requires_one_owner(admin_client, edited_document):
    bob = get_user_model().objects.get(username="bob")
    data = _inline_form_data(edited_document, {bob.pk: Role.OWNER})
    path = f"/admin/collab/document/{edited_document.pk}/change/"

    response = admin_client.post(path, data)

    assert response.status_code == 200
    assert "exactly one owner membership, but 2 are set" in response.content.decode()
    assert edited_document.memberships.filter(role=Role.OWNER).count() == 1


def test_inline_transfers_ownership(admin_client, edited_document):
    ada = edited_document.owner
    bob = get_user_model().objects.get(username="bob")
    data = _inline_form_data(edited_document, {bob.pk: Role.OWNER, ada.pk: Role.EDITOR})
    path = f"/admin/collab/document/{edited_document.pk}/change/"

    response = admin_client.post(path, data)

    assert response.status_code == 302
    edited_document.refresh_from_db()
    assert edited_document.owner == bob


def test_owner_membership_cannot_be_deleted(admin_client, edited_document):
    owner_membership = edited_document.memberships.get(role=Role.OWNER)
    path = f"/admin/collab/documentmembership/{owner_membership.pk}/delete/"
    response = admin_client.post(path, {"post": "yes"}, follow=True)
    assert "owner membership cannot be deleted" in response.content.decode()
    assert DocumentMembership.objects.filter(pk=owner_membership.pk).exists()


def test_membership_cannot_become_second_owner(admin_client, edited_document):
    membership = edited_document.memberships.get(role=Role.EDITOR)
    path = f"/admin/collab/documentmembership/{membership.pk}/change/"
    response = admin_client.post(path, {"role": "owner"})
    assert response.status_code == 200
    assert "already has an owner" in response.content.decode()
    membership.refresh_from_db()
    assert membership.role == Role.EDITOR


def test_rename_keeps_text_and_version(admin_client, edited_document):
    data = _inline_form_data(edited_document, {})
    data["title"] = "Roadmap 2027"
    path = f"/admin/collab/document/{edited_document.pk}/change/"

    response = admin_client.post(path, data)

    assert response.status_code == 302, response.content.decode()
    document = Document.objects.get(pk=edited_document.pk)
    assert (document.title, document.version) == ("Roadmap 2027", 1)
    assert stored_text(document.pk) == "hi"
    page = admin_client.get(path).content.decode()
    assert "(at version 1)" in page
