"""The stored text of a document, rebuilt from the database alone."""

from asgiref.sync import sync_to_async

from collab import ot
from collab.models import Document, Operation


def stored_text(document_id) -> str:
    """Return the stored snapshot with every stored operation after it applied.

    No process cache is used, so this is what a fresh server process would read. The
    operations must run without a gap from the snapshot's version to the document's.
    """
    document = Document.objects.get(pk=document_id)
    text = document.snapshot
    # Operations committed after the document row was read are left out.
    rows = (
        Operation.objects.filter(
            document_id=document_id,
            version__gte=document.snapshot_version,
            version__lt=document.version,
        )
        .order_by("version")
        .values_list("version", "components")
    )
    expected = document.snapshot_version
    for version, components in rows:
        assert version == expected, (
            f"stored operations skip from {expected} to {version}"
        )
        text = ot.apply(text, components)
        expected += 1
    assert expected == document.version, (
        f"stored operations end at {expected}, the document is at {document.version}"
    )
    return text


astored_text = sync_to_async(stored_text)
