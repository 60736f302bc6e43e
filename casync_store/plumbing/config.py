"""desync's configuration file: loading, validating, matching store options.

The file is JSON at ``$HOME/.config/desync/config.json`` (or a path given with
``--config``) and uses desync's keys, so one file serves both tools:
``http-timeout`` and ``http-error-retry`` (older desync's global HTTP
defaults), ``s3-credentials`` keyed by ``scheme://host``, and
``store-options`` keyed by a store location or a glob pattern over locations.
Durations are nanoseconds as desync writes them (strings such as ``"30s"``
are accepted too) and are seconds (floats) in Python. Every type error is
reported as one :class:`ConfigError` naming the file, the key and the
value's JSON type; a value is shown only for keys known to hold no secret.
Secrets (``http-auth``, ``http-cookie``, S3 keys and any key named like a
password or token) never reach a message, a log or ``repr``: the printed
configuration (:meth:`Config.dumps` with ``redact=True``) shows
:data:`REDACTED` in their place, and passwords in locations are masked
(:func:`~casync_store.plumbing.locparse.redact`, the one rule every message uses).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

from casync_format.encrypt import ChunkCipher, make_cipher
from casync_format.errors import ParameterError

from .locparse import Location, redact, split_url

__all__ = [
    "ConfigError",
    "StoreOptions",
    "S3Credentials",
    "Config",
    "default_config_path",
    "load_config",
    "location_match",
    "parse_duration",
    "split_url",
    "is_secret_key",
    "REDACTED",
    "DEFAULT_ERROR_RETRY",
    "DEFAULT_ERROR_RETRY_BASE_INTERVAL",
]

log = logging.getLogger(__name__)

DEFAULT_ERROR_RETRY = 3
DEFAULT_ERROR_RETRY_BASE_INTERVAL = 0.5  # seconds
_NS = 1_000_000_000
#: Deepest nesting of lists and objects a config file may have (desync's use 3).
MAX_DEPTH = 32
_TOO_DEEP = object()


class ConfigError(ParameterError):
    """The config file cannot be read or holds a value of the wrong type."""


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Parse a Go-style duration (``"500ms"``, ``"1m30s"``, ``"-1s"``, ``"0"``) into seconds."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ParameterError(f"invalid duration {text!r}: use e.g. 500ms, 30s, 1m30s")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s:
        raise ParameterError(f"invalid duration {text!r}: use e.g. 500ms, 30s, 1m30s")
    return sign * total


def _seconds_to_ns(seconds: float) -> int:
    return round(seconds * _NS)


# --------------------------------------------------------------------------- secrets

#: What ``pycasync config`` prints instead of a secret's value.
REDACTED = "***"

#: Keys that hold a secret, in desync's files (store-options, s3-credentials).
_SECRET_KEYS = frozenset(
    {"http-auth", "http-cookie", "encryption-key", "access-key", "secret-key", "session-token"})
#: Keys pycasync does not model but that are named like a secret (desync's or
#: another tool's: encryption-password, oci-credentials passwords, tokens).
_SECRET_NAME = re.compile(r"auth|cookie|secret|token|passw|passphrase|private|api-?key", re.IGNORECASE)
#: Keys whose values hold no secret and are shown in type errors to help fix them.
_SHOWN_KEYS = frozenset({
    "timeout", "error-retry", "error-retry-base-interval", "trust-insecure", "ca-cert", "client-cert",
    "client-key", "skip-verify", "uncompressed", "encryption", "encryption-algorithm", "n", "http-timeout",
    "http-error-retry",
    "aws-credentials-file", "aws-profile", "aws-region",
})


def is_secret_key(key: str) -> bool:
    """Whether a config key holds a secret (by desync's name or a secret-like name)."""
    return key in _SECRET_KEYS or _SECRET_NAME.search(key) is not None


def _json_type(value: object) -> str:
    """The JSON type of ``value`` as a message names it (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


#: Top-level maps keyed by store locations rather than by option names.
_LOCATION_MAPS = ("store-options", "s3-credentials")


def _redacted(data: object) -> object:
    """A copy of ``data`` with the value of every secret-named key as :data:`REDACTED`."""
    if isinstance(data, list):
        return [_redacted(v) for v in data]
    if not isinstance(data, dict):
        return data
    return {k: _shown(k, v) for k, v in data.items()}


def _shown(key: str, value: object) -> object:
    """``value`` of ``key`` as shown: :data:`REDACTED` for a (non-empty) secret."""
    return REDACTED if is_secret_key(key) and value not in ("", None) else _redacted(value)


def _redacted_config(data: dict[str, Any]) -> dict[str, Any]:
    """The config file's JSON as shown: secrets as :data:`REDACTED`, passwords in locations masked.

    ``store-options`` and ``s3-credentials`` are keyed by locations, never
    taken for option names (``https://u:secret@host`` is not a secret's name).
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _LOCATION_MAPS and isinstance(value, dict):
            out[key] = {redact(loc): _redacted(entry) for loc, entry in value.items()}
        else:
            out[key] = _shown(key, value)
    return out


# --------------------------------------------------------------------------- value checks


class _Reader:
    """Type-checks values of one JSON object, naming the file and key on error."""

    def __init__(self, path: str, where: str, obj: object) -> None:
        self.path = path
        self.where = where
        if not isinstance(obj, dict):
            self.fail("", "a JSON object", obj)
        self.obj: dict[str, Any] = obj  # type: ignore[assignment]

    def fail(self, key: str, expected: str, value: object) -> NoReturn:
        """Name the key and the value's type; show the value only for a key that holds no secret."""
        name = f"{self.where}.{key}" if self.where and key else (self.where or key or "top level")
        scalar = value is None or isinstance(value, (bool, int, float, str))
        got = json.dumps(value) if key in _SHOWN_KEYS and scalar else _json_type(value)
        raise ConfigError(f"config file {self.path}: {name} must be {expected}, not {got}")

    def has(self, key: str) -> bool:
        return key in self.obj and self.obj[key] is not None

    def string(self, key: str) -> str:
        value = self.obj[key]
        if not isinstance(value, str):
            self.fail(key, "a string", value)
        return value

    def boolean(self, key: str) -> bool:
        value = self.obj[key]
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def integer(self, key: str) -> int:
        value = self.obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "an integer", value)
        return value

    def duration(self, key: str) -> float:
        """A duration in nanoseconds (desync's form) or a string like "30s"; seconds."""
        value = self.obj[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.fail(key, "a duration (nanoseconds or a string like \"30s\")", value)
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ParameterError:
                self.fail(key, "a duration (nanoseconds or a string like \"30s\")", value)
        return float(value) / _NS

    def unknown(self, known: set[str]) -> None:
        for key in self.obj:
            if key not in known:
                log.debug("config file %s: ignoring unknown key %s", self.path, f"{self.where}.{key}")


# --------------------------------------------------------------------------- store options


@dataclass(frozen=True)
class StoreOptions:
    """Settings for one store; durations are seconds, ``timeout=None`` = the backend's default."""

    timeout: float | None = None
    error_retry: int = DEFAULT_ERROR_RETRY
    error_retry_base_interval: float = DEFAULT_ERROR_RETRY_BASE_INTERVAL
    trust_insecure: bool = False
    ca_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    skip_verify: bool = False
    uncompressed: bool = False
    #: Secrets: kept out of ``repr`` so a logged StoreOptions cannot leak them.
    http_auth: str = field(default="", repr=False)
    http_cookie: str = field(default="", repr=False)
    #: desync's chunk encryption (:func:`casync_format.encrypt.make_cipher`); the key is hex.
    encryption: bool = False
    encryption_key: str = field(default="", repr=False)
    encryption_algorithm: str = ""
    #: Parallel connections/sessions a network store may open (``-n``); 0 = the
    #: backend's default. Set from the command line, never read from or written to the file.
    concurrency: int = 0
    #: The ``s3-credentials`` entry for an ``s3+http(s)://`` store, filled by
    #: :meth:`Config.store_options_for`; never part of the ``store-options`` JSON.
    s3_credentials: S3Credentials | None = field(default=None, repr=False, compare=False)

    @property
    def encryption_configured(self) -> bool:
        """Whether any encryption option is set (valid or not), as desync's EncryptionConfigured."""
        return self.encryption or bool(self.encryption_key or self.encryption_algorithm)

    def with_env_key(self) -> StoreOptions:
        """The key from ``DESYNC_ENCRYPTION_KEY`` if encryption is on and has no key (never enables it)."""
        if self.encryption and not self.encryption_key:
            return self.replace(encryption_key=os.environ.get("DESYNC_ENCRYPTION_KEY", ""))
        return self

    def chunk_cipher(self) -> ChunkCipher | None:
        """The cipher these options ask for (None: unencrypted); ParameterError for a bad combination."""
        return make_cipher(self.encryption, self.encryption_key, self.encryption_algorithm)

    def replace(self, **changes: Any) -> StoreOptions:
        """A copy with some fields changed (command-line flags over the config)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The options under desync's JSON keys (durations in nanoseconds)."""
        out: dict[str, Any] = {}
        if self.timeout is not None:
            out["timeout"] = _seconds_to_ns(self.timeout)
        out["error-retry"] = self.error_retry
        out["error-retry-base-interval"] = _seconds_to_ns(self.error_retry_base_interval)
        for name in ("trust_insecure", "ca_cert", "client_cert", "client_key", "skip_verify",
                     "http_auth", "http_cookie", "encryption", "encryption_key", "encryption_algorithm"):
            value = getattr(self, name)
            if value:
                out[name.replace("_", "-")] = value
        out["uncompressed"] = self.uncompressed
        return out

    @classmethod
    def from_json(cls, reader: _Reader, base: StoreOptions) -> StoreOptions:
        """Parse one ``store-options`` entry over ``base`` (the defaults)."""
        values: dict[str, Any] = {}
        if reader.has("timeout"):
            values["timeout"] = reader.duration("timeout")
        if reader.has("error-retry"):
            values["error_retry"] = reader.integer("error-retry")
        if reader.has("error-retry-base-interval"):
            values["error_retry_base_interval"] = reader.duration("error-retry-base-interval")
        for key in ("trust-insecure", "skip-verify", "uncompressed", "encryption"):
            if reader.has(key):
                values[key.replace("-", "_")] = reader.boolean(key)
        for key in ("ca-cert", "client-cert", "client-key", "http-auth", "http-cookie", "encryption-key",
                    "encryption-algorithm"):
            if reader.has(key):
                values[key.replace("-", "_")] = reader.string(key)
        reader.unknown(_STORE_KEYS)
        return base.replace(**values)


_STORE_KEYS = {
    "timeout", "error-retry", "error-retry-base-interval", "trust-insecure", "ca-cert",
    "client-cert", "client-key", "skip-verify", "uncompressed", "http-auth", "http-cookie",
    "encryption", "encryption-key", "encryption-algorithm", "n",
}


@dataclass(frozen=True)
class S3Credentials:
    """Credentials for one S3 endpoint (``s3-credentials`` entry, keyed by scheme://host[:port]).

    The keys are kept out of ``repr``, so a logged entry cannot leak them.
    """

    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    aws_credentials_file: str = ""
    aws_profile: str = ""
    aws_region: str = ""

    def to_json(self) -> dict[str, str]:
        """The non-empty fields under desync's JSON keys."""
        return {
            f.name.replace("_", "-"): getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name)
        }

    @classmethod
    def from_json(cls, reader: _Reader) -> S3Credentials:
        """Parse one ``s3-credentials`` entry."""
        values = {}
        for f in dataclasses.fields(cls):
            key = f.name.replace("_", "-")
            if reader.has(key):
                values[f.name] = reader.string(key)
        reader.unknown({f.name.replace("_", "-") for f in dataclasses.fields(cls)})
        return cls(**values)


# --------------------------------------------------------------------------- location matching


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a Go ``path.Match`` pattern: ``*`` and ``?`` never match ``/``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("^"):
                    body = "^" + body[1:].replace("\\", "\\\\")
                else:
                    body = body.replace("\\", "\\\\").replace("^", "\\^")
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def location_match(pattern: str, location: str) -> bool:
    """Whether a ``store-options`` key matches a store location, as desync decides.

    URLs are compared as strings without a trailing ``/``; paths are made
    absolute first. ``*`` and ``?`` match within one path component.
    """
    if Location.parse(location).is_url:
        pat, loc = pattern.rstrip("/") or pattern, location.rstrip("/") or location
    else:
        pat, loc = os.path.abspath(pattern), os.path.abspath(location)
    try:
        return _glob_regex(pat).match(loc) is not None
    except re.error:
        return False


# --------------------------------------------------------------------------- the config


def default_config_path() -> str:
    """``$HOME/.config/desync/config.json``."""
    home = os.environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".config", "desync", "config.json")


@dataclass
class Config:
    """The effective configuration: file values over defaults."""

    path: str = field(default_factory=default_config_path)
    http_timeout: float | None = None
    http_error_retry: int | None = None
    s3_credentials: dict[str, S3Credentials] = field(default_factory=dict)
    store_options: dict[str, StoreOptions] = field(default_factory=dict)
    #: The file's JSON as read: keys pycasync does not model (desync's
    #: oci-credentials, encryption keys, ...) are written back unchanged.
    #: Out of ``repr``: it holds the secrets as the file does.
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def default_store_options(self) -> StoreOptions:
        """Options for a store no ``store-options`` entry matches."""
        base = StoreOptions(timeout=self.http_timeout)
        if self.http_error_retry is not None:
            base = base.replace(error_retry=self.http_error_retry)
        return base

    def store_options_for(self, location: str) -> StoreOptions:
        """The options of the one entry matching ``location`` (or the defaults).

        More than one matching entry is an error, as in desync. For an
        ``s3+http(s)://`` location the options also carry its
        ``s3-credentials`` entry (:meth:`s3_credentials_for`).
        """
        found = [key for key in self.store_options if location_match(key, location)]
        if len(found) > 1:
            raise ConfigError(
                f"config file {self.path}: several store-options entries match {redact(location)!r}: "
                + ", ".join(repr(redact(k)) for k in found)
            )
        options = self.store_options[found[0]] if found else self.default_store_options()
        options = options.with_env_key()
        if Location.parse(location).scheme in ("s3+http", "s3+https"):
            options = options.replace(s3_credentials=self.s3_credentials_for(location))
        return options

    def s3_credentials_for(self, location: str) -> S3Credentials | None:
        """The ``s3-credentials`` entry for an ``s3+http(s)://host[:port]/...`` location, if any.

        Entries are keyed by the location's scheme without ``s3+`` and its
        host and port (``http://127.0.0.1:9000``). An exact key wins;
        otherwise keys are glob patterns matched as ``store-options`` keys are
        (:func:`location_match`: Go's ``path.Match``, so ``*`` and ``?`` never
        match ``/``; ``https://*.example.com``, ``http://127.0.0.1:*``). More
        than one matching pattern is a :class:`ConfigError`.
        """
        loc = Location.parse(location)
        key = f"{loc.scheme.removeprefix('s3+')}://{loc.hostport}"
        if key in self.s3_credentials:
            return self.s3_credentials[key]
        found = [k for k in self.s3_credentials if location_match(k, key)]
        if len(found) > 1:
            raise ConfigError(
                f"config file {self.path}: several s3-credentials entries match {key!r}: "
                + ", ".join(repr(k) for k in found)
            )
        return self.s3_credentials[found[0]] if found else None

    def to_json(self) -> dict[str, Any]:
        """The configuration under desync's JSON keys, unknown keys of the file kept."""
        out: dict[str, Any] = copy.deepcopy(self.raw)
        if self.http_timeout is not None:
            out["http-timeout"] = _seconds_to_ns(self.http_timeout)
        if self.http_error_retry is not None:
            out["http-error-retry"] = self.http_error_retry
        out["s3-credentials"] = _merged(out.get("s3-credentials"), self.s3_credentials)
        out["store-options"] = _merged(out.get("store-options"), self.store_options)
        return out

    def dumps(self, redact: bool = False) -> str:
        """The configuration as indented JSON text (with a final newline).

        ``redact``: every secret as :data:`REDACTED` and passwords in
        locations masked, for showing; without it the real values, for
        writing the file back.
        """
        data = self.to_json()
        return json.dumps(_redacted_config(data) if redact else data, indent=2, sort_keys=False) + "\n"


def _merged(raw: object, entries: dict[str, Any]) -> dict[str, Any]:
    """Each entry's JSON over the file's own entry, so keys we do not model survive."""
    raw_entries = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {}
    for key, value in entries.items():
        old = raw_entries.get(key)
        out[key] = {**(old if isinstance(old, dict) else {}), **value.to_json()}
    return out


def _parse(path: str, data: object) -> Config:
    top = _Reader(path, "", data)
    config = Config(path=path, raw=copy.deepcopy(data) if isinstance(data, dict) else {})
    if top.has("http-timeout"):
        config.http_timeout = top.duration("http-timeout")
    if top.has("http-error-retry"):
        config.http_error_retry = top.integer("http-error-retry")
    if top.has("s3-credentials"):
        creds = _Reader(path, "s3-credentials", top.obj["s3-credentials"])
        for key, entry in creds.obj.items():
            config.s3_credentials[key] = S3Credentials.from_json(
                _Reader(path, f"s3-credentials[{redact(key)!r}]", entry)
            )
    if top.has("store-options"):
        stores = _Reader(path, "store-options", top.obj["store-options"])
        base = config.default_store_options()
        for key, entry in stores.obj.items():
            config.store_options[key] = StoreOptions.from_json(
                _Reader(path, f"store-options[{redact(key)!r}]", entry), base
            )
    top.unknown({"http-timeout", "http-error-retry", "s3-credentials", "store-options", "oci-credentials"})
    return config


def load_config(path: str | None = None, missing_ok: bool = False) -> Config:
    """Read the config file; ``None`` = the default file, which may be absent.

    An explicitly named file must exist unless ``missing_ok`` (then the
    defaults are returned, e.g. to write a new file). Raises :class:`ConfigError`.
    """
    explicit = path is not None and not missing_ok
    if path is None:
        path = default_config_path()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if not explicit:
            return Config(path=path)
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        data = _TOO_DEEP
    if data is _TOO_DEEP or _depth(data) > MAX_DEPTH:
        # Copying, showing and writing the JSON back recurse: refuse what they could not handle.
        raise ConfigError(f"config file {path}: JSON nested more than {MAX_DEPTH} levels deep")
    return _parse(path, data)


def _depth(data: object) -> int:
    """How deeply lists and objects nest in ``data`` (iteratively: ``data`` may be hostile)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        value, level = todo.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, level)
            todo.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest
