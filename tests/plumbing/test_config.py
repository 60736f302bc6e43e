"""Tests of casync_store.plumbing.config (desync's config file) and casync_store.stores.location."""

from __future__ import annotations

import json
import os
import re

import pytest

from casync_format.errors import ParameterError, StoreError
from casync_store import LocalStore
from casync_store.plumbing.config import (
    Config,
    ConfigError,
    StoreOptions,
    load_config,
    location_match,
    parse_duration,
)
from casync_store.stores.location import BACKENDS, open_store, split_location


def write(path: os.PathLike[str] | str, data: object) -> str:
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0.0),
        ("500ms", 0.5),
        ("1s", 1.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("-1s", -1.0),
        ("250us", 0.00025),
        ("10ns", 1e-8),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5", "1x", "s", "1s2"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ParameterError):
        parse_duration(text)


# --------------------------------------------------------------------------- loading


def test_missing_default_file_is_empty_config(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(None)
    assert config.path == os.path.join(str(tmp_path), ".config", "desync", "config.json")
    assert config.store_options == {} and config.s3_credentials == {}
    assert config.store_options_for("/any") == StoreOptions()


def test_default_file_is_read(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    os.makedirs(os.path.join(tmp_path, ".config", "desync"))
    write(
        os.path.join(tmp_path, ".config", "desync", "config.json"),
        {"store-options": {"/s": {"skip-verify": True}}},
    )
    assert load_config(None).store_options_for("/s").skip_verify is True


def test_missing_explicit_file_is_an_error(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "nope.json")
    with pytest.raises(ConfigError, match=r"nope\.json"):
        load_config(path)


def test_full_desync_config(tmp_path: os.PathLike[str]) -> None:
    data = {
        "http-timeout": 30_000_000_000,
        "http-error-retry": 5,
        "s3-credentials": {
            "http://localhost:9000": {"access-key": "AK", "secret-key": "SK", "aws-region": "r"}
        },
        "store-options": {
            "https://host/store/": {
                "timeout": "1m",
                "error-retry": 7,
                "error-retry-base-interval": 250_000_000,
                "trust-insecure": True,
                "ca-cert": "/ca",
                "client-cert": "/c",
                "client-key": "/k",
                "skip-verify": True,
                "uncompressed": False,
                "http-auth": "Bearer x",
                "http-cookie": "a=b",
                "n": 4,
            },
            "/local/*": {"uncompressed": True},
        },
        "oci-credentials": {},
        "some-future-key": 1,
    }
    config = load_config(write(os.path.join(tmp_path, "c.json"), data))
    assert config.http_timeout == 30.0 and config.http_error_retry == 5
    opts = config.store_options_for("https://host/store")
    assert opts == StoreOptions(
        timeout=60.0,
        error_retry=7,
        error_retry_base_interval=0.25,
        trust_insecure=True,
        ca_cert="/ca",
        client_cert="/c",
        client_key="/k",
        skip_verify=True,
        uncompressed=False,
        http_auth="Bearer x",
        http_cookie="a=b",
    )
    # http-timeout / http-error-retry are the defaults for stores without an entry
    other = config.store_options_for("https://elsewhere/")
    assert other.timeout == 30.0 and other.error_retry == 5
    assert config.store_options_for("/local/a").uncompressed is True
    creds = config.s3_credentials_for("s3+http://localhost:9000/bucket/prefix")
    assert creds is not None and creds.access_key == "AK" and creds.aws_region == "r"
    assert config.s3_credentials_for("s3+https://other/b") is None


def test_round_trip(tmp_path: os.PathLike[str]) -> None:
    data = {
        "http-timeout": 2_000_000_000,
        "store-options": {"/a": {"skip-verify": True, "error-retry": 1, "timeout": 5_000_000_000}},
        "s3-credentials": {"https://h": {"aws-profile": "p"}},
    }
    config = load_config(write(os.path.join(tmp_path, "c.json"), data))
    again = load_config(write(os.path.join(tmp_path, "d.json"), config.to_json()))
    assert again.store_options == config.store_options
    assert again.s3_credentials == config.s3_credentials
    assert again.http_timeout == config.http_timeout
    assert json.loads(config.dumps())["store-options"]["/a"]["timeout"] == 5_000_000_000


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "invalid JSON at line 1"),
        ("[]", "must be a JSON object"),
        ('{"store-options": []}', "store-options must be a JSON object"),
        ('{"store-options": {"/a": {"skip-verify": "yes"}}}', "skip-verify must be true or false"),
        ('{"store-options": {"/a": {"error-retry": 1.5}}}', "error-retry must be an integer"),
        ('{"store-options": {"/a": {"error-retry": true}}}', "error-retry must be an integer"),
        ('{"store-options": {"/a": {"timeout": "soon"}}}', "timeout must be a duration"),
        ('{"store-options": {"/a": {"ca-cert": 3}}}', "ca-cert must be a string"),
        ('{"http-timeout": [1]}', "http-timeout must be a duration"),
        ('{"s3-credentials": {"http://h": {"access-key": 1}}}', "access-key must be a string"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_invalid_files_name_the_file_and_key(
    tmp_path: os.PathLike[str], text: str | bytes, fragment: str
) -> None:
    path = os.path.join(tmp_path, "bad.json")
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert path in message and fragment in message and "\n" not in message
    assert isinstance(info.value, ParameterError)


def test_several_matching_entries_are_an_error(tmp_path: os.PathLike[str]) -> None:
    config = load_config(
        write(
            os.path.join(tmp_path, "c.json"), {"store-options": {"/s/*": {}, "/s/a": {"skip-verify": True}}}
        )
    )
    with pytest.raises(ConfigError, match="several"):
        config.store_options_for("/s/a")
    assert config.store_options_for("/s/b") == StoreOptions()


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    "pattern, location, expected",
    [
        ("/store", "/store", True),
        ("/store/", "/store", True),
        ("/store", "/store/", True),
        ("/store/*", "/store/a", True),
        ("/store/*", "/store/a/b", False),
        ("/store/?", "/store/a", True),
        ("/store/[ab]", "/store/b", True),
        ("/store/[^ab]", "/store/c", True),
        ("/store/[^ab]", "/store/a", False),
        ("/a/./b", "/a/b", True),
        ("http://host/path/", "http://host/path", True),
        ("http://host/*", "http://host/store/", True),
        ("http://host/*", "http://host/a/b", False),
        ("https://host/*", "http://host/a", False),
        ("s3+https://*/bucket", "s3+https://minio:9000/bucket", True),
    ],
)
def test_location_match(pattern: str, location: str, expected: bool) -> None:
    assert location_match(pattern, location) is expected


def test_relative_paths_match_absolute(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert location_match(os.path.join(str(tmp_path), "s"), "s")
    assert location_match("s", os.path.join(str(tmp_path), "s"))


# --------------------------------------------------------------------------- locations


def test_open_local_paths(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "store")
    store = open_store(path)
    assert isinstance(store, LocalStore) and store.path == path and store.verify
    url = open_store("file://" + path)
    assert isinstance(url, LocalStore) and url.path == path
    assert open_store(path, StoreOptions(skip_verify=True)).verify is False
    assert open_store(path, writable=True) is not None


def test_options_for_each_location(tmp_path: os.PathLike[str]) -> None:
    seen = []

    def options_for(location: str) -> StoreOptions:
        seen.append(location)
        return StoreOptions(skip_verify=True)

    store = open_store(os.path.join(tmp_path, "s"), options_for=options_for)
    assert store.verify is False and seen == [os.path.join(tmp_path, "s")]


@pytest.mark.parametrize("location", ["gs://b/s", "oci+https://registry/repo"])
def test_later_schemes_not_supported_yet(location: str) -> None:
    scheme = location.split("://")[0]
    assert scheme not in BACKENDS  # when one is built, it leaves this list
    with pytest.raises(StoreError, match=re.escape(f"scheme '{scheme}' is not supported")):
        open_store(location)


def test_unknown_scheme() -> None:
    with pytest.raises(StoreError, match="unknown location scheme 'ftp'"):
        open_store("ftp://host/store")


def test_failover_group_and_bad_locations(tmp_path: os.PathLike[str]) -> None:
    group = open_store(f"{tmp_path}/a|{tmp_path}/b")
    assert str(group) == f"{tmp_path}/a|{tmp_path}/b"
    with pytest.raises(ParameterError, match="empty member"):
        open_store(f"{tmp_path}/a|")
    for bad in ("", "-", "  "):
        with pytest.raises(ParameterError):
            open_store(bad)


def test_store_options_refused_by_local(tmp_path: os.PathLike[str]) -> None:
    assert open_store(str(tmp_path), StoreOptions(uncompressed=True)).uncompressed  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="no encryption key configured"):
        open_store(str(tmp_path), StoreOptions(encryption=True))
    with pytest.raises(StoreError, match="without setting encryption to true"):
        open_store(str(tmp_path), StoreOptions(encryption_key="00" * 32))
    with pytest.raises(StoreError, match=r"casync protocol \(ssh://\)"):
        open_store("ssh://host/store", StoreOptions(encryption=True, encryption_key="00" * 32))


def test_local_path_that_is_a_file(tmp_path: os.PathLike[str]) -> None:
    path = write(os.path.join(tmp_path, "f"), "x")
    with pytest.raises(StoreError, match="not a directory"):
        open_store(path)


@pytest.mark.parametrize(
    "location, expected",
    [
        ("/a/b", ("", "/a/b")),
        ("C:/x", ("", "C:/x")),
        ("name:x", ("", "name:x")),
        ("HTTP://h/x", ("http", "h/x")),
        ("s3+https://h/b", ("s3+https", "h/b")),
    ],
)
def test_split_location(location: str, expected: tuple[str, str]) -> None:
    assert split_location(location) == expected


def test_config_dataclass_defaults() -> None:
    config = Config(path="/x")
    assert config.to_json() == {"s3-credentials": {}, "store-options": {}}
    assert config.default_store_options() == StoreOptions()


def test_write_keeps_keys_pycasync_does_not_model(tmp_path) -> None:
    """config -w must not drop desync's secrets or settings it does not know."""
    import json as _json

    from casync_store.plumbing.config import load_config as _load

    path = tmp_path / "config.json"
    original = {
        "oci-credentials": {"r.example.com": {"username": "u", "secret": "p"}},
        "store-options": {"/srv/enc": {"encryption-key": "K", "n": 8, "skip-verify": True}},
        "future-key": [1, 2, 3],
    }
    path.write_text(_json.dumps(original))
    written = _json.loads(_load(str(path)).dumps())
    assert written["oci-credentials"] == original["oci-credentials"]
    assert written["future-key"] == [1, 2, 3]
    entry = written["store-options"]["/srv/enc"]
    assert entry["encryption-key"] == "K" and entry["n"] == 8 and entry["skip-verify"] is True


# --------------------------------------------------------------------------- s3-credentials


def _s3_config(tmp_path: os.PathLike[str], creds: dict[str, dict[str, str]], **extra: object) -> Config:
    return load_config(write(os.path.join(tmp_path, "s3.json"), {"s3-credentials": creds, **extra}))


@pytest.mark.parametrize(
    "key, location, matches",
    [
        ("http://127.0.0.1:9000", "s3+http://127.0.0.1:9000/bucket/prefix", True),
        ("http://127.0.0.1:9000", "s3+https://127.0.0.1:9000/bucket", False),  # the scheme counts
        ("http://127.0.0.1:9000", "s3+http://127.0.0.1:9001/bucket", False),
        ("http://127.0.0.1", "s3+http://127.0.0.1:9000/bucket", False),  # and the port
        ("http://127.0.0.1:*", "s3+http://127.0.0.1:9000/bucket", True),
        ("https://*.example.com", "s3+https://s3.eu.example.com/bucket", True),
        ("https://*.example.com", "s3+https://example.com/bucket", False),
        ("http://*", "S3+HTTP://Host:1/b?lookup=path", True),
        ("http://minio-?:9000", "s3+http://minio-1:9000/b", True),
        ("http://[ab]host", "s3+http://bhost/b", True),
        ("*", "s3+http://h/b", False),  # * never matches "/": not a catch-all
    ],
)
def test_s3_credentials_keys_and_globs(
    tmp_path: os.PathLike[str], key: str, location: str, matches: bool
) -> None:
    config = _s3_config(tmp_path, {key: {"access-key": "AK", "secret-key": "SK"}})
    creds = config.s3_credentials_for(location)
    assert (creds is not None) == matches
    assert (config.store_options_for(location).s3_credentials is not None) == matches


def test_s3_credentials_exact_key_first_and_glob_conflicts(tmp_path: os.PathLike[str]) -> None:
    globs = {"http://*": {"access-key": "A"}, "http://127.0.0.1:*": {"access-key": "B"}}
    config = _s3_config(tmp_path, {**globs, "http://127.0.0.1:9000": {"access-key": "C"}})
    creds = config.s3_credentials_for("s3+http://127.0.0.1:9000/b")
    assert creds is not None and creds.access_key == "C"
    with pytest.raises(ConfigError, match=r"several s3-credentials entries match 'http://127\.0\.0\.1:9001'"):
        config.s3_credentials_for("s3+http://127.0.0.1:9001/b")
    creds = config.s3_credentials_for("s3+http://other/b")
    assert creds is not None and creds.access_key == "A"


def test_s3_credentials_reach_store_options_only_for_s3(tmp_path: os.PathLike[str]) -> None:
    config = _s3_config(
        tmp_path,
        {"http://*": {"access-key": "AKID", "secret-key": "s3cr3t", "aws-region": "eu-west-1"}},
        **{"store-options": {"s3+http://h/b": {"error-retry": 9}, "http://h/b": {"error-retry": 8}}},
    )
    opts = config.store_options_for("s3+http://h/b")
    assert opts.error_retry == 9 and opts.s3_credentials is not None
    assert opts.s3_credentials.secret_key == "s3cr3t" and opts.s3_credentials.aws_region == "eu-west-1"
    assert config.store_options_for("http://h/b").s3_credentials is None
    assert config.store_options_for("s3+https://h/b").s3_credentials is None  # https:// has no entry
    # Secrets stay out of repr, of the store-options JSON, and of equality.
    for text in (repr(opts), repr(opts.s3_credentials), json.dumps(opts.to_json())):
        assert "s3cr3t" not in text and "AKID" not in text
    assert opts == opts.replace(s3_credentials=None)
    assert "s3_credentials" not in json.dumps(config.to_json()["store-options"])
    assert json.loads(config.dumps())["s3-credentials"]["http://*"]["secret-key"] == "s3cr3t"


def test_encryption_options_and_env_key(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    key = "ab" * 32
    path = os.path.join(tmp_path, "c.json")
    with open(path, "w") as f:
        json.dump({"store-options": {
            "/enc": {"encryption": True, "encryption-key": key, "encryption-algorithm": "aes-256-gcm"},
            "/envkey": {"encryption": True}, "/plain": {}}}, f)
    monkeypatch.setenv("DESYNC_ENCRYPTION_KEY", "cd" * 32)
    config = load_config(path)
    enc = config.store_options_for("/enc")
    assert (enc.encryption, enc.encryption_key, enc.encryption_algorithm) == (True, key, "aes-256-gcm")
    assert key not in repr(enc) and enc.to_json()["encryption-key"] == key
    assert config.store_options_for("/envkey").encryption_key == "cd" * 32
    plain = config.store_options_for("/plain")  # the variable alone never enables encryption
    assert not plain.encryption_configured and plain.chunk_cipher() is None
    shown = config.dumps(redact=True)
    assert key not in shown and '"encryption-key": "***"' in shown and key in config.dumps()
