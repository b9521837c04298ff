"""``consensus.events.execute``: the one dispatch of actions every driver shares."""

from __future__ import annotations

from typing import Any

import pytest

from consensus.events import (
    Rejected,
    RejectKind,
    RequestValue,
    ScheduleTimeout,
    Step,
    execute,
)


class Recorder:
    """An ``ActionHandler`` that records which method was called with which action."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda a: self.calls.append((name, a))


def test_actions_run_in_list_order_and_rejection_is_reported() -> None:
    t = ScheduleTimeout(1, 0, Step.PROPOSE, 100)
    r = RequestValue(1, 0)
    h = Recorder()
    assert execute([t, r], h) is False  # type: ignore[arg-type]
    assert h.calls == [("schedule_timeout", t), ("request_value", r)]
    no = Rejected(RejectKind.DUPLICATE, "seen")
    assert execute([no], h) is True  # type: ignore[arg-type]
    assert h.calls[-1] == ("rejected", no)


def test_an_unknown_action_raises_instead_of_being_skipped() -> None:
    h = Recorder()
    with pytest.raises(TypeError, match="not a consensus action"):
        execute([RequestValue(1, 0), object()], h)  # type: ignore[list-item, arg-type]
    assert [name for name, _ in h.calls] == ["request_value"]
