"""Operational transform for plain text, counted in Unicode code points.

The implementation lives in the Python SDK package (`materi_realtime.ot`), so the
server and the SDK share one copy and cannot drift apart. This module is the
server's name for it.
"""

from materi_realtime.ot import *  # noqa: F403
from materi_realtime.ot import InvalidOperation  # noqa: F401
