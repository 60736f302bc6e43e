"""Secrets never leave the config file: not in ``config``, errors, logs or ``repr``.

Every test runs the real command line (``python3 pycasync.py``) with
distinctive secret strings and asserts none of them reaches stdout or stderr,
with ``-v`` too; ``config -w`` must still write every one of them back.
A real chunk-server guarded by ``DESYNC_HTTP_AUTH`` answers a client whose
config carries the wrong ``http-auth``: neither side echoes either value.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from casync_store.plumbing.config import REDACTED, Config, StoreOptions, load_config
from tests.support.cli import Server, ok, one_error, read, run

SECRETS = {
    "http-auth": "Bearer SECRET-abc123",
    "http-cookie": "session=SECRET-cookie456",
    "access-key": "SECRET-AKIA789",
    "secret-key": "SECRET-sk-wJalr",
    "session-token": "SECRET-tok-FwoG",
    "encryption-password": "SECRET-enc-pw",
    "url-password": "SECRET-urlpw",
    "oci-password": "SECRET-oci-pw",
}
HTTP_STORE = f"http://alice:{SECRETS['url-password']}@127.0.0.1:1/store"


def config_with_secrets() -> dict[str, object]:
    return {
        "http-timeout": 5_000_000_000,
        "store-options": {
            HTTP_STORE: {
                "http-auth": SECRETS["http-auth"],
                "http-cookie": SECRETS["http-cookie"],
                "encryption-password": SECRETS["encryption-password"],
                "error-retry": 1,
            },
            "/srv/store": {"skip-verify": True},
        },
        "s3-credentials": {
            "http://127.0.0.1:9000": {
                "access-key": SECRETS["access-key"],
                "secret-key": SECRETS["secret-key"],
                "session-token": SECRETS["session-token"],
                "aws-region": "eu-west-9",
            }
        },
        "oci-credentials": {"registry.example": {"username": "bob", "password": SECRETS["oci-password"]}},
    }


def write_config(tmp_path: os.PathLike[str], data: object, name: str = "c.json") -> str:
    path = os.path.join(tmp_path, name)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return path


def assert_no_secret(proc: subprocess.CompletedProcess[bytes], *extra: str) -> None:
    both = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    for secret in [*SECRETS.values(), *extra]:
        assert secret not in both, f"{secret!r} leaked: {both}"
    assert "SECRET" not in both, both


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_config_shows_every_secret_masked(
    env: dict[str, str], tmp_path: os.PathLike[str], verbose: list[str]
) -> None:
    path = write_config(tmp_path, config_with_secrets())
    proc = ok(env, *verbose, "--config", path, "config")
    assert_no_secret(proc)
    shown = json.loads(proc.stdout)
    masked_store = "http://alice:***@127.0.0.1:1/store"
    entry = shown["store-options"][masked_store]
    assert entry["http-auth"] == entry["http-cookie"] == entry["encryption-password"] == REDACTED
    assert entry["error-retry"] == 1  # the other values are shown as they are
    assert shown["store-options"]["/srv/store"]["skip-verify"] is True
    s3 = shown["s3-credentials"]["http://127.0.0.1:9000"]
    assert s3["access-key"] == s3["secret-key"] == s3["session-token"] == REDACTED
    assert s3["aws-region"] == "eu-west-9"
    assert shown["oci-credentials"]["registry.example"] == {"username": "bob", "password": REDACTED}
    assert list(shown) == ["http-timeout", "store-options", "s3-credentials", "oci-credentials"]


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_config_write_keeps_the_real_secrets(
    env: dict[str, str], tmp_path: os.PathLike[str], verbose: list[str]
) -> None:
    original = config_with_secrets()
    path = write_config(tmp_path, original)
    proc = ok(env, *verbose, "--config", path, "config", "-w")
    assert_no_secret(proc)
    written = json.loads(read(path))
    store = written["store-options"][HTTP_STORE]
    assert {k: store[k] for k in ("http-auth", "http-cookie", "encryption-password")} == {
        k: SECRETS[k] for k in ("http-auth", "http-cookie", "encryption-password")
    }
    assert written["s3-credentials"] == original["s3-credentials"]
    assert written["oci-credentials"] == original["oci-credentials"]
    # Written again from the written file: the same JSON (nothing lost or masked on the way).
    ok(env, "--config", path, "config", "-w")
    assert json.loads(read(path)) == written


BAD_VALUES = [
    ('{"store-options": {"/s": {"http-auth": 987654321}}}', "987654321",
     "store-options['/s'].http-auth must be a string, not a number"),
    ('{"store-options": {"/s": {"http-auth": ["SECRET-abc123"]}}}', "SECRET-abc123",
     "store-options['/s'].http-auth must be a string, not a list"),
    ('{"store-options": {"/s": {"http-cookie": {"c": "SECRET-cookie456"}}}}', "SECRET-cookie456",
     "store-options['/s'].http-cookie must be a string, not an object"),
    ('{"store-options": {"/s": {"http-auth": true}}}', "true",
     "store-options['/s'].http-auth must be a string, not a boolean"),
    ('{"s3-credentials": {"http://h": {"secret-key": 31415926535}}}', "31415926535",
     "s3-credentials['http://h'].secret-key must be a string, not a number"),
    ('{"s3-credentials": {"http://h": {"access-key": ["SECRET-AKIA789"]}}}', "SECRET-AKIA789",
     "s3-credentials['http://h'].access-key must be a string, not a list"),
    # The braces forgotten: the entry itself is the secret.
    ('{"store-options": {"/s": "Bearer SECRET-abc123"}}', "SECRET-abc123",
     "store-options['/s'] must be a JSON object, not a string"),
    ('{"store-options": ["Bearer SECRET-abc123"]}', "SECRET-abc123",
     "store-options must be a JSON object, not a list"),
    ('["SECRET-abc123"]', "SECRET-abc123", "top level must be a JSON object, not a list"),
    # A password in a store-options key is masked where the error names the entry.
    ('{"store-options": {"http://u:SECRET-urlpw@h/s": {"error-retry": "x"}}}', "SECRET-urlpw",
     "store-options['http://u:***@h/s'].error-retry must be an integer, not \"x\""),
]


@pytest.mark.parametrize("text, secret, message", BAD_VALUES)
@pytest.mark.parametrize("command", [["config"], ["list-chunks", "x.caibx"]])
def test_wrongly_typed_secret_is_named_never_echoed(
    env: dict[str, str], tmp_path: os.PathLike[str], text: str, secret: str,
    message: str, command: list[str],
) -> None:
    path = write_config(tmp_path, text)
    proc = run(env, "--config", path, *command)
    one_error(proc, 2, path, message)
    assert_no_secret(proc, secret)
    verbose = run(env, "-v", "--config", path, *command)  # the traceback, too, holds no value
    assert verbose.returncode == 2 and message in verbose.stderr.decode()
    assert_no_secret(verbose, secret)


def test_non_secret_values_are_still_shown_in_errors(
    env: dict[str, str], tmp_path: os.PathLike[str]
) -> None:
    path = write_config(tmp_path, '{"store-options": {"/s": {"timeout": "soon"}}}')
    one_error(run(env, "--config", path, "config"), 2, 'timeout must be a duration', '"soon"')


def test_deeply_nested_config_is_one_line_not_a_recursion_error(
    env: dict[str, str], tmp_path: os.PathLike[str]
) -> None:
    for depth in (100, 5_000):
        text = '{"oci-credentials": ' + "[" * depth + "]" * depth + "}"
        path = write_config(tmp_path, text, f"deep{depth}.json")
        one_error(run(env, "--config", path, "config"), 2, path, "nested more than")


def test_repr_of_the_loaded_config_holds_no_secret(tmp_path: os.PathLike[str]) -> None:
    config = load_config(write_config(tmp_path, config_with_secrets()))
    options = config.store_options_for("s3+http://127.0.0.1:9000/bucket")
    texts = [repr(config), str(config), repr(options), repr(options.s3_credentials),
             repr(config.store_options_for(HTTP_STORE)), config.dumps(redact=True)]
    for text in texts:
        for secret in SECRETS.values():
            if secret != SECRETS["url-password"]:  # store-options keys are locations, kept in repr
                assert secret not in text, text
    assert isinstance(config, Config) and isinstance(options, StoreOptions)
    assert SECRETS["http-auth"] in config.dumps()  # the unredacted form is the file's


def test_http_auth_mismatch_against_a_real_server_leaks_neither_value(
    env: dict[str, str], tmp_path: os.PathLike[str], made: tuple[str, str, bytes],
) -> None:
    store, index, _ = made
    server_secret, client_secret = "Bearer SECRET-server-777", "Bearer SECRET-client-888"
    request_log = os.path.join(tmp_path, "requests.log")
    server = Server({**env, "DESYNC_HTTP_AUTH": server_secret}, "-s", store, "--log", request_log)
    try:
        url = f"http://carol:SECRET-urlpw@127.0.0.1:{server.port}/"
        options = {url: {"http-auth": client_secret, "error-retry": 1}}
        config = write_config(tmp_path, {"store-options": options})
        out = os.path.join(tmp_path, "out")
        proc = run(env, "-v", "--config", config, "extract", "-s", url, index, out)
        assert proc.returncode == 1 and b"401" in proc.stderr, proc.stderr
        assert_no_secret(proc, server_secret, client_secret)
        assert not os.path.exists(out)
        # The right value gets through (the test's own check that the value is used at all).
        good = write_config(tmp_path, {"store-options": {url: {"http-auth": server_secret}}}, "good.json")
        ok(env, "--config", good, "extract", "-s", url, index, out)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.stderr is not None
        logged = server.proc.stderr.read().decode(errors="replace")  # -v: every request was logged
    finally:
        assert server.stop() == 0
    logged += read(request_log).decode(errors="replace")
    assert " 401 " in logged and " 200 " in logged, logged
    assert "SECRET" not in logged, logged
