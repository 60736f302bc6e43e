"""What the commands tell people and scripts: summary lines, --print-stats keys, counts, startup lines.

``make`` and ``extract`` print one summary line on stderr with -v (a
terminal is tests/cli/test_progress_tmux.py's part); ``--print-stats`` has
desync's keys with ours beside them, and extract's counts the cache and each
store apart, bytes as well as chunks; ``info -s`` reports the stored sizes a
local store and an HTTP store (HEAD Content-Length) can tell; ``verify`` and
``prune`` print their counts without -v; servers print one startup line with
their address and never a password.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from tests.support import CLI, ROOT
from tests.support.cli import Server, data, ok


def _summary(stderr: bytes, command: str) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.startswith(f"pycasync {command}: ")]


def _sizes(store: Path) -> dict[str, int]:
    """chunk id -> file size of every chunk file in a local store."""
    return {p.name[: -len(".cacnk")]: p.stat().st_size for p in store.glob("*/*.cacnk")}


def test_summary_lines_with_v_and_not_without(env: dict[str, str], tmp_path: Path, blob: tuple[str, bytes]):
    store, index, out = tmp_path / "store", tmp_path / "b.caibx", tmp_path / "out"
    quiet = ok(env, "make", "-s", str(store), "-m", "4:16:64", str(index), blob[0])
    assert not _summary(quiet.stderr, "make")  # not a terminal, no -v: nothing
    loud = ok(env, "-v", "make", "-s", str(store), "-m", "4:16:64", str(index), blob[0])
    (line,) = _summary(loud.stderr, "make")
    assert re.match(r"^pycasync make: 586 KiB in [0-9.]+ s \(.*/s\) into \S+: \d+ chunks: \d+ already in the "
                    r"store \([0-9.]+ KiB\)", line), line
    assert "stored" not in line.split("into")[1]  # everything was there already
    proc = ok(env, "extract", "-v", "-s", str(store), str(index), str(out))
    (line,) = _summary(proc.stderr, "extract")
    assert re.match(r"^pycasync extract: 586 KiB in [0-9.]+ s \(.*/s\): \d+ chunks: .*\d+ from "
                    + re.escape(str(store)) + r" \([0-9.]+ KiB\)$", line), line
    assert not _summary(ok(env, "extract", "-s", str(store), str(index), str(out)).stderr, "extract")


def test_make_print_stats_has_desyncs_keys(env: dict[str, str], tmp_path: Path, blob: tuple[str, bytes]):
    store, index = tmp_path / "store", tmp_path / "b.caibx"
    stats = json.loads(ok(env, "make", "--print-stats", "-s", str(store), "-m", "4:16:64", str(index),
                          blob[0]).stderr)
    ids = ok(env, "list-chunks", str(index)).stdout.decode().split()
    assert list(stats)[:2] == ["ChunksAccepted", "ChunksProduced"]
    assert stats["ChunksAccepted"] == stats["ChunksProduced"] == stats["chunks-total"] == len(ids)
    assert stats["chunks-unique"] == len(set(ids)) == stats["chunks-stored"]
    sizes = _sizes(store)
    assert stats["bytes-stored"] == sum(sizes.values())
    assert stats["bytes-stored-uncompressed"] + stats["bytes-duplicate"] == stats["bytes-total"]
    assert stats["bytes-total"] == len(blob[1])
    again = json.loads(ok(env, "make", "--print-stats", "-s", str(store), "-m", "4:16:64", str(index),
                          blob[0]).stderr)
    assert again["chunks-in-store"] == len(set(ids)) and again["chunks-stored"] == 0
    assert again["bytes-in-store"] == stats["bytes-stored-uncompressed"]
    assert isinstance(again["seconds"], float)


def test_extract_stats_count_cache_and_each_store_apart(env: dict[str, str], tmp_path: Path):
    first, second = data(300_000, 1), data(300_000, 2)
    (tmp_path / "first").write_bytes(first)
    (tmp_path / "whole").write_bytes(first + second)
    a, b, cache = tmp_path / "a", tmp_path / "b", tmp_path / "cache"
    ok(env, "make", "-s", str(a), "-m", "4:16:64", str(tmp_path / "first.caibx"), str(tmp_path / "first"))
    index = str(tmp_path / "whole.caibx")
    ok(env, "make", "-s", str(b), "-m", "4:16:64", index, str(tmp_path / "whole"))
    out = str(tmp_path / "out")
    args = ("extract", "--print-stats", "-s", f"{a},{b}", "-c", str(cache), index, out)
    stats = json.loads(ok(env, *args).stdout)
    assert [(s["location"], s["cache"]) for s in stats["stores"]] == [(str(cache), True), (str(a), False),
                                                                      (str(b), False)]
    in_cache, in_a, in_b = stats["stores"]
    assert in_cache["chunks"] == 0 and in_a["chunks"] > 0 and in_b["chunks"] > 0
    assert in_a["chunks"] + in_b["chunks"] == stats["chunks-from-store"] == stats["chunks-total"]
    assert in_a["bytes"] + in_b["bytes"] == stats["bytes-from-store"] == len(first + second)
    # Bytes read are the chunk files' sizes (local stores: nothing downloaded, remote false).
    read = in_a["bytes-read"] + in_b["bytes-read"]
    assert read == stats["bytes-read-from-store"] == sum(_sizes(cache).values())
    assert not in_a["remote"] and not in_b["remote"]
    assert (stats["chunks-from-cache"], stats["bytes-from-cache"]) == (0, 0)
    again = json.loads(ok(env, *args).stdout)  # everything from the cache now
    assert again["chunks-from-cache"] == again["chunks-total"] == stats["chunks-total"]
    assert again["bytes-from-cache"] == len(first + second)
    assert again["chunks-from-store"] == 0 and again["bytes-read-from-store"] == 0
    assert [s["chunks"] for s in again["stores"]] == [again["chunks-total"], 0, 0]
    desync_keys = ["chunks-from-seeds", "chunks-from-store", "chunks-in-place", "bytes-copied-from-seeds",
                   "bytes-cloned-from-seeds", "blocksize", "bytes-total", "chunks-total", "seeds"]
    assert list(again)[: len(desync_keys)] == desync_keys
    kept = json.loads(ok(env, "extract", "-k", "--print-stats", "-s", str(b), index, out).stdout)
    assert kept["chunks-in-place"] == kept["chunks-total"] and kept["bytes-in-place"] == len(first + second)


def test_info_reports_stored_sizes_of_local_and_http_stores(
    env: dict[str, str], tmp_path: Path, made: tuple[str, str, bytes], serve: Callable[..., Server]
):
    store, index, _content = made
    sizes = _sizes(Path(store))
    local = json.loads(ok(env, "info", "-s", store, index).stdout)
    assert local["dedup-size-in-store-compressed"] == sum(sizes.values())
    assert local["dedup-size-not-in-seed-nor-cache-compressed"] == 0  # desync: only from --chunks-info
    assert local["not-in-store"] == 0 and local["dedup-size-not-in-store"] == 0
    assert local["dedup-size-in-store"] == local["dedup-size-not-in-seed"]
    server = serve("-s", store)
    remote = json.loads(ok(env, "info", "-s", server.url, index).stdout)
    assert remote == local
    # A chunk gone from the store: counted as missing, with its bytes.
    victim = next(iter(sorted(Path(store).glob("*/*.cacnk"))))
    victim.unlink()
    fewer = json.loads(ok(env, "info", "-s", store, index).stdout)
    assert fewer["not-in-store"] == 1 and fewer["dedup-size-not-in-store"] > 0
    assert fewer["dedup-size-in-store-compressed"] == sum(sizes.values()) - sizes[victim.name[:-6]]
    assert "not-in-store" not in json.loads(ok(env, "info", index).stdout)  # no -s: desync's keys only


def test_verify_and_prune_print_their_counts(
    env: dict[str, str], tmp_path: Path, made: tuple[str, str, bytes]
):
    store, index, _content = made
    sizes = _sizes(Path(store))
    proc = ok(env, "verify", "-s", store)
    expected = f"pycasync verify: checked {len(sizes)} chunks of store {store}: all valid\n"
    assert proc.stderr.decode() == expected
    extra = tmp_path / "extra"
    extra.write_bytes(data(50_000, 9))
    ok(env, "make", "-s", store, "-m", "4:16:64", str(tmp_path / "extra.caibx"), str(extra))
    unused = {k: v for k, v in _sizes(Path(store)).items() if k not in sizes}
    total = len(sizes) + len(unused)
    no = subprocess.run([sys.executable, CLI, "prune", "-s", store, index], input=b"n\n", env=env, cwd=ROOT,
                        capture_output=True, timeout=120)
    assert no.returncode == 0
    text = no.stderr.decode()
    assert text.startswith(f"pycasync prune: store {store} holds {total} chunks; {len(unused)} chunks (")
    assert f"Delete these {len(unused)} chunks (" in text
    assert text.endswith("pycasync prune: nothing deleted\n")
    assert len(_sizes(Path(store))) == total
    yes = ok(env, "prune", "-y", "--json", "-s", store, index)
    gone = sum(unused.values())
    assert json.loads(yes.stdout) == {"indexes": 1, "removed": len(unused), "bytes-removed": gone,
                                      "chunks": total, "unused": len(unused), "unused-bytes": gone}
    assert yes.stderr.decode().splitlines()[-1].startswith(f"pycasync prune: removed {len(unused)} chunks (")
    assert _sizes(Path(store)) == sizes


_LOCAL = r"http://127\.0\.0\.1:\d+"


def test_servers_print_one_startup_line_without_secrets(env: dict[str, str], tmp_path: Path, made):
    store, _index, _content = made
    cases = [
        ("chunk-server", ["-s", store], rf"serving {re.escape(store)} on {_LOCAL} \(read-only\)"),
        ("chunk-server", ["-s", "http://user:hunter2@127.0.0.1:9/store", "-c", str(tmp_path / "c")],
         rf"serving http://user:\*\*\*@127\.0\.0\.1:9/store \(cache .*\) on {_LOCAL} \(read-only\)"),
        ("index-server", ["-s", str(tmp_path), "-w"], rf"serving .* on {_LOCAL} \(writable\)"),
    ]
    for command, args, pattern in cases:
        proc = subprocess.Popen([sys.executable, CLI, command, "-l", "127.0.0.1:0", *args], env=env, cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline().decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            rest = proc.communicate(timeout=30)[1].decode()
        assert re.fullmatch(f"pycasync {command}: {pattern}\n", line), line
        assert "hunter2" not in line + rest
        assert proc.returncode == 0, rest
    assert os.path.isdir(tmp_path)
