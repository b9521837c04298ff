"""The rule parameters' history: which parameters apply to which period.

Genesis params are version 0 and apply from period 1. A ``set_params`` change that
passes writes a new version (``paramv/<v>``, the whole merged params object) applying
from its ``from_period``; the index ``paramh`` lists ``[from_period, v]`` in ascending
``from_period``. Period n uses the last version whose ``from_period`` <= n; a claim keeps
the version in effect when it was filed (its ``params_v``, absent for version 0).
docs/governance.md, "Rule parameters".
"""

from __future__ import annotations

from typing import Any

from contracts import records
from contracts.params import Params
from contracts.records import State


class ParamHistory:
    """Reads the history from the state; parsed versions are cached by their record
    bytes, so a rolled-back write (a rejected transaction, a failed block) can never
    leave a stale entry behind."""

    def __init__(self, genesis: Params) -> None:
        self.genesis = genesis
        self._cache: dict[bytes, Params] = {}

    @staticmethod
    def index(state: State) -> dict[str, Any]:
        rec = records.load(state, records.PARAMH_KEY)
        return rec if rec is not None else {"next_v": 1, "versions": [[1, 0]]}

    def version_at(self, state: State, n: int) -> int:
        v = 0
        for start, ver in self.index(state)["versions"]:
            if start > n:
                break
            v = ver
        return v

    def params_v(self, state: State, v: int) -> Params:
        if v == 0:
            return self.genesis
        data = state.get(records.params_version_key(v))
        if data is None:
            raise RuntimeError(f"parameter version {v} is missing from the state")
        p = self._cache.get(data)
        if p is None:
            p = Params.from_dict(records.decode_record(data)["params"])
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[data] = p
        return p

    def params_at(self, state: State, n: int) -> Params:
        """The parameters of period ``n``."""
        return self.params_v(state, self.version_at(state, n))
