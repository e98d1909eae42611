from django.contrib.auth import views as auth_views
from django.urls import path

from collab.web import views

urlpatterns = [
    path("", views.document_list, name="document-list"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", views.signup, name="signup"),
    path(
        "documents/<uuid:document_id>/",
        views.document_editor,
        name="document-editor",
    ),
    path(
        "documents/<uuid:document_id>/share/",
        views.document_share,
        name="document-share",
    ),
    path(
        "documents/<uuid:document_id>/members/<str:username>/remove/",
        views.member_remove,
        name="member-remove",
    ),
]
