"""Errors a job reports in one line: the simulated physics at run time (a non-finite energy, an escaping
walker, a failed MBAR), and input files that do not fit the system (an MD trajectory of other atoms).

They are not bugs of the code but of the system (an energy unbounded below, or undefined where the
walkers go) or of a user's file, so a user needs one line naming the system, the temperature or the file
and what happened, not a traceback: the workflow scripts print a :class:`PhysicsError` or an
:class:`InputFileError` as that one line (``workflow/scripts/_bootstrap.py``).
"""

from __future__ import annotations


class PhysicsError(RuntimeError):
    """The simulation or its analysis met physics it cannot go on with; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InputFileError(ValueError):
    """A file the config names cannot be used (unreadable, other atoms); the message is one line that names
    the config key and the file. Raised where a check needs the file's contents, inside a job; whatever the
    config alone can show (a missing file) is a ``ConfigError`` before any job starts."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
