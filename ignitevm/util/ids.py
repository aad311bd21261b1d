"""Object IDs and generated names."""

from __future__ import annotations

import os
import random
import re

UID_RE = re.compile(r"^[a-z0-9]{16}$")


def new_uid() -> str:
    """16 lowercase hex characters, as Ignite made them."""
    return os.urandom(8).hex()


_ADJECTIVES = (
    "autumn hidden bitter misty silent empty dry dark summer icy delicate quiet white cool "
    "spring winter patient twilight dawn crimson wispy weathered blue billowing broken cold "
    "damp falling frosty green long late lingering bold little morning muddy old red rough "
    "still small sparkling shy wandering withered wild black young holy solitary fragrant "
    "aged snowy proud floral restless divine polished ancient purple lively nameless"
).split()
_NOUNS = (
    "waterfall river breeze moon rain wind sea morning snow lake sunset pine shadow leaf "
    "dawn glitter forest hill cloud meadow sun glade bird brook butterfly bush dew dust field "
    "fire flower firefly feather grass haze mountain night pond darkness snowflake silence "
    "sound sky shape surf thunder violet water wildflower wave resonance wood dream cherry "
    "tree fog frost voice paper frog smoke star"
).split()


def random_name(taken: set[str] | frozenset[str] = frozenset()) -> str:
    """An ``adjective-noun`` name not in ``taken``."""
    rng = random.SystemRandom()
    for _ in range(100):
        name = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        if name not in taken:
            return name
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{os.urandom(2).hex()}"
