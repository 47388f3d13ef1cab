"""Errors of the simulated physics at run time: a non-finite energy, an escaping walker, a failed MBAR.

They are not bugs of the code but of the system (an energy unbounded below, or undefined where the
walkers go), so a user needs one line naming the system, the temperature and what happened, not a
traceback: the workflow scripts print a :class:`PhysicsError` as that one line (``workflow/scripts/_bootstrap.py``).
"""

from __future__ import annotations


class PhysicsError(RuntimeError):
    """The simulation or its analysis met physics it cannot go on with; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
