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
    # format 2: keyed identity tags, one identity key in use, no credit threshold
    assert g.doc["format"] == 2 and g.params["identity_key_ids"] == [1]
    assert "credit_threshold" not in g.params
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


# --- governance: mutual gov, mutual node rotate-key, operator accounts -----------------------

def test_genesis_new_takes_operator_accounts_and_refuses_a_consensus_key_as_one(tmp_path,
                                                                                  capsys):
    keys = {}
    for name in ("v0", "v1", "o0", "o1", "op"):
        keys[name] = tmp_path / f"{name}.json"
        assert run(capsys, "keys", "new", "--out", str(keys[name]))[0] == 0
    common = ["--chain-id", "c", "--operator", str(keys["op"]), "--profile", "devnet"]
    gpath = tmp_path / "g.json"
    code, _, err = run(capsys, "genesis", "new", "--out", str(gpath), *common,
                       "--validator", f"a={keys['v0']},operator={keys['o0']}",
                       "--validator", f"b={keys['v1']},power=3,operator={keys['o1']}")
    assert code == 0, err
    g = Genesis.load(gpath)
    ops = [v.operator.hex() for v in g.validators.validators]
    assert ops == [json.loads(run(capsys, "keys", "show", str(keys[k]))[1])["pub_key"]
                   for k in ("o0", "o1")]
    # the operator account of one validator is another's consensus key: refused, no file
    bad = tmp_path / "bad.json"
    code, _, err = run(capsys, "genesis", "new", "--out", str(bad), *common,
                       "--validator", f"a={keys['v0']},operator={keys['v1']}",
                       "--validator", f"b={keys['v1']}")
    assert code == 2 and "operator account is a consensus key" in err and not bad.exists()
    assert err.count("\n") == 1
    # no operator at all: written, with a warning that nobody can govern
    code, _, err = run(capsys, "genesis", "new", "--out", str(tmp_path / "w.json"), *common,
                       "--validator", f"a={keys['v0']}")
    assert code == 0 and "no validator names an operator account" in err


def test_init_writes_or_imports_the_operator_key(tmp_path, capsys):
    code, out, err = run(capsys, "init", "--home", str(tmp_path / "h1"))
    assert code == 0, err
    made = json.loads(out)["operator_account"]
    path = tmp_path / "h1" / "operator_key.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(run(capsys, "keys", "show", str(path))[1])["pub_key"] == made
    assert made != json.loads(out)["validator_key"]
    op = tmp_path / "op.json"
    run(capsys, "keys", "new", "--out", str(op))
    code, out, _ = run(capsys, "init", "--home", str(tmp_path / "h2"), "--operator-key", str(op))
    assert code == 0
    assert json.loads(out)["operator_account"] == json.loads(
        run(capsys, "keys", "show", str(op))[1])["pub_key"]
    code, out, _ = run(capsys, "init", "--home", str(tmp_path / "h3"), "--no-validator")
    assert code == 0 and json.loads(out)["operator_account"] is None
    assert not (tmp_path / "h3" / "operator_key.json").exists()
    code, _, err = run(capsys, "init", "--home", str(tmp_path / "h4"), "--no-validator",
                       "--operator-key", str(op))
    assert code == 2 and "contradict" in err and not (tmp_path / "h4").exists()


def test_durations_and_deadlines():
    from client.gov_cli import deadline_text, parse_deadline, parse_duration_s, readable_span

    assert parse_duration_s("2h") == 7200 and parse_duration_s("1h30m") == 5400
    assert parse_duration_s("2d") == 172800 and parse_duration_s("45s") == 45
    for bad in ("", "2x", "h", "1.5h", "-2h", "2h 30m"):
        with pytest.raises(ValueError):
            parse_duration_s(bad)
    now = 1_765_000_000_000
    assert parse_deadline("90m", now) == now + 90 * 60_000
    # RFC 3339 with its offset; the same instant in two offsets
    a = parse_deadline("2025-12-07T00:00:00+08:00", 1_765_000_000_000 - 10 ** 8)
    b = parse_deadline("2025-12-06T16:00:00Z", 1_765_000_000_000 - 10 ** 8)
    assert a == b == 1_765_036_800_000
    with pytest.raises(ValueError, match="needs its offset"):
        parse_deadline("2025-12-07T00:00:00", now)
    with pytest.raises(ValueError, match="not in the future"):
        parse_deadline("2020-01-01T00:00:00Z", now)
    with pytest.raises(ValueError, match="more than 30 days"):
        parse_deadline("31d", now)
    assert readable_span(4_800_000) == "1h 20m" and readable_span(90_061_000) == "1d 1h"
    assert readable_span(500) == "0s"
    when, rel = deadline_text(1_765_036_800_000, 1_765_036_800_000 - 4_800_000)
    assert when == "2025-12-07 00:00 CST" and rel == "in 1h 20m"
    assert deadline_text(1_765_036_800_000, 1_765_036_800_000 + 61_000)[1] == "1m 1s ago"


@pytest.mark.parametrize("argv,fragment", [
    (["gov", "propose", "--key", "k.json", "add_validator", "--power", "3"],
     "add_validator needs --pub-key, --node-key, --name, --operator"),
    (["gov", "propose", "--key", "k.json", "remove-validator"], "remove_validator needs --pub-key"),
    (["gov", "propose", "--key", "k.json", "remove-validator", "--pub-key", "zz"],
     "--pub-key: 'zz' is neither 64 hex characters nor a key file"),
    (["gov", "propose", "--key", "k.json", "set_power", "--pub-key", "ab" * 32, "--power", "-1"],
     "--power must be a non-negative integer"),
    (["gov", "propose", "--key", "k.json", "set_params", "--from-period", "3"],
     "set_params needs at least one parameter"),
    (["gov", "propose", "--key", "k.json", "set_params", "--set", "fee_bps", "--from-period",
      "3"], "--set 'fee_bps': expected NAME=VALUE"),
    (["gov", "propose", "--key", "k.json", "set_params", "--params", "[1]", "--from-period",
      "3"], "--params must be a JSON object"),
    (["gov", "propose", "--key", "k.json", "remove-validator", "--pub-key", "ab" * 32,
      "--deadline", "soon"], "give a duration (90m, 2h, 1h30m, 2d) or an RFC 3339 time"),
    (["gov", "propose", "--key", "k.json", "remove-validator", "--pub-key", "ab" * 32,
      "--deadline", "60d"], "more than 30 days ahead"),
    (["gov", "vote", "--key", "k.json", "0", "yes"], "proposal id must be a positive integer"),
])
def test_gov_argument_errors_are_one_line_before_any_network(capsys, argv, fragment):
    # --node points at nothing: these must fail before asking it
    code, _, err = run(capsys, *argv, "--node", "http://127.0.0.1:9") if argv[1] != "propose" \
        else run(capsys, *argv[:2], "--node", "http://127.0.0.1:9", *argv[2:])
    assert code == 2, err
    assert err.startswith("mutual: error:") and err.count("\n") == 1 and fragment in err, err


def test_gov_usage_errors_exit_2(capsys):
    for argv in (["gov"], ["gov", "propose", "--key", "k", "nonsense"],
                 ["gov", "vote", "--key", "k", "1", "maybe"], ["gov", "list", "--status", "x"],
                 ["gov", "propose", "--key", "k", "grant_role", "--account", "ab" * 32,
                  "--role", "king"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    capsys.readouterr()


def test_gov_list_and_show_against_an_unreachable_node_is_one_line(capsys):
    for argv in (["gov", "list"], ["gov", "show", "3"]):
        code, _, err = run(capsys, *argv, "--node", "http://127.0.0.1:9", "--timeout", "2")
        assert code == 1 and err.count("\n") == 1 and "unreachable" in err


def test_gov_table_is_readable():
    from client.gov_cli import table

    now = 1_765_036_800_000
    rows = [{"id": 1, "kind": "add_validator", "status": "open", "deadline_ms": now + 4_800_000,
             "change": {"pub_key": "ab" * 32, "power": 10, "name": "validator-4",
                        "node_key": "cd" * 32, "operator": "ef" * 32},
             "yes_power": 10, "needed": 27, "total_power": 40},
            {"id": 12, "kind": "set_params", "status": "passed", "deadline_ms": now - 60_000,
             "change": {"params": {"fee_bps": 600}, "from_period": 9},
             "yes_power": 30, "needed": 27, "total_power": 40}]
    lines = table(rows, now).splitlines()
    assert lines[0].split() == ["ID", "KIND", "STATUS", "SUMMARY", "YES/NEEDED/TOTAL",
                                "DEADLINE"]
    assert "add validator-4 abababab… power 10" in lines[1] and "10/27/40" in lines[1]
    assert "2025-12-07 01:20 CST" in lines[1] and lines[1].endswith("in 1h 20m")
    assert "from period 9: fee_bps=600" in lines[2] and lines[2].endswith("1m ago")
    # the columns line up
    col = lines[0].index("DEADLINE")
    assert all(line[col:col + 4] in ("DEAD", "2025") for line in lines)


def test_rotate_key_refuses_before_writing_anything(tmp_path, capsys):
    home = tmp_path / "h"
    assert run(capsys, "init", "--home", str(home))[0] == 0
    before = sorted(p.name for p in home.iterdir())
    conf_before = (home / "config.toml").read_text()
    # the node is not reachable (nothing listens on its API port): refused, nothing written
    code, _, err = run(capsys, "node", "rotate-key", "--home", str(home), "--node",
                       "http://127.0.0.1:9", "--timeout", "2")
    assert code in (1, 2) and err.count("\n") == 1 and err.startswith("mutual: error:")
    assert sorted(p.name for p in home.iterdir()) == before
    assert (home / "config.toml").read_text() == conf_before
    # no operator key where it is looked for
    (home / "operator_key.json").unlink()
    code, _, err = run(capsys, "node", "rotate-key", "--home", str(home))
    assert code == 2 and ("no operator key at" in err or "next_validator_key_file" in err)
    full = tmp_path / "full"
    assert run(capsys, "init", "--home", str(full), "--no-validator")[0] == 0
    code, _, err = run(capsys, "node", "rotate-key", "--home", str(full))
    assert code == 2 and ("is a full node" in err or "next_validator_key_file" in err)


def _has_propose() -> bool:
    from contracts.txtypes import TX_TYPES

    return "propose" in TX_TYPES


@pytest.mark.skipif(not _has_propose(), reason="needs the governance transactions")
def test_every_kind_builds_a_body_the_schema_accepts_and_a_wrong_one_is_named():
    from chain.crypto import PrivateKey
    from client.cliutil import CliError
    from client.gov_cli import change_doc, propose_body, vote_body

    k = [PrivateKey.generate().public_key.hex() for _ in range(4)]
    changes = {
        "add_validator": dict(pub_key=k[0], power=10, node_key=k[1], name="v4", operator=k[2]),
        "remove_validator": dict(pub_key=k[0]),
        "set_power": dict(pub_key=k[0], power=0),
        "rotate_key": dict(pub_key=k[0], new_pub_key=k[1], new_node_key=k[3]),
        "grant_role": dict(account=k[2], role="registrar"),
        "revoke_role": dict(account=k[2], role="assessor"),
        "set_params": dict(params={"fee_bps": 600}, from_period=5),
    }
    for kind, fields in changes.items():
        body = propose_body(kind, change_doc(kind, **fields), 1_800_000_000_000)
        assert body["kind"] == kind and body["deadline_ms"] == 1_800_000_000_000
        flat = body.get("change", body)  # the change beside kind, or nested
        for name, value in fields.items():
            assert flat[name] == (bytes.fromhex(value) if name in (
                "pub_key", "node_key", "operator", "new_pub_key", "new_node_key", "account")
                else value)
    assert vote_body(3, False) == {"proposal_id": 3, "yes": False}
    with pytest.raises(CliError, match="add_validator needs --name"):
        change_doc("add_validator", pub_key=k[0], power=1, node_key=k[1], operator=k[2])
    with pytest.raises(CliError, match="remove_validator takes no --power"):
        change_doc("remove_validator", pub_key=k[0], power=3)


def test_a_format_1_genesis_is_refused_in_one_line(tmp_path, capsys):
    keys = tmp_path / "v0.json"
    run(capsys, "keys", "new", "--out", str(keys))
    gpath = tmp_path / "genesis.json"
    assert run(capsys, "genesis", "new", "--out", str(gpath), "--chain-id", "t1", "--validator",
               f"v0={keys}", "--operator", str(keys), "--profile", "devnet")[0] == 0
    doc = json.loads(gpath.read_text())
    del doc["format"]
    gpath.write_text(json.dumps(doc))
    code, _, err = run(capsys, "init", "--home", str(tmp_path / "home"), "--genesis",
                       str(gpath))
    assert code == 2 and err.count("\n") == 1
    assert "format 1" in err and "mutual genesis new" in err


def test_register_member_body_from_the_command_line(tmp_path, capsys):
    from client.txjson import body_from_json
    tag, other = "ab" * 32, "cd" * 32
    doc = {"member": "11" * 32, "identity_tags": f'[[1, "{tag}"], [2, "{other}"]]',
           "birth_date": "1990-05-01", "health_commitment": "22" * 32,
           "credit_attestation": "33" * 32, "credit_passed": "true"}
    body = body_from_json("register_member", doc)
    assert body["identity_tags"] == [[1, bytes.fromhex(tag)], [2, bytes.fromhex(other)]]
    assert body["credit_passed"] is True
    for bad, fragment in (('[[1, "zz"]]', "64 hex"), ("[[1]]", "tags"),
                          (f'[[1, "{tag}"], [1, "{other}"]]', "tags"), ("nope", "JSON")):
        with pytest.raises(ValueError, match=fragment):
            body_from_json("register_member", {**doc, "identity_tags": bad})
    with pytest.raises(ValueError, match="unknown fields .'credit_score'"):
        body_from_json("register_member", {**doc, "credit_score": 700})
    key = tmp_path / "k.json"
    run(capsys, "keys", "new", "--out", str(key))
    code, _, err = run(capsys, "tx", "register_member", "--key", str(key), "--node",
                       "http://127.0.0.1:9", "--body", json.dumps({**doc, "identity_tags": 5}))
    assert code == 2 and "identity_tags" in err


def test_identity_tags_reads_the_id_from_stdin_and_matches_the_rules(tmp_path, capsys,
                                                                     monkeypatch):
    import io

    from contracts.identity import identity_tag
    keys = {"1": "aa" * 32, "2": "bb" * 32}
    kfile = tmp_path / "identity_keys.json"
    kfile.write_text(json.dumps(keys))
    monkeypatch.setattr(sys, "stdin", io.StringIO("11010519491231002x\n"))
    code, out, err = run(capsys, "identity-tags", "--keys", str(kfile), "--key-ids", "1,2")
    assert code == 0, err
    want = [[k, identity_tag(bytes.fromhex(keys[str(k)]), "11010519491231002X").hex()]
            for k in (1, 2)]
    assert json.loads(out) == want
    for stdin, ids, fragment in (("110105194912310021\n", "1", "check digit"),
                                 ("11010519491231002X\n", "1,3", "not held"),
                                 ("11010519491231002X\n", "x", "key-ids")):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code, _, err = run(capsys, "identity-tags", "--keys", str(kfile), "--key-ids", ids)
        assert code == 2 and fragment in err and err.count("\n") == 1
    kfile.write_text(json.dumps({"1": "aa" * 8}))
    code, _, err = run(capsys, "identity-tags", "--keys", str(kfile), "--key-ids", "1")
    assert code == 2 and "shorter than 32 bytes" in err
