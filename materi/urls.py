from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/", include("collab.api.urls")),
    path("", include("collab.web.urls")),
]
