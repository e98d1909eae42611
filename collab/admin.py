"""Admin of documents, memberships and the read-only operation log.

A document's content and version change only through committed operations, so the
admin shows them read-only, because editing them here would make the stored
operations disagree with the content. Each document keeps exactly one owner
membership, and `Document.owner` follows it.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html

from collab import store
from collab.models import Document, DocumentMembership, Operation, Role

ONE_OWNER_HINT = (
    "Change ownership on the document's page by setting another member's role to "
    "owner and the old owner's to another role"
)


class MembershipInlineFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        owners = 0
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE"):
                continue
            if data.get("role") == Role.OWNER:
                owners += 1
        if owners != 1:
            raise ValidationError(
                f"A document must have exactly one owner membership, but {owners} "
                "are set."
            )


class DocumentMembershipInline(admin.TabularInline):
    model = DocumentMembership
    formset = MembershipInlineFormSet
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    """Documents are created through the API and the pages, which also add the owner
    membership, so the admin cannot add them."""

    list_display = ["title", "owner", "version", "updated_at"]
    list_select_related = ["owner"]
    search_fields = ["title"]
    fields = [
        "title",
        "owner",
        "version",
        "operation_log",
        "content",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [
        "owner",
        "version",
        "operation_log",
        "content",
        "created_at",
        "updated_at",
    ]
    inlines = [DocumentMembershipInline]

    def get_queryset(self, request: HttpRequest):
        # The snapshot can be megabytes, and the page shows the current text instead.
        return super().get_queryset(request).defer("snapshot")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Content")
    def content(self, document: Document) -> str:
        snapshot = store.load_snapshot(document.pk)
        return f"{snapshot.content}\n\n(at version {snapshot.version})"

    def save_model(self, request, obj, form, change) -> None:
        # Only the title is edited here. Saving every field would write back the
        # version read when the page was opened, over commits made since.
        obj.save(update_fields=["title", "updated_at"])

    @admin.display(description="Operations")
    def operation_log(self, document: Document) -> str:
        url = reverse("admin:collab_operation_changelist")
        return format_html(
            '<a href="{}?document={}">{} stored operations</a>',
            url,
            document.pk,
            document.operations.count(),
        )

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        document = form.instance
        owner_id = (
            document.memberships.filter(role=Role.OWNER)
            .values_list("user_id", flat=True)
            .first()
        )
        if owner_id is not None and owner_id != document.owner_id:
            document.owner_id = owner_id
            document.save(update_fields=["owner", "updated_at"])

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        store.delete_document(obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for document_id in queryset.values_list("pk", flat=True):
            store.delete_document(document_id)

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(
            objs, request
        )
        # Operations cannot be deleted on their own, but they go with their document.
        perms_needed.discard(Operation._meta.verbose_name)
        return deleted, model_count, perms_needed, protected


class MembershipAdminForm(forms.ModelForm):
    class Meta:
        model = DocumentMembership
        fields = ["document", "user", "role"]

    def clean_role(self) -> str:
        role = self.cleaned_data["role"]
        was_owner = self.instance.pk is not None and self.instance.role == Role.OWNER
        if was_owner and role != Role.OWNER:
            raise ValidationError(
                f"This is the document's owner membership. {ONE_OWNER_HINT}."
            )
        if role == Role.OWNER and not was_owner:
            raise ValidationError(
                f"The document already has an owner. {ONE_OWNER_HINT}."
            )
        return role


@admin.register(DocumentMembership)
class DocumentMembershipAdmin(admin.ModelAdmin):
    """Memberships. The owner membership can neither be created nor removed here."""

    form = MembershipAdminForm
    list_display = ["document", "user", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["document", "user"]
    search_fields = ["document__title", "user__username"]
    autocomplete_fields = ["document", "user"]

    def get_readonly_fields(self, request, obj=None):
        # Moving a membership to another document or user would bypass the owner
        # rule, so the admin deletes it and adds a new one instead.
        return ["document", "user", "created_at"] if obj else ["created_at"]

    def get_actions(self, request):
        # The bulk delete could remove owner memberships, but delete_view checks them.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context=None
    ) -> HttpResponse:
        membership = self.get_object(request, unquote(object_id))
        if membership is not None and membership.role == Role.OWNER:
            self.message_user(
                request,
                f"The owner membership cannot be deleted. {ONE_OWNER_HINT}.",
                messages.ERROR,
            )
            return redirect("admin:collab_documentmembership_change", membership.pk)
        return super().delete_view(request, object_id, extra_context)


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    """The stored operations, read-only: they are the document's history."""

    list_display = ["document", "version", "author", "client_id", "created_at"]
    list_select_related = ["document", "author"]
    ordering = ["document", "version"]
    search_fields = ["document__title"]
    fields = [
        "document",
        "version",
        "components",
        "author",
        "client_id",
        "message_id",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
