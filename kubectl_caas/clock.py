"""Token lifetimes judged on this machine's clock.

kubectl compares a credential's expirationTimestamp with the local clock, and the API server
compares the token's own expiry with the server's. When the two clocks disagree by an hour, a
token stamped with the server's expiry is either served after it died (local clock behind) or
renewed on every kubectl command (local clock ahead). So the cache keeps expiries in local time:
the moment we sent the request plus the lifetime the server gave the token (its expiry minus its
own "now"). A large difference between the clocks is reported once, since it breaks other tools.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Tuple

if TYPE_CHECKING:
    from kubectl_caas.plugins import Plugin
    from kubectl_caas.runtime import Runtime

# A bearer token living longer than this is not a token a sane server issues; such an expiry (or an
# infinite one, or 1e300) would also overflow date formatting on every later kubectl command.
MAX_LIFETIME = 400 * 86400.0
# How far a token's not-before or issued-at may lie in the server's future (its clock may tick a
# little apart from the answering front end).
LEEWAY = 60.0
# Clock differences smaller than this are ordinary drift and not worth a word.
NOTICEABLE_OFFSET = 300.0


def finite_number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def local_window(sent: float, server_now: float, server_expiry: float) -> Tuple[float, float]:
    """(issued, expires) in local time for a token the server says expires at `server_expiry`
    when its clock reads `server_now`; ValueError for a lifetime that is absurd."""
    lifetime = server_expiry - server_now
    if not math.isfinite(lifetime) or lifetime > MAX_LIFETIME:
        raise ValueError(f"a lifetime of {lifetime:g} s")
    return sent, sent + lifetime


def note_offset(plugin: Plugin, entry: Mapping[str, Any], previous: Optional[Mapping[str, Any]],
                runtime: Runtime) -> None:
    """Say once that this machine's clock is off from the server's, as measured for `entry` (its
    `clock_offset`: server minus local, seconds); not again while the entry it replaces measured
    about the same difference, nor twice in one run (--all-projects stores several entries)."""
    offset = finite_number(entry.get("clock_offset"))
    if offset is None or abs(offset) < NOTICEABLE_OFFSET:
        return
    earlier = finite_number((previous or {}).get("clock_offset"))
    if earlier is not None and abs(earlier - offset) < NOTICEABLE_OFFSET:
        return
    direction = "behind" if offset > 0 else "ahead of"
    runtime.notice_once(f"{plugin.command}: this machine's clock is {abs(offset) / 60:.0f} min {direction} "
                        f"{plugin.service}'s; token lifetimes are counted from your clock, but fix it (NTP): "
                        "other tools will fail")
