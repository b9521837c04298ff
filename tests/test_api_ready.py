"""GET /readyz: a node worth sending traffic to (GET /healthz stays the liveness check)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from devnet.cluster import Cluster, free_base_port
from tests.test_api_hardening import TIMEOUT, running

pytestmark = pytest.mark.asyncio


async def get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(url) as resp:
        return resp.status, await resp.json()


async def test_a_committing_single_validator_is_ready_and_a_stalled_one_is_not(tmp_path):
    cluster = Cluster.create(tmp_path / "net", validators=1, base_port=free_base_port(2))
    async with running(cluster) as r:
        deadline = time.monotonic() + 20
        while (found := await get(r.url + "/readyz"))[0] != 200:
            assert time.monotonic() < deadline, f"never ready: {found}"
            await asyncio.sleep(0.1)
        assert found == (200, {"ok": True, "reason": "ok"})
        # no commit within the stall bound (a bound already passed, so a block committing
        # meanwhile cannot make it ready again): alive, but not ready
        r.node.stall_after_s = lambda: -1.0
        status, body = await get(r.url + "/readyz")
        assert status == 503 and body["ok"] is False
        assert body["reason"].startswith("no block committed for ")
        assert (await get(r.url + "/healthz"))[0] == 200


async def test_a_validator_without_peers_is_alive_but_not_ready(tmp_path):
    cluster = Cluster.create(tmp_path / "net", validators=2, base_port=free_base_port(4))
    async with running(cluster) as r:  # only the first of the two validators runs
        status, body = await get(r.url + "/readyz")
        assert (status, body) == (503, {"ok": False, "reason": "no peer connected"})
        assert await get(r.url + "/healthz") == (200, {"ok": True, "reason": "ok"})
