"""Request and response bodies of the HTTP API."""

from django.conf import settings
from rest_framework import serializers

from collab import ot, store
from collab.api.membership import username_max_length
from collab.models import Role

TITLE_MAX_LENGTH = 200
OPERATIONS_DEFAULT_LIMIT = 1000
OPERATIONS_MAX_LIMIT = 5000


class DocumentSummarySerializer(serializers.Serializer):
    """A document in the caller's list, serialized from a membership or an Access."""

    id = serializers.UUIDField(source="document.id")
    title = serializers.CharField(source="document.title")
    version = serializers.IntegerField(source="document.version")
    role = serializers.CharField()
    updated_at = serializers.DateTimeField(source="document.updated_at")


class DocumentDetailSerializer(DocumentSummarySerializer):
    """A document with its content, serialized from an Access."""

    content = serializers.SerializerMethodField()
    owner = serializers.CharField(source="document.owner.get_username")
    created_at = serializers.DateTimeField(source="document.created_at")

    def get_content(self, access) -> str:
        """Return the text at the document's version, from the row read with it."""
        document = access.document
        return store.text_at(
            document.pk,
            document.version,
            snapshot=(document.snapshot_version, document.snapshot),
        )


class DocumentCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=TITLE_MAX_LENGTH)
    content = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, default=""
    )

    def validate_content(self, content: str) -> str:
        # The initial content is the document's first insert, so the limit on one
        # edit's insert applies to it too.
        max_length = settings.MATERI["MAX_INSERT_LENGTH"]
        try:
            ot.validate(
                [{"insert": content}] if content else [], max_insert_length=max_length
            )
        except ot.InvalidOperation as exc:
            raise serializers.ValidationError(f"content is invalid: {exc}") from None
        return content


class DocumentRenameSerializer(serializers.Serializer):
    """The body of a PATCH: only the title can change over HTTP."""

    title = serializers.CharField(max_length=TITLE_MAX_LENGTH)

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - {"title"})
        if "content" in unknown:
            raise serializers.ValidationError(
                {
                    "content": "Content cannot be changed over HTTP. Send edits as "
                    "operations over the document's WebSocket."
                }
            )
        if unknown:
            raise serializers.ValidationError(
                {
                    name: f"Unknown field {name!r}. Only title can change."
                    for name in unknown
                }
            )
        return attrs


class OperationsQuerySerializer(serializers.Serializer):
    """The query parameters of the operations list."""

    since = serializers.IntegerField(min_value=0)
    limit = serializers.IntegerField(
        min_value=1, max_value=OPERATIONS_MAX_LIMIT, default=OPERATIONS_DEFAULT_LIMIT
    )


class MemberSerializer(serializers.Serializer):
    """A member of a document, serialized from a DocumentMembership."""

    username = serializers.CharField(source="user.get_username")
    role = serializers.CharField()


class MemberWriteSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=username_max_length())
    role = serializers.ChoiceField(
        choices=Role.choices,
        error_messages={
            "invalid_choice": '"{input}" is not a valid role. Use one of '
            + ", ".join(Role.values)
            + "."
        },
    )
