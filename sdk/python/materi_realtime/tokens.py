"""Reading the expiry time of a JWT access token."""

from __future__ import annotations

import base64
import binascii
import json
import logging

logger = logging.getLogger(__name__)


def read_token_expiry(token: str) -> float | None:
    """Return the ``exp`` claim of a JWT as Unix time in seconds, or None.

    The signature is not verified: the client only uses the time to refresh the
    token before the server rejects it. Returns None when the token is not a JWT or
    has no numeric ``exp`` claim.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    padded = payload + "=" * (-len(payload) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError) as error:
        logger.debug("cannot decode the access token payload: %s", error)
        return None
    if not isinstance(claims, dict):
        return None
    expiry = claims.get("exp")
    if isinstance(expiry, bool) or not isinstance(expiry, (int, float)):
        return None
    return float(expiry)
