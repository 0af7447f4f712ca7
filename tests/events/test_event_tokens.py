"""Callback tokens and marks: minted by the operator, checked by the receiver and the finish watcher.

A token is a nonce and a MAC of the secret, the connection and the nonce; its shape is checked on both
sides of each bound, and the URLs the receiver is reached at are exact."""

from __future__ import annotations

import pytest

from airflow_provider_dashscope_batch.events.tokens import (
    MARK_KEY,
    callback_url,
    eventbridge_url,
    is_marked,
    mark,
    mint_token,
    token_is_valid,
)

KEY = "finish-events-secret-0123456789"
CONN = "dashscope_default"


def test_a_token_is_valid_only_for_its_connection_and_secret():
    token = mint_token(KEY, "dashscope_default")
    assert token_is_valid((KEY,), "dashscope_default", token)
    assert not token_is_valid((KEY,), "other", token)
    assert not token_is_valid(("sk-other",), "dashscope_default", token)
    nonce, mac = token.split(".")
    assert not token_is_valid(
        (KEY,), "dashscope_default", f"{nonce}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}"
    )
    assert not token_is_valid((KEY,), "dashscope_default", f"{nonce}x.{mac}")
    assert not token_is_valid((KEY,), "dashscope_default", "")


def test_the_mac_is_a_fixed_function_of_secret_connection_and_nonce():
    """Tokens live in the metadata of batches still running across an upgrade: the MAC must not change."""
    token = "nonce-of-a-batch_1.c353833c92828245c418a8d54c68c52f"
    assert mint_token(KEY, CONN, "nonce-of-a-batch_1") == token
    assert token_is_valid((KEY,), CONN, token)
    assert mint_token(KEY, CONN, "eventbridge") == "eventbridge.8f7beca6bc73d5d92badc0b2db9578cb"


def test_the_mac_binds_connection_and_nonce_apart():
    """Moving a character between connection id and nonce gives another MAC (they are not just joined)."""
    _, mac = mint_token(KEY, "conn", "abcdefghi").split(".")
    assert token_is_valid((KEY,), "conn", f"abcdefghi.{mac}")
    assert not token_is_valid((KEY,), "con", f"nabcdefghi.{mac}")
    assert not token_is_valid((KEY,), "conna", f"bcdefghi.{mac}")
    assert mint_token(KEY, "conn", "abcdefgh") != mint_token(KEY + "x", "conn", "abcdefgh")


def test_the_mac_is_exactly_32_lowercase_hex_digits():
    nonce, mac = mint_token(KEY, CONN, "nonce-of-a-batch_1").split(".")
    assert token_is_valid((KEY,), CONN, f"{nonce}.{mac}")
    for bad in (mac[:31], mac + "0", mac.upper(), mac[:31] + "g", ""):
        assert not token_is_valid((KEY,), CONN, f"{nonce}.{bad}"), bad
    assert not token_is_valid((KEY,), CONN, f"x{nonce}.{mac}")
    assert not token_is_valid((KEY,), CONN, f"{nonce}{mac}")
    assert not token_is_valid((KEY,), CONN, f"{nonce}.{mac}.{mac}")


def test_a_trailing_newline_or_anything_around_the_token_is_refused():
    token = mint_token(KEY, CONN)
    for bad in (token + "\n", token + "\r\n", "\n" + token, token + " ", token + "%0A"):
        assert not token_is_valid((KEY,), CONN, bad), repr(bad)


def test_a_random_nonce_has_144_bits():
    nonces = [mint_token(KEY, CONN).split(".")[0] for _ in range(20)]
    assert {len(n) for n in nonces} == {24}  # 18 random bytes, URL-safe base64
    assert len(set(nonces)) == 20


@pytest.mark.parametrize(
    ("nonce", "valid"),
    [
        ("a" * 7, False),
        ("a" * 8, True),
        ("Az09_-xY", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("abcdefg=", False),
        ("abcd.efgh", False),
        ("abcd efgh", False),
    ],
)
def test_the_nonce_is_8_to_64_url_safe_characters(nonce, valid):
    assert token_is_valid((KEY,), CONN, mint_token(KEY, CONN, nonce)) is valid


def test_during_a_rotation_the_current_and_the_previous_secret_verify_and_no_other():
    old = mint_token("previous-secret", CONN)
    new = mint_token(KEY, CONN)
    assert token_is_valid((KEY, "previous-secret"), CONN, old)
    assert token_is_valid((KEY, "previous-secret"), CONN, new)
    assert not token_is_valid((KEY,), CONN, old)  # the rotation is over
    assert not token_is_valid((), CONN, new)


def test_a_mark_binds_secret_connection_and_idempotency_key():
    key = "airflow-" + "a" * 40 + "-g1"
    metadata = {MARK_KEY: mark(KEY, CONN, key), "idempotency_key": key}
    assert is_marked((KEY,), CONN, metadata)
    assert is_marked(("previous", KEY), CONN, metadata)
    assert not is_marked(("another-deployment",), CONN, metadata)
    assert not is_marked((KEY,), "another_conn", metadata)
    assert not is_marked((KEY,), CONN, {**metadata, "idempotency_key": key.replace("g1", "g2")})  # copied
    assert not is_marked((KEY,), CONN, {"idempotency_key": key})
    assert not is_marked((KEY,), CONN, None)


def test_every_batch_gets_its_own_token_and_the_secret_is_never_in_the_url():
    tokens = {mint_token(KEY, "c") for _ in range(100)}
    assert len(tokens) == 100
    url = callback_url("https://airflow.example.com/", "c", tokens.pop())
    assert url.startswith("https://airflow.example.com/dashscope-batch/events/c/")
    assert KEY not in url
    assert KEY not in eventbridge_url("https://airflow.example.com", "c", KEY)
    assert eventbridge_url("https://a", "c", KEY) == eventbridge_url(
        "https://a", "c", KEY
    )  # one per connection


def test_callback_urls():
    token = mint_token(KEY, CONN, "nonce-of-a-batch_1")
    assert callback_url("https://airflow.example.com", CONN, token) == (
        f"https://airflow.example.com/dashscope-batch/events/{CONN}/{token}"
    )
    assert callback_url("https://airflow.example.com/base//", "my conn/1", token) == (
        f"https://airflow.example.com/base/dashscope-batch/events/my%20conn%2F1/{token}"
    )
    assert callback_url("https://airflow.example.com/XX/", "X", token) == (  # only slashes are cut
        f"https://airflow.example.com/XX/dashscope-batch/events/X/{token}"
    )


def test_the_eventbridge_url_carries_the_connections_fixed_token():
    url = eventbridge_url("https://a.example/", CONN, KEY)
    assert (
        url == f"https://a.example/dashscope-batch/events/{CONN}/eventbridge.8f7beca6bc73d5d92badc0b2db9578cb"
    )
    assert token_is_valid((KEY,), CONN, url.rpartition("/")[2])
    assert not token_is_valid((KEY,), "other", url.rpartition("/")[2])
