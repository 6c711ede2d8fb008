"""Paths a user wrote as text where no shell expanded them: an option's ``--condition=~/a.png:0`` value, a
``--batch`` line, a ``--prompt-schedule`` path, a generation record read by ``--from``, a quoted argument.

A shell expands ``~`` only at the start of a word of its own, so ``--image=~/a.png`` and every file's line reach
ltx with the ``~`` in them; :func:`user_path` expands it as the shell would have, in every place that takes a path
from text, so that the same spelling works wherever a path is given.
"""

from __future__ import annotations

import os
from typing import Any


def user_path(path: str | os.PathLike[str]) -> str:
    """``path`` with a leading ``~`` (the home folder, ``$HOME``) or ``~user`` (that user's) expanded, as a shell
    does; a ``~`` anywhere else (``a/~/b``, ``x~``) and a user this system does not know are kept as written, so a
    path that does not exist is reported as the path given, never as an error of its own."""
    return os.path.expanduser(os.fspath(path))


def user_media(media: Any) -> Any:
    """A condition's, control's or input video's ``media``: a path given as text (a ``str``) through
    :func:`user_path`; anything else (a ``Path`` a caller built, a tensor, an image, a decoded file) as it is."""
    return user_path(media) if isinstance(media, str) else media


__all__ = ["user_media", "user_path"]
