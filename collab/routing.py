from django.urls import re_path

from collab.consumers import DocumentConsumer

websocket_urlpatterns = [
    re_path(r"^v1/ws/documents/(?P<document_id>[^/]+)/?$", DocumentConsumer.as_asgi()),
]
