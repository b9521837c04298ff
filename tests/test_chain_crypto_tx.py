"""Keys, domain separation and the transaction envelope."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import encoding
from chain.crypto import CryptoError, Domain, PrivateKey, PublicKey, sign_bytes
from chain.tx import MAX_TX_SIZE, Transaction, TxError

KEY = PrivateKey(bytes([1]) * 32)
OTHER = PrivateKey(bytes([2]) * 32)
CHAIN = "mutual-test"


def test_signature_bound_to_domain_and_chain():
    sig = KEY.sign(Domain.TX, CHAIN, b"payload")
    pub = KEY.public_key
    assert pub.verify(Domain.TX, CHAIN, b"payload", sig)
    assert not pub.verify(Domain.PREVOTE, CHAIN, b"payload", sig)
    assert not pub.verify(Domain.TX, "other-chain", b"payload", sig)
    assert not pub.verify(Domain.TX, CHAIN, b"payloaD", sig)
    assert not OTHER.public_key.verify(Domain.TX, CHAIN, b"payload", sig)


def test_sign_bytes_layout():
    assert sign_bytes(Domain.PRECOMMIT, "c", b"\x01") == b"mutual-ledger/precommit/v1\x00c\x00\x01"
    with pytest.raises(CryptoError):
        sign_bytes(Domain.TX, "bad\x00id", b"")
    with pytest.raises(CryptoError):
        sign_bytes(Domain.TX, "", b"")


def test_bad_keys():
    with pytest.raises(CryptoError):
        PublicKey(b"short")
    with pytest.raises(CryptoError):
        PublicKey.from_hex("zz")
    with pytest.raises(CryptoError):
        PrivateKey(b"\x00" * 31)
    assert not KEY.public_key.verify_raw(b"\x00" * 63, b"m")


def _tx(nonce=1, body=None):
    return Transaction.create(KEY, CHAIN, "file_claim", nonce, body or {"code": "C01", "n": 5})


def test_round_trip():
    tx = _tx()
    data = tx.encode()
    back = Transaction.decode(data)
    assert back == tx
    assert back.hash == tx.hash
    assert back.verify_signature()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 400), st.integers(0, 7))
def test_any_bit_flip_is_refused_or_unsigned(pos, bit):
    data = bytearray(_tx().encode())
    pos %= len(data)
    data[pos] ^= 1 << bit
    try:
        tx = Transaction.decode(bytes(data))
    except TxError:
        return
    assert not tx.verify_signature()


def test_signature_covers_every_field():
    tx = _tx()
    for changed in (
        Transaction(CHAIN, tx.type, tx.sender, 2, tx.body, tx.sig),
        Transaction(CHAIN, "leave", tx.sender, 1, tx.body, tx.sig),
        Transaction("other", tx.type, tx.sender, 1, tx.body, tx.sig),
        Transaction(CHAIN, tx.type, tx.sender, 1, {"code": "C02", "n": 5}, tx.sig),
        Transaction(CHAIN, tx.type, OTHER.public_key.raw, 1, tx.body, tx.sig),
    ):
        assert not changed.verify_signature()


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda m: m.pop("sig"), "bad_encoding"),
        (lambda m: m.update(extra=1), "bad_encoding"),
        (lambda m: m.update(nonce=0), "bad_nonce"),
        (lambda m: m.update(nonce=-1), "bad_nonce"),
        (lambda m: m.update(sender=b"\x00" * 31), "bad_sender"),
        (lambda m: m.update(sig=b"\x00" * 10), "bad_signature"),
        (lambda m: m.update(type="Bad-Type"), "bad_type"),
        (lambda m: m.update(chain_id="bad id"), "bad_chain_id"),
        (lambda m: m.update(body=[1]), "bad_body"),
    ],
)
def test_decode_refuses_bad_fields(mutate, code):
    m = {**_tx().unsigned_map(), "sig": _tx().sig}
    mutate(m)
    with pytest.raises(TxError) as info:
        Transaction.decode(encoding.encode(m))
    assert info.value.code == code


def test_oversize_refused():
    with pytest.raises(TxError) as info:
        Transaction.decode(b"\x00" * (MAX_TX_SIZE + 1))
    assert info.value.code == "too_large"


def test_non_canonical_refused():
    data = _tx().encode()
    import msgpack

    m = msgpack.unpackb(data, raw=False)
    reordered = msgpack.packb(dict(reversed(list(m.items()))), use_bin_type=True)
    with pytest.raises(TxError) as info:
        Transaction.decode(reordered)
    assert info.value.code == "bad_encoding"


def test_signing_with_wrong_key_refused():
    tx = Transaction(CHAIN, "leave", KEY.public_key.raw, 1, {})
    with pytest.raises(TxError):
        tx.signed(OTHER)
    with pytest.raises(TxError):
        tx.encode()
