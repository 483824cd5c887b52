"""API key format: prefix, checksum, hashing."""

from __future__ import annotations

from taskgate.services.accounts import KEY_PREFIX, generate_key, hash_key, well_formed


def test_generated_keys_are_well_formed_and_distinct() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert well_formed(key)


def test_a_flipped_character_fails_the_checksum() -> None:
    key = generate_key()
    position = len(KEY_PREFIX) + 5
    flipped = key[:position] + ("A" if key[position] != "A" else "B") + key[position + 1 :]
    assert not well_formed(flipped)


def test_malformed_keys() -> None:
    key = generate_key()
    for bad in [
        "",
        "tg_live_",
        key[:-1],
        key + "x",
        "sk_live_" + key[len(KEY_PREFIX) :],
        key.upper(),
    ]:
        assert not well_formed(bad), bad


def test_hash_is_stable_and_not_the_key() -> None:
    key = generate_key()
    assert hash_key(key) == hash_key(key)
    assert key not in hash_key(key)
    assert len(hash_key(key)) == 64
