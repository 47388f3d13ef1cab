"""Kill a training at a logged step and resume it from its checkpoint: what the resume tests share."""

import pytest


class Killed(Exception):
    """Stands for SIGKILL: raised from the log callback, so the run stops between steps."""


def train_killed_and_resumed(train, fresh, checkpoint, kill_at: str = "step 25/40"):
    """(uninterrupted model, its records, resumed model, resumed records, resumed log lines).

    ``train(model, log=..., checkpoint_path=...)`` trains ``model``; ``fresh()`` builds the same untrained
    model every time. The interrupted run is killed when it logs ``kill_at`` and must leave ``checkpoint``.
    """
    reference = fresh()
    expected = train(reference, log=lambda _: None)

    def die(message):
        if kill_at in message:
            raise Killed

    with pytest.raises(Killed):
        train(fresh(), log=die, checkpoint_path=checkpoint)
    assert checkpoint.exists()

    messages = []
    resumed = fresh()
    records = train(resumed, log=messages.append, checkpoint_path=checkpoint)
    return reference, expected, resumed, records, messages
