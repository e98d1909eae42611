"""ASGI entry point: HTTP goes to Django, WebSockets to the Channels router.

There is no origin check on sockets: they authenticate with a JWT in the URL, not
with a cookie, so another site's page cannot borrow a visitor's credentials.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "materi.settings")
http_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from collab.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
