"""The ``mutual`` CLI: key files, genesis, init, config errors — one readable line, exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys

import pytest

from chain.genesis import Genesis
from mutual.cli import main
from node import config as cfg


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_new_writes_0600_and_refuses_overwrite(tmp_path, capsys):
    path = tmp_path / "k.json"
    code, out, _ = run(capsys, "keys", "new", "--out", str(path))
    assert code == 0
    pub = json.loads(out)["pub_key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, out, _ = run(capsys, "keys", "show", str(path))
    assert code == 0 and json.loads(out)["pub_key"] == pub
    code, _, err = run(capsys, "keys", "new", "--out", str(path))
    assert code == 2 and err.startswith("mutual: error:") and err.count("\n") == 1
    os.chmod(path, 0o644)
    code, _, err = run(capsys, "keys", "show", str(path))
    assert code == 2 and "open to its group or others (mode 0644" in err
    os.chmod(path, 0o640)
    code, _, err = run(capsys, "keys", "show", str(path))
    assert code == 2 and "(mode 0640" in err


def test_genesis_new_and_init(tmp_path, capsys):
    keys = {}
    for name in ("v0", "v1", "reg", "ass", "op"):
        p = tmp_path / f"{name}.json"
        assert run(capsys, "keys", "new", "--out", str(p))[0] == 0
        keys[name] = p
    gpath = tmp_path / "genesis.json"
    code, out, err = run(
        capsys, "genesis", "new", "--out", str(gpath), "--chain-id", "mutual-test",
        "--validator", f"alice={keys['v0']},power=5", "--validator", f"bob={keys['v1']}",
        "--registrar", str(keys["reg"]), "--assessor", str(keys["ass"]),
        "--operator", str(keys["op"]), "--profile", "devnet",
        "--genesis-time", "2026-01-01T00:00:00+08:00")
    assert code == 0, err
    g = Genesis.load(gpath)
    assert g.chain_id == "mutual-test" and [v.power for v in g.validators.validators] == [5, 10]
    assert json.loads(out)["hash"] == g.hash.hex()
    home = tmp_path / "home"
    code, out, err = run(capsys, "init", "--home", str(home), "--genesis", str(gpath),
                         "--peer", "127.0.0.1:26656")
    assert code == 0, err
    conf = cfg.load(home)
    assert conf.p2p.persistent_peers == ["127.0.0.1:26656"]
    assert (home / "genesis.json").exists()
    for f in ("node_key.json", "validator_key.json"):
        assert stat.S_IMODE((home / f).stat().st_mode) == 0o600
    text = (home / "config.toml").read_text()
    assert text.count("\n# ") >= 15  # every option commented
    code, _, err = run(capsys, "init", "--home", str(home))
    assert code == 2 and "already exists" in err


def test_init_uses_the_keys_the_genesis_was_made_from(tmp_path, capsys):
    """README's steps: keys first, genesis from them, then init with those keys."""
    vkey, nkey = tmp_path / "validator_key.json", tmp_path / "node_key.json"
    for p in (vkey, nkey):
        assert run(capsys, "keys", "new", "--out", str(p))[0] == 0
    home = tmp_path / "home"
    code, out, err = run(capsys, "init", "--home", str(home), "--validator-key", str(vkey),
                         "--node-key", str(nkey))
    assert code == 0, err
    shown = json.loads(out)
    for src, name, field in ((vkey, "validator_key.json", "validator_key"),
                             (nkey, "node_key.json", "node_key")):
        assert (home / name).read_text() == src.read_text()
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
        assert shown[field] == json.loads(src.read_text())["pub_key"]
    # an existing different key in the home is never overwritten, even with --force
    other = tmp_path / "other.json"
    assert run(capsys, "keys", "new", "--out", str(other))[0] == 0
    before = (home / "validator_key.json").read_text()
    code, _, err = run(capsys, "init", "--home", str(home), "--force",
                       "--validator-key", str(other))
    assert code == 2 and "holds another key" in err and err.count("\n") == 1
    assert (home / "validator_key.json").read_text() == before


@pytest.mark.parametrize("extra, fragment", [
    (["--genesis", "{tmp}/missing.json"], "missing.json"),
    (["--validator-key", "{tmp}/missing.json"], "not found"),
    (["--no-validator", "--validator-key", "{tmp}/k.json"], "contradict"),
])
def test_init_refuses_bad_input_before_writing_anything(tmp_path, capsys, extra, fragment):
    assert run(capsys, "keys", "new", "--out", str(tmp_path / "k.json"))[0] == 0
    home = tmp_path / "home"
    argv = ["init", "--home", str(home)] + [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code, _, err = run(capsys, *argv)
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert not home.exists()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["genesis", "new", "--out", "{tmp}/g.json", "--chain-id", "bad id", "--validator",
          "a=" + "11" * 32, "--operator", "22" * 32], "chain id"),
        (["genesis", "new", "--out", "{tmp}/g.json", "--chain-id", "c", "--validator",
          "a=nothex", "--operator", "22" * 32], "neither 64 hex"),
        (["genesis", "new", "--out", "{tmp}/g.json", "--chain-id", "c", "--operator",
          "22" * 32], "--validator"),
        (["genesis", "new", "--out", "{tmp}/g.json", "--chain-id", "c", "--validator",
          "a=" + "11" * 32, "--operator", "22" * 32, "--profile", "nope"], "profile"),
        (["start", "--home", "{tmp}/missing"], "not found"),
        (["recover-wal", "--home", "{tmp}/missing"], "not found"),
        (["status", "--node", "http://127.0.0.1:9"], "cannot reach"),
        (["genesis", "new", "--out", "{tmp}/g.json", "--chain-id", "c", "--validator",
          "a=" + "11" * 32 + ",power=abc", "--operator", "22" * 32], "power must be a positive"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code in (1, 2)
    assert err.startswith("mutual: error:") and fragment in err, err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ("[api]\nlisten = 5\n", "expected str"),
        ("[api]\nlisten = \"nohost\"\n", "host:port"),
        ("[nope]\n", "unknown section"),
        ("[p2p]\nmax_peers = -1\n", "positive"),
        ("[p2p]\nallowed_keys = [\"zz\"]\n", "64-hex"),
        ("[log]\nlevel = \"loud\"\n", "level"),
        ("[storage]\nmax_open_files = 20\n", "at least 74"),
        ("[storage]\ncache_mb = 0\n", "positive"),
        ("[storage]\ncompression = \"zstd\"\n", "none|snappy"),
        ("[storage]\nstate_history = 1\n", "at least 2"),
        ("[storage]\nstate_history = -3\n", "negative"),
        ("[storage]\nstate_cache_groups = 0\n", "positive"),
        ("[api\n", "invalid TOML"),
    ],
)
def test_bad_config_is_one_line(tmp_path, capsys, toml, fragment):
    (tmp_path / "config.toml").write_text(toml)
    code, _, err = run(capsys, "start", "--home", str(tmp_path))
    assert code == 2 and fragment in err and err.count("\n") == 1, err


def test_tx_body_errors_before_any_network(tmp_path, capsys):
    key = tmp_path / "k.json"
    run(capsys, "keys", "new", "--out", str(key))
    code, _, err = run(capsys, "tx", "file_claim", "disease=x", "--key", str(key),
                       "--node", "http://127.0.0.1:9")
    assert code == 2 and "missing" in err
    code, _, err = run(capsys, "tx", "no_such_type", "--key", str(key),
                       "--node", "http://127.0.0.1:9")
    assert code == 2 and "unknown transaction type" in err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "mutual", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    for cmd in ("keys", "genesis", "init", "start", "tx", "query", "status", "audit",
                "verify-share", "recover-wal"):
        assert cmd in out.stdout


def test_storage_options_reach_leveldb(tmp_path, capsys, monkeypatch):
    """[storage] in config.toml is what the node opens its database with."""
    from chain.keyfile import read_key
    from node import node as node_mod

    keys = {}
    for name in ("v0", "reg", "ass", "op"):
        keys[name] = tmp_path / f"{name}.json"
        assert run(capsys, "keys", "new", "--out", str(keys[name]))[0] == 0
    gpath = tmp_path / "genesis.json"
    assert run(capsys, "genesis", "new", "--out", str(gpath), "--chain-id", "mutual-test",
               "--validator", f"alice={keys['v0']}", "--registrar", str(keys["reg"]),
               "--assessor", str(keys["ass"]), "--operator", str(keys["op"]),
               "--profile", "devnet")[0] == 0
    home = tmp_path / "home"
    assert run(capsys, "init", "--home", str(home), "--genesis", str(gpath))[0] == 0
    text = (home / "config.toml").read_text()
    sections = [f.name for f in dataclasses.fields(cfg.Config) if f.name != "home"]
    assert all(f"\n[{name}]\n" in text for name in sections), sections  # none forgotten
    assert "max_open_files = 1000" in text
    (home / "config.toml").write_text(
        text.replace("cache_mb = 32", "cache_mb = 8")
        .replace("max_open_files = 1000", "max_open_files = 80")
        .replace('compression = "none"', 'compression = "snappy"')
        .replace("state_history = 8", "state_history = 3")
        .replace("state_cache_groups = 1000000", "state_cache_groups = 5000"))
    conf = cfg.load(home)
    seen = {}
    real_open = node_mod.open_kv

    def spy(path, **options):
        seen.update(options)
        return real_open(path, **options)

    monkeypatch.setattr(node_mod, "open_kv", spy)
    node = node_mod.Node(conf, Genesis.load(gpath), read_key(home / "node_key.json"),
                         read_key(home / "validator_key.json"))
    node.open_storage()
    try:
        assert seen == {"cache_bytes": 8 << 20, "max_open_files": 80, "compression": "snappy"}
        assert node.executor.tree._keep == 3 and node.executor.tree._node_cap == 5000
    finally:
        node.wal.close()
        node.kv.close()
    (home / "config.toml").write_text(text.replace("state_history = 8", "state_history = 0"))
    node = node_mod.Node(cfg.load(home), Genesis.load(gpath), read_key(home / "node_key.json"),
                         read_key(home / "validator_key.json"))
    node.open_storage()
    try:
        assert node.executor.tree._keep is None  # 0: an archive node
    finally:
        node.wal.close()
        node.kv.close()


@pytest.mark.parametrize("value, fragment", [("-1", "more than 0"), ("0", "more than 0"),
                                             ("soon", "number of seconds"),
                                             ("inf", "more than 0")])
def test_timeouts_must_be_positive_seconds(capsys, value, fragment):
    with pytest.raises(SystemExit) as exc:
        main(["status", "--node", "http://127.0.0.1:9", "--timeout", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --timeout" in err and fragment in err and "Traceback" not in err
