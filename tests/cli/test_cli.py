"""Tests of the pycasync command line, run as a subprocess from the checkout.

Every command's help; usage errors (exit 2) and failures (exit 1) as exactly
one ``pycasync: error: ...`` line without a traceback; missing and damaged
inputs leave no output behind; desync's old single-dash flags and global flags
after the command; the config file (``config -w``, invalid files); and each
command end to end on a local store.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

import pycasync
from tests.support.cli import CLI, ROOT, chunk_files, data, ok, one_error, read, run

COMMANDS = [
    "make", "extract", "list-chunks", "info", "chunk", "verify", "chop", "cache", "prune", "config",
    "pull", "push", "chunk-server", "tar", "untar", "mtree", "index-server", "mount-index", "upgrade-s3",
]


# --------------------------------------------------------------------------- help and version


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(env: dict[str, str], command: str) -> None:
    out = ok(env, command, "--help").stdout.decode()
    assert out.startswith(f"usage: pycasync {command}")
    assert "examples:" in out and "--config" in out and "--verbose" in out
    assert len(out.splitlines()) > 8


def test_top_help_lists_commands(env: dict[str, str]) -> None:
    out = ok(env, "--help").stdout.decode()
    for command in COMMANDS:
        assert command in out


def test_version(env: dict[str, str]) -> None:
    from casync_format import __version__

    out = ok(env, "--version").stdout.decode()
    assert __version__ in out and "chunker: " in out and "zstd: " in out


# --------------------------------------------------------------------------- usage errors (2)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["make", "--no-such-flag", "a", "b"], "--no-such-flag"),
        (["make", "a"], "required"),
        (["frobnicate"], "frobnicate"),
        ([], "COMMAND"),
        (["make", "-m", "64:16:256", "x.caibx", "README.md"], "64:16:256"),
        (["make", "-m", "banana", "x.caibx", "README.md"], "banana"),
        (["--digest", "md5", "list-chunks", "x"], "md5"),
        (["list-chunks", "x", "--digest", "sha1"], "sha1"),
        (["extract", "x.caibx", "out"], "no store"),
        (["extract", "-n", "0", "-s", "s", "x", "y"], "at least 1"),
        (["extract", "-s", "s", "same", "same"], "same file"),
        (["make", "-s", "-", "x.caibx", "README.md"], "'-'"),
        (["verify"], "no store"),
        (["prune", "x.caibx"], "no store"),
        (["cache", "-s", "s", "x.caibx"], "-c"),
        (["list-chunks", "--client-cert", "c", "x"], "together"),
        (["extract", "-ignore", "a", "-s", "s", "x", "y"], "-ignore"),
        (["make", "-seed", "a", "x", "y"], "-seed"),
        (["info", "-b", "soon", "x"], "soon"),
    ],
)
def test_usage_errors(env: dict[str, str], args: list[str], fragment: str) -> None:
    one_error(run(env, *args), 2, fragment)


# --------------------------------------------------------------------------- failures (1)


def test_make_missing_input_leaves_nothing(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    missing = os.path.join(tmp_path, "no-such-file")
    index, store = os.path.join(tmp_path, "x.caibx"), os.path.join(tmp_path, "store")
    one_error(run(env, "make", "-s", store, index, missing), 1, missing)
    assert not os.path.exists(index)
    assert chunk_files(store) == []
    assert set(os.listdir(tmp_path)) <= {"home", "store"}


def test_extract_missing_index_leaves_nothing(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    missing, out = os.path.join(tmp_path, "none.caibx"), os.path.join(tmp_path, "out")
    one_error(run(env, "extract", "-s", str(tmp_path), missing, out), 1, missing)
    assert sorted(os.listdir(tmp_path)) == ["home"]


@pytest.mark.parametrize("command", ["extract", "info", "list-chunks", "chop", "cache", "prune"])
def test_corrupt_index(env: dict[str, str], tmp_path: os.PathLike[str], command: str) -> None:
    bad = os.path.join(tmp_path, "bad.caibx")
    with open(bad, "wb") as f:
        f.write(b"this is not an index" * 10)
    store, out = os.path.join(tmp_path, "store"), os.path.join(tmp_path, "out")
    os.mkdir(store)
    args = {
        "extract": ["extract", "-s", store, bad, out],
        "info": ["info", bad],
        "list-chunks": ["list-chunks", bad],
        "chop": ["chop", "-s", store, bad, bad],
        "cache": ["cache", "-s", store, "-c", out, bad],
        "prune": ["prune", "-y", "-s", store, bad],
    }[command]
    one_error(run(env, *args), 1, bad)
    assert not os.path.exists(out)


@pytest.mark.parametrize("command", ["extract", "cache"])
def test_missing_read_store_is_named(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str], command: str
) -> None:
    _, index, _ = made
    missing, out = os.path.join(tmp_path, "no-such-store"), os.path.join(tmp_path, "out")
    args = {
        "extract": ["extract", "-s", missing, index, out],
        "cache": ["cache", "-s", missing, "-c", out, index],
    }[command]
    one_error(run(env, *args), 1, f"{missing} (no such directory)")
    assert not os.path.exists(out)


def test_truncated_index(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]
) -> None:
    store, index, _ = made
    cut = os.path.join(tmp_path, "cut.caibx")
    with open(cut, "wb") as f:
        f.write(read(index)[:-20])
    out = os.path.join(tmp_path, "out")
    one_error(run(env, "extract", "-s", store, cut, out), 1, cut)
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "location, fragment",
    [("ftp://host/store", "unknown location scheme 'ftp'"), ("gopher://x/y", "'gopher'")],
)
def test_unknown_scheme(
    env: dict[str, str],
    made: tuple[str, str, bytes],
    tmp_path: os.PathLike[str],
    location: str,
    fragment: str,
) -> None:
    _, index, _ = made
    out = os.path.join(tmp_path, "never")
    one_error(run(env, "extract", "-s", location, index, out), 1, fragment)
    assert not os.path.exists(out)


def test_unsupported_scheme(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]
) -> None:
    _, index, _ = made
    proc = run(env, "extract", "-s", "gs://bucket/store", index, os.path.join(tmp_path, "o"))
    one_error(proc, 1, "'gs' is not supported")


def test_missing_chunk_fails_and_keeps_no_output(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]
) -> None:
    store, index, _ = made
    victim = next(os.path.join(d, n) for d, _, names in os.walk(store) for n in names)
    os.unlink(victim)
    out = os.path.join(tmp_path, "out")
    one_error(run(env, "extract", "-s", store, index, out), 1, os.path.basename(victim)[:64])
    assert not os.path.exists(out)


def test_verbose_shows_traceback(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    missing = os.path.join(tmp_path, "none.caibx")
    proc = run(env, "list-chunks", missing, "-v")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "Traceback" in err and err.splitlines()[-1].startswith("pycasync: error: ")


def test_interrupt_and_internal_error_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(ctx: object) -> int:
        raise KeyboardInterrupt

    def broken(ctx: object) -> int:
        raise ZeroDivisionError("oops")

    monkeypatch.setenv("HOME", "/nonexistent-home-for-test")
    monkeypatch.setitem(pycasync._COMMANDS, "config", interrupted)
    assert pycasync.main(["config"]) == 130
    assert capsys.readouterr().err == ""
    monkeypatch.setitem(pycasync._COMMANDS, "config", broken)
    assert pycasync.main(["config"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (ZeroDivisionError): oops" in err


# --------------------------------------------------------------------------- flag spellings


def test_old_single_dash_flags(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]
) -> None:
    store, index, content = made
    info = json.loads(ok(env, "info", "-j", index).stdout)
    assert info["total"] > 1
    ok(env, "list-chunks", "-clientCert", "c.pem", "-clientKey", "k.pem", index)
    out = os.path.join(tmp_path, "out")
    stats = ok(env, "extract", "-store", store, "-stats", index, out).stdout
    assert read(out) == content and json.loads(stats)
    ok(env, "extract", "-s=" + store, "-cache=" + os.path.join(tmp_path, "cache"), index, out)
    assert chunk_files(os.path.join(tmp_path, "cache"))
    assert pycasync.rewrite_argv(["info", "--", "-clientCert"]) == ["info", "--", "-clientCert"]
    assert pycasync.rewrite_argv(["make", "-s", "-store", "i", "f"]) == ["make", "-s", "-store", "i", "f"]


def test_global_flags_after_command(
    env: dict[str, str], blob: tuple[str, bytes], tmp_path: os.PathLike[str]
) -> None:
    path, _ = blob
    before = ok(env, "--digest", "sha256", "make", "-", path).stdout
    after = ok(env, "make", "-", path, "--digest", "sha256", "-v").stdout
    default = ok(env, "make", "-", path).stdout
    assert before == after != default
    config = os.path.join(tmp_path, "c.json")
    with open(config, "w") as f:
        json.dump({"store-options": {"/x": {"skip-verify": True}}}, f)
    shown = json.loads(ok(env, "config", "--config", config).stdout)
    assert shown["store-options"]["/x"]["skip-verify"] is True


def test_store_list_with_commas(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]
) -> None:
    store, index, content = made
    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-s", os.path.join(tmp_path, "empty") + "," + store, index, out)
    assert read(out) == content


# --------------------------------------------------------------------------- config


def test_config_write_then_show(env: dict[str, str]) -> None:
    path = os.path.join(env["HOME"], ".config", "desync", "config.json")
    assert json.loads(ok(env, "config").stdout) == {"s3-credentials": {}, "store-options": {}}
    assert path in ok(env, "config", "-w").stdout.decode()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(read(path)) == json.loads(ok(env, "config").stdout)
    assert [n for n in os.listdir(os.path.dirname(path)) if n != "config.json"] == []


def test_config_write_to_named_file(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "sub", "desync.json")
    one_error(run(env, "--config", path, "config"), 2, path)  # a named file must exist to be read...
    ok(env, "--config", path, "config", "-w")  # ...but `config -w` may create it
    assert json.loads(read(path)) == {"s3-credentials": {}, "store-options": {}}
    with open(path, "w") as f:
        json.dump({"http-timeout": 5_000_000_000, "store-options": {"/s/*": {"error-retry": 9}}}, f)
    ok(env, "--config", path, "config", "-w")
    written = json.loads(read(path))
    assert written["http-timeout"] == 5_000_000_000 and written["store-options"]["/s/*"]["error-retry"] == 9


@pytest.mark.parametrize(
    "text, fragment",
    [("{oops", "invalid JSON"), ('{"store-options": {"/s": {"skip-verify": 1}}}', "skip-verify")],
)
@pytest.mark.parametrize("command", [["config"], ["list-chunks", "x.caibx"], ["chunk", "README.md"]])
def test_invalid_config_file(env: dict[str, str], text: str, fragment: str, command: list[str]) -> None:
    path = os.path.join(env["HOME"], ".config", "desync", "config.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(text)
    one_error(run(env, *command), 2, path, fragment)


def test_config_skip_verify_applies(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]
) -> None:
    """A store the config marks skip-verify serves a same-size chunk whose content does not match its id."""
    from casync_format.chunk import encode
    from casync_store.stores.indexio import open_index

    store, index, content = made
    with open_index(index) as ix:
        item = ix[0]
    forged = data(item.size, 77)
    with open(os.path.join(store, item.id.hex()[:4], item.id.hex() + ".cacnk"), "wb") as f:
        f.write(encode(forged))
    out = os.path.join(tmp_path, "out")
    one_error(run(env, "extract", "-s", store, index, out), 1, item.id.hex())
    assert not os.path.exists(out)
    config = os.path.join(tmp_path, "c.json")
    with open(config, "w") as f:
        json.dump({"store-options": {store + "/": {"skip-verify": True}}}, f)
    ok(env, "--config", config, "extract", "-s", store, index, out)
    assert read(out) == forged + content[item.size :]


# --------------------------------------------------------------------------- commands end to end


def test_make_extract_round_trip(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]
) -> None:
    store, index, content = made
    out = os.path.join(tmp_path, "out")
    stats = json.loads(ok(env, "extract", "-s", store, index, out, "--print-stats").stdout)
    assert read(out) == content and stats
    via_stdin = ok(env, "extract", "-s", store, "-", "-", input=read(index)).stdout
    assert via_stdin == content
    ok(env, "extract", "-k", "-s", store, index, out)
    assert read(out) == content


def test_make_stats_and_stdio(
    env: dict[str, str], blob: tuple[str, bytes], tmp_path: os.PathLike[str]
) -> None:
    path, content = blob
    store, index = os.path.join(tmp_path, "s"), os.path.join(tmp_path, "x.caibx")
    proc = ok(env, "make", "--print-stats", "-s", store, "-m", "4:16:64", "--compression", "xz", index, path)
    assert proc.stdout == b"" and json.loads(proc.stderr)
    to_stdout = ok(env, "make", "-m", "4:16:64", "-", path).stdout
    from_stdin = ok(env, "make", "-m", "4:16:64", "-", "-", input=content).stdout
    assert to_stdout == from_stdin == read(index)
    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-s", "file://" + store, index, out)
    assert read(out) == content


def test_info_json_and_plain(env: dict[str, str], made: tuple[str, str, bytes]) -> None:
    store, index, content = made
    info = json.loads(ok(env, "info", "-s", store, index).stdout)
    for key in ("total", "unique", "in-store", "size", "chunk-size-min", "chunk-size-avg", "chunk-size-max"):
        assert isinstance(info[key], int), key
    assert info["size"] == len(content) and info["in-store"] == info["unique"] <= info["total"]
    assert (info["chunk-size-min"], info["chunk-size-avg"], info["chunk-size-max"]) == (4096, 16384, 65536)
    assert json.loads(ok(env, "info", "--format", "json", index).stdout)["size"] == len(content)
    plain = ok(env, "info", "-f", "plain", index).stdout.decode()
    assert f"Blob size: {len(content)}" in plain


def test_list_chunks_and_chunk(
    env: dict[str, str], made: tuple[str, str, bytes], blob: tuple[str, bytes]
) -> None:
    _, index, content = made
    ids = ok(env, "list-chunks", index).stdout.decode().split("\n")
    assert ids[-1] == "" and all(len(i) == 64 for i in ids[:-1])
    lines = ok(env, "chunk", "-m", "4:16:64", blob[0]).stdout.decode().splitlines()
    rows = [line.split("\t") for line in lines]
    assert [r[2] for r in rows] == ids[:-1]
    assert sum(int(r[1]) for r in rows) == len(content) and rows[0][0] == "0"
    start = int(rows[2][0])
    later = ok(env, "chunk", "-m", "4:16:64", "-S", str(start), blob[0]).stdout.decode().splitlines()
    assert later[0].split("\t")[0] == str(start)


def test_verify_and_repair(env: dict[str, str], made: tuple[str, str, bytes]) -> None:
    store, _, _ = made
    ok(env, "verify", "-s", store)
    victim = next(os.path.join(d, n) for d, _, names in os.walk(store) for n in names)
    with open(victim, "r+b") as f:
        f.seek(5)
        f.write(b"\0garbage\0")
    proc = run(env, "verify", "-s", store)
    assert proc.returncode == 1
    assert os.path.basename(victim)[:64] in proc.stderr.decode()
    assert proc.stderr.decode().splitlines()[-1].startswith("pycasync: error: 1 invalid chunk")
    ok(env, "verify", "-r", "-s", store)
    assert not os.path.exists(victim)
    ok(env, "verify", "-s", store)


def test_chop_and_cache(
    env: dict[str, str], made: tuple[str, str, bytes], blob: tuple[str, bytes], tmp_path: os.PathLike[str]
) -> None:
    store, index, content = made
    chopped = os.path.join(tmp_path, "chopped")
    os.mkdir(chopped)  # chop needs an existing store, as desync's
    ok(env, "chop", "-s", chopped, index, blob[0])
    assert chunk_files(chopped) == chunk_files(store)
    copy = os.path.join(tmp_path, "copy")
    ok(env, "cache", "-s", chopped, "-c", copy, index)
    assert chunk_files(copy) == chunk_files(store)
    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-s", copy, index, out)
    assert read(out) == content


def test_prune(env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]) -> None:
    store, index, _ = made
    other = os.path.join(tmp_path, "other.bin")
    with open(other, "wb") as f:
        f.write(data(150_000, 9))
    other_index = os.path.join(tmp_path, "other.caibx")
    ok(env, "make", "-s", store, "-m", "4:16:64", other_index, other)
    before = chunk_files(store)
    keep = set(ok(env, "list-chunks", index).stdout.decode().split())
    ok(env, "prune", "-s", store, index, input=b"n\n")
    assert chunk_files(store) == before
    proc = run(env, "prune", "-s", store, index, input=b"")  # no answer: the question, then one error
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines()[-1].startswith("pycasync: error: no answer")
    assert chunk_files(store) == before
    ok(env, "prune", "-s", store, index, input=b"maybe\ny\n")
    assert {n[:64] for n in chunk_files(store)} == keep
    ok(env, "make", "-s", store, "-m", "4:16:64", other_index, other)
    ok(env, "prune", "-y", "-s", store, other_index, index)
    ok(env, "prune", "-y", "-s", store, "-", input=read(index))
    assert {n[:64] for n in chunk_files(store)} == keep


def test_python_dash_m(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pycasync", "--version"], env=env, capture_output=True, cwd=ROOT
    )
    assert proc.returncode == 0 and proc.stdout.startswith(b"pycasync ")


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="the example reads /usr/bin/python3")
def test_readme_library_example_runs(tmp_path: os.PathLike[str]) -> None:
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("/tmp/", f"{tmp_path}/")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert json.loads(proc.stdout.decode().replace("'", '"'))


_DOC = "/usr/share/doc/python3"


@pytest.mark.skipif(not os.path.isdir(_DOC), reason="the example packs /usr/share/doc/python3")
def test_readme_tree_example_runs(tmp_path: os.PathLike[str]) -> None:
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    code = readme.split("```python\n")[2].split("```", 1)[0]
    code = code.replace("/tmp/", f"{tmp_path}/")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.decode().strip() == "http://127.0.0.1:8080/|/srv/fallback-store"
    assert sorted(os.listdir(os.path.join(tmp_path, "pycasync-doc"))) == sorted(os.listdir(_DOC))


def _python_block(readme: str, marker: str) -> str:
    """The README's ```python block that contains ``marker``."""
    return next(block.split("```", 1)[0] for block in readme.split("```python\n")[1:] if marker in block)


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="the example reads /usr/bin/python3")
def test_readme_progress_example_runs(tmp_path: os.PathLike[str]) -> None:
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    code = _python_block(readme, "class Percent")
    code = code.replace("/tmp/", f"{tmp_path}/")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    size = os.path.getsize("/usr/bin/python3")
    assert proc.stdout.decode().strip() == f"Storing: {size} of {size} bytes"


def test_readme_test_command_is_what_ci_runs() -> None:
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    testing = readme.split("## Testing", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0].strip()
    assert testing == "python3 -m pytest -q"
    assert '"$PYTHON" -m pytest -q' in ci and 'PYTHON="${PYTHON:-python3}"' in ci
    quick = readme.split("## Quick start", 1)[1].split("## Commands", 1)[0]
    assert quick.count("```sh") == 2 and "```sh\nbash .ci/run\n```" in quick


def test_make_refuses_index_over_its_input(env: dict[str, str], blob: tuple[str, bytes], tmp_path) -> None:
    path, content = blob
    link = os.path.join(tmp_path, "link")
    os.symlink(path, link)
    for index in (path, link):
        one_error(run(env, "make", index, path), 2, "same file")
        with open(path, "rb") as f:
            assert f.read() == content


def test_extract_refuses_output_over_its_index_through_a_link(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path
) -> None:
    store, index, _ = made
    link = os.path.join(tmp_path, "link.caibx")
    os.symlink(index, link)
    with open(index, "rb") as f:
        before = f.read()
    one_error(run(env, "extract", "-s", store, link, index), 2, "same file")
    with open(index, "rb") as f:
        assert f.read() == before


def test_failed_make_to_stdout_writes_nothing(env: dict[str, str], blob: tuple[str, bytes], tmp_path) -> None:
    bad_store = os.path.join(tmp_path, "file-not-dir")
    with open(bad_store, "wb") as f:
        f.write(b"x")
    proc = run(env, "make", "-s", os.path.join(bad_store, "sub"), "-", blob[0])
    assert proc.returncode == 1 and proc.stdout == b""


def test_extract_into_directory_fails_at_once_and_keeps_mode(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path
) -> None:
    store, index, content = made
    adir = os.path.join(tmp_path, "adir")
    os.mkdir(adir)
    one_error(run(env, "extract", "-s", store, index, adir), 1, adir, "directory")
    assert os.listdir(adir) == [] and not [n for n in os.listdir(tmp_path) if n.startswith(".pycasync-tmp")]
    out = os.path.join(tmp_path, "private.img")
    with open(out, "wb") as f:
        f.write(b"old")
    os.chmod(out, 0o600)
    ok(env, "extract", "-s", store, index, out)
    assert os.stat(out).st_mode & 0o777 == 0o600
    with open(out, "rb") as f:
        assert f.read() == content


def test_make_into_missing_directory_names_the_index(
    env: dict[str, str], blob: tuple[str, bytes], tmp_path
) -> None:
    index = os.path.join(tmp_path, "no-such-dir", "x.caibx")
    err = one_error(run(env, "make", index, blob[0]), 1, index)
    assert "internal error" not in err and ".pycasync-tmp" not in err


def test_make_from_a_pipe_of_zeros(env: dict[str, str], tmp_path) -> None:
    index = os.path.join(tmp_path, "z.caibx")
    proc = subprocess.run(
        f"head -c 1000000 /dev/zero | {sys.executable} {CLI} make {index} -",
        shell=True, env=env, capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    from casync_format.index import read_index

    with open(index, "rb") as f:
        assert read_index(f).blob_size == 1_000_000


def test_info_with_missing_store_or_cache_fails(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path
) -> None:
    store, index, _ = made
    missing = os.path.join(tmp_path, "typo-store")
    one_error(run(env, "info", "-s", missing, index), 1, f"store {missing} does not exist")
    one_error(run(env, "info", "-s", store, "-c", missing, index), 1, f"store {missing} does not exist")
    assert '"in-store"' in ok(env, "info", "-s", store, index).stdout.decode()


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="the example reads /usr/bin/python3")
def test_readme_remote_index_example_runs(tmp_path: os.PathLike[str]) -> None:
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    code = _python_block(readme, "IndexServer")
    code = code.replace("/tmp/", f"{tmp_path}/")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.decode().strip() == "['python3.caibx']"
    assert read(os.path.join(tmp_path, "pycasync-python3.copy")) == read("/usr/bin/python3")
