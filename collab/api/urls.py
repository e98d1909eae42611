from django.urls import path
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from collab.api import views

urlpatterns = [
    path("auth/token/", TokenObtainPairView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path(
        "auth/session-token/",
        views.SessionTokenView.as_view(),
        name="api-session-token",
    ),
    path("documents/", views.DocumentListView.as_view(), name="api-document-list"),
    path(
        "documents/<uuid:document_id>/",
        views.DocumentDetailView.as_view(),
        name="api-document-detail",
    ),
    path(
        "documents/<uuid:document_id>/operations/",
        views.OperationListView.as_view(),
        name="api-operation-list",
    ),
    path(
        "documents/<uuid:document_id>/members/",
        views.MemberListView.as_view(),
        name="api-member-list",
    ),
    path(
        "documents/<uuid:document_id>/members/<str:username>/",
        views.MemberDetailView.as_view(),
        name="api-member-detail",
    ),
]
