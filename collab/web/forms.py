"""Forms of the web pages."""

from django import forms

from collab.api.membership import username_max_length
from collab.api.serializers import TITLE_MAX_LENGTH
from collab.models import Role


class DocumentCreateForm(forms.Form):
    title = forms.CharField(
        max_length=TITLE_MAX_LENGTH,
        widget=forms.TextInput(attrs={"placeholder": "Meeting notes"}),
    )


class ShareForm(forms.Form):
    """Add a member or change a member's role. Granting owner transfers ownership."""

    username = forms.CharField(max_length=username_max_length())
    role = forms.ChoiceField(
        choices=[
            (Role.EDITOR.value, "Editor: can edit"),
            (Role.COMMENTER.value, "Commenter: can read and comment"),
            (Role.VIEWER.value, "Viewer: can read"),
            (Role.OWNER.value, "Owner: transfer ownership, you become an editor"),
        ],
        initial=Role.EDITOR.value,
    )
