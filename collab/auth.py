"""JWT authentication of WebSocket connections."""

import logging
from datetime import UTC, datetime

from django.contrib.auth.models import AbstractBaseUser
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, TokenError
from rest_framework_simplejwt.tokens import AccessToken

from collab import errors

security_logger = logging.getLogger("materi.security")


def authenticate(raw_token: str | None) -> tuple[AbstractBaseUser, datetime]:
    """Return the token's active user and the token's expiry time.

    Raise errors.AuthenticationFailed (close code 4001) for a missing, malformed,
    expired or revoked token and for an inactive or deleted user.
    """
    if not raw_token:
        raise errors.AuthenticationFailed("query parameter 'token' is required")
    try:
        token = AccessToken(raw_token)
        user = JWTAuthentication().get_user(token)
    except (TokenError, AuthenticationFailed) as exc:
        security_logger.info("rejected WebSocket token: %s", exc)
        raise errors.AuthenticationFailed(
            f"token is invalid or expired: {exc}"
        ) from None
    expires_at = datetime.fromtimestamp(token["exp"], tz=UTC)
    return user, expires_at
