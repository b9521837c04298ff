"""Input nested deeper than a parser can recurse gets a clear error, never a 500 or a
traceback (issue 17: ``[`` repeated 1,000+ times sent to ``POST /txs`` answered 500).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.test_api_hardening import net, running  # noqa: F401  (net is a fixture)

ROOT = Path(__file__).resolve().parents[1]
# far past CPython's recursion limit and the JSON scanner's own
DEEP = "[" * 200_000


@pytest.mark.parametrize("path", ["/txs", "/txs/batch"])
async def test_deeply_nested_json_body_is_400_bad_json(net, path: str) -> None:  # noqa: F811
    async with running(net) as r, aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30)) as s:
        pooled = r.node.mempool.size()
        async with s.post(r.url + path, data=DEEP.encode(),
                          headers={"Content-Type": "application/json"}) as resp:
            doc = await resp.json()
            assert resp.status == 400, doc
            assert doc["error"] == "bad_json" and "nested too deeply" in doc["message"]
        # the node still answers, and nothing entered the pool
        async with s.get(r.url + "/status") as resp:
            assert resp.status == 200
        assert r.node.mempool.size() == pooled


def test_deeply_nested_cli_json_is_one_line(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    genesis.write_text(DEEP)
    proc = subprocess.run([sys.executable, "-m", "mutual", "audit", "--node",
                           "http://127.0.0.1:9", "--genesis", str(genesis)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "nested too deeply" in lines[0], lines
