"""The process umask: private for what the program makes, the user's for what they asked.

Both entry points make everything private (umask 077) before anything else;
files a user asks for outside the store (``ignite cp VM:... DEST``) get the
modes the user's own umask would give, as ``cp`` does.
"""

import os  # (no __future__ import: the lean fast paths load this module)

_user: list[int] = []  # the umask the program was started with (set once, at entry)


def make_private() -> None:
    """Set umask 077 and remember the caller's."""
    mask = os.umask(0o077)
    if not _user:
        _user.append(mask)


def user_umask() -> int:
    """The caller's umask (the current one when :func:`make_private` never ran)."""
    if _user:
        return _user[0]
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
