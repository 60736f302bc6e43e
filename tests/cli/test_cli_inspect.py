"""The commands of issue 14 on the command line: cat, verify-index, inspect-chunks, manpage,
``--ignore``/``--ignore-chunks`` of cache and chop, ``info --chunks-info``, chop's
missing store and ``verify --digest``.

Every test runs ``pycasync`` as a subprocess on real stores (desync's testdata,
or ones made here; casync's own index for verify-index), and the man pages
through the real ``groff``/``man``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from casync_format.index import Index
from tests.support import CLI, DATA_DIR, ROOT
from tests.support.cli import chunk_files, ok, one_error, run

DESYNC = os.path.join(DATA_DIR, "desync")
BLOB1 = Path(DESYNC, "blob1").read_bytes()
IDX1 = os.path.join(DESYNC, "blob1.caibx")
STORE1 = os.path.join(DESYNC, "blob1.store")


def _items(index: str) -> list:
    with open(index, "rb") as f:
        return list(Index(f))


# --------------------------------------------------------------------------- cat


def test_cat_into_a_pipe(env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, CLI, "cat", "-s", STORE1, "-o", "5000", IDX1],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out == BLOB1[5000:]


def test_cat_into_a_fifo(env: dict[str, str], tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    ok(env, "cat", "-s", STORE1, "-l", "100000", IDX1, str(fifo))
    reader.join(60)
    assert got == [BLOB1[:100000]] and fifo.is_fifo()


def test_cat_range_needs_only_its_chunks(env: dict[str, str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(STORE1, store)
    offset, length = 700_000, 30_000
    touched = {i.id.hex() for i in _items(IDX1) if i.start < offset + length and i.start + i.size > offset}
    for name in chunk_files(str(store)):
        if name[:64] not in touched:
            os.unlink(store / name[:4] / name)
    assert len(chunk_files(str(store))) == len(touched) < 10
    out = tmp_path / "slice"
    ok(env, "cat", "-s", str(store), "--offset", str(offset), "--length", str(length), IDX1, str(out))
    assert out.read_bytes() == BLOB1[offset : offset + length]
    whole = tmp_path / "whole"
    one_error(run(env, "cat", "-s", str(store), IDX1, str(whole)), 1, "chunk")
    assert not whole.exists() and sorted(os.listdir(tmp_path)) == ["home", "slice", "store"]


def test_cat_usage_errors(env: dict[str, str]) -> None:
    one_error(run(env, "cat", IDX1), 2, "-s")
    one_error(run(env, "cat", "-s", STORE1, "-o", "-1", IDX1), 2, "-o")
    one_error(run(env, "cat", "-s", STORE1, "-o", str(len(BLOB1) + 1), IDX1), 2, "beyond the end")


def test_cat_index_from_stdin_and_cache(env: dict[str, str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    index = Path(IDX1).read_bytes()
    out = ok(env, "cat", "-s", STORE1, "-c", str(cache), "-l", "4096", "-", input=index).stdout
    assert out == BLOB1[:4096] and chunk_files(str(cache))


# --------------------------------------------------------------------------- verify-index


def test_verify_index(env: dict[str, str], tmp_path: Path) -> None:
    ok(env, "verify-index", IDX1, os.path.join(DESYNC, "blob1"))
    bad = tmp_path / "bad"
    data = bytearray(BLOB1)
    data[1_000_000] ^= 0xFF
    bad.write_bytes(bytes(data))
    item = next(i for i in _items(IDX1) if i.start <= 1_000_000 < i.start + i.size)
    one_error(run(env, "verify-index", IDX1, str(bad)), 1, item.id.hex(), f"offset {item.start}", str(bad))
    one_error(run(env, "verify-index", IDX1, str(tmp_path / "none")), 1, "none")


def test_verify_index_of_casync(env: dict[str, str], tmp_path: Path, run_casync) -> None:
    src = tmp_path / "src"
    src.write_bytes(BLOB1[:700_000] * 2)
    index = tmp_path / "c.caibx"
    run_casync("make", "--store", str(tmp_path / "cstore"), str(index), str(src))
    ok(env, "verify-index", str(index), str(src))
    with src.open("ab") as f:
        f.write(b"!")
    one_error(run(env, "verify-index", str(index), str(src)), 1, "offset 1400000")


# ------------------------------------------------------------------ inspect-chunks, info --chunks-info


def test_inspect_chunks_to_a_file_and_back_into_info(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "chunks.json"
    ok(env, "inspect-chunks", "-s", STORE1, IDX1, str(out))
    infos = json.loads(out.read_text())
    assert len(infos) == 161
    sizes = {e["id"]: e["compressed_size"] for e in infos}
    assert all(os.path.getsize(os.path.join(STORE1, i[:4], i + ".cacnk")) == n for i, n in sizes.items())
    info = json.loads(ok(env, "info", "--chunks-info", str(out), IDX1).stdout)
    assert info["dedup-size-not-in-seed-nor-cache-compressed"] == sum(sizes.values())


def test_inspect_chunks_errors(env: dict[str, str], tmp_path: Path) -> None:
    one_error(run(env, "inspect-chunks", "-s", "http://127.0.0.1:1/", IDX1), 2, "not a local store")
    one_error(run(env, "inspect-chunks", "-s", str(tmp_path / "none"), IDX1), 1, "none")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    one_error(run(env, "info", "--chunks-info", str(bad), IDX1), 1, "bad.json")
    sized = tmp_path / "sized.json"
    first = _items(IDX1)[0]
    sized.write_text(json.dumps([{"id": first.id.hex(), "uncompressed_size": 1, "compressed_size": 5}]))
    one_error(run(env, "info", "--chunks-info", str(sized), IDX1), 1, first.id.hex())


# --------------------------------------------------------------------------- cache and chop --ignore


def _ids(env: dict[str, str], index: str) -> set[str]:
    return set(ok(env, "list-chunks", index).stdout.decode().split())


def test_cache_and_chop_ignore(env: dict[str, str], tmp_path: Path) -> None:
    idx2 = os.path.join(DESYNC, "blob2.caibx")
    ids1, ids2 = _ids(env, IDX1), _ids(env, idx2)
    listed = sorted(ids1)[:10]
    id_file = tmp_path / "ids.txt"
    id_file.write_text("\n" + "\n".join(f" {i} " for i in listed) + "\n\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for command in ("cache", "chop"):
        target = tmp_path / command
        target.mkdir()
        if command == "cache":
            args = ["cache", "-s", STORE1, "-c", str(target), IDX1]
        else:
            args = ["chop", "-s", str(target), IDX1, os.path.join(DESYNC, "blob1")]
        ok(env, *args[:1], "--ignore", idx2, "--ignore-chunks", f"{id_file},{empty}", *args[1:])
        assert {n[:64] for n in chunk_files(str(target))} == ids1 - ids2 - set(listed)
        ok(env, *args[:1], "--ignore-chunks", str(id_file), *args[1:])
        assert {n[:64] for n in chunk_files(str(target))} == ids1 - set(listed)
    bad = tmp_path / "bad.txt"
    bad.write_text("not-an-id\n")
    one_error(run(env, "cache", "-s", STORE1, "-c", str(tmp_path / "c2"), "--ignore-chunks", str(bad), IDX1),
              1, "bad.txt")
    one_error(run(env, "chop", "-s", str(tmp_path / "chop"), "--ignore", str(tmp_path / "none.caibx"),
                  IDX1, os.path.join(DESYNC, "blob1")), 1, "none.caibx")


def test_chop_into_a_missing_store_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "no" / "store"
    one_error(run(env, "chop", "-s", str(missing), IDX1, os.path.join(DESYNC, "blob1")), 1, str(missing))
    assert not (tmp_path / "no").exists()


# --------------------------------------------------------------------------- verify --digest


def test_verify_digest(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(BLOB1[:300_000])
    store = tmp_path / "store"
    ok(env, "make", "--digest", "sha256", "-s", str(store), str(tmp_path / "x.caibx"), str(src))
    ok(env, "verify", "-s", str(store))  # either digest
    ok(env, "verify", "--digest", "sha256", "-s", str(store))
    made = len(chunk_files(str(store)))
    for args, count in ((["verify", "--digest", "sha512-256", "-s", str(store)], made),
                        (["--digest", "sha256", "verify", "-s", STORE1], 131)):
        proc = run(env, *args)
        lines = proc.stderr.decode().splitlines()
        assert proc.returncode == 1 and lines[-1].startswith(f"pycasync: error: {count} invalid chunk")
        listed = [line for line in lines if line.startswith("chunk ") and line.endswith(" is invalid")]
        assert len(listed) == count and count  # each listed, none removed
        assert lines[-2] == f"pycasync verify: checked {count} chunks of store {args[-1]}: {count} invalid"
    assert chunk_files(str(store))
    helptext = ok(env, "verify", "--help").stdout.decode()
    assert "either digest" in helptext and "--digest ALG only" in " ".join(helptext.split())


# --------------------------------------------------------------------------- manpage


def test_manpages_render_and_list_every_flag(env: dict[str, str], tmp_path: Path) -> None:
    from casync_store.cli import REGISTRY, build_parser

    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed")
    out = tmp_path / "man"
    out.mkdir()
    ok(env, "manpage", "--date", "2026-01-01", str(out))
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["pycasync.1", *(f"pycasync-{c.name}.1" for c in REGISTRY)])
    parser = build_parser()
    for page in names:
        proc = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-P", "-cbou", str(out / page)],
                              capture_output=True, timeout=60)
        assert proc.returncode == 0 and proc.stderr == b"", (page, proc.stderr)
        text = proc.stdout.decode().replace("\u2010", "-").replace("\u2212", "-")
        command = page[len("pycasync-"):-2] if page != "pycasync.1" else None
        sub = parser.commands[command] if command else parser
        for action in sub._actions:  # every flag --help shows (hidden refused ones are not)
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                assert flag in text, (page, flag)
        if command:
            assert next(c for c in REGISTRY if c.name == command).summary.split()[0] in text
        else:
            assert all(f"pycasync-{c.name}" in text for c in REGISTRY)
    man = shutil.which("man")
    if man is not None:
        proc = subprocess.run([man, "--warnings", "-l", str(out / "pycasync-cat.1")], capture_output=True,
                              env=dict(env, MANPAGER="cat", PAGER="cat", MANWIDTH="80"), timeout=60)
        assert proc.returncode == 0 and b"--offset" in proc.stdout.replace(b"\xe2\x80\x90", b"-")
    one_error(run(env, "manpage", str(tmp_path / "none")), 1, "none")


@pytest.mark.parametrize("command", ["cat", "verify-index", "inspect-chunks", "manpage"])
def test_new_commands_help(env: dict[str, str], command: str) -> None:
    out = ok(env, command, "--help").stdout.decode()
    assert out.startswith(f"usage: pycasync {command}") and "examples:" in out and "--config" in out
    assert command in ok(env, "--help").stdout.decode()
