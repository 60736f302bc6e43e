#!/usr/bin/env python3
"""Hostile experiments: kill -9 at random moments, and prune beside makes.

Usage::

    python3 tools/hostile.py [--kills 40] [--size 48MiB] [--rounds 30]
                             [--only make,tar-index,chop,cache,extract,server-put,prune-race]
                             [--workdir DIR] [--keep] [--seed N] [--json]

Each experiment runs the real ``pycasync.py`` of this checkout as a child
process and kills it (``SIGKILL``) at a random moment within the time an
uninterrupted run takes, ``--kills`` times, then checks what a crash may never
leave behind:

- ``corrupt``: files under a final chunk name (``xxxx/<id>.cacnk``) that do
  not decode to data hashing to their id;
- ``rerun``: whether a rerun after the kills produces the same index (or
  blob) as an uninterrupted run;
- ``leaked``: temporary files left once the rerun is done. For extract this
  must be 0 (the next run cleans up after a dead one); chunk temp files in a
  store are removed by ``prune`` once they are an hour old, so for the store
  writers they are counted and shown but do not fail the run;
- ``lost``: (``prune-race``) chunks that the index of a make still running
  when ``prune -y`` began (its cutoff, from ``prune -v``) references but the
  store no longer holds. A make that had finished before the prune began is
  protected only by naming its index, so its chunks are not counted.

``server-put`` kills the chunk-server (``-w``) while a make uploads to it and
restarts it; ``prune-race`` runs ``--rounds`` rounds of three makes with a
prune of an unrelated index started at a random moment. The script prints a
table (or ``--json``) and exits 1 when anything is corrupt, lost, different
on rerun, or when extract leaked a file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from casync_format import chunk as chunk_codec  # noqa: E402
from casync_format.digest import digest_by_name  # noqa: E402
from casync_format.errors import CasyncError  # noqa: E402
from casync_format.index import read_index  # noqa: E402

CLI = [sys.executable, os.path.join(ROOT, "pycasync.py")]
TEMP_MARK = ".pycasync-tmp"


@dataclass
class Result:
    """What one experiment found."""

    name: str
    kills: int = 0
    corrupt: int = 0
    rerun_identical: bool = True
    leaked: int = 0
    leaked_fails: bool = False
    lost: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        leak_fails = self.leaked and self.leaked_fails
        return not self.corrupt and self.rerun_identical and not self.lost and not leak_fails


def run(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI to completion."""
    r = subprocess.run([*CLI, *args], capture_output=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"hostile: {' '.join(args)} failed: {r.stderr.decode(errors='replace').strip()}")
    return r


def timed(*args: str) -> float:
    """Wall time of one uninterrupted run."""
    t0 = time.monotonic()
    run(*args)
    return time.monotonic() - t0


def kill_at_random(args: list[str], duration: float, rng: random.Random) -> int:
    """Start the CLI, SIGKILL it after a random part of ``duration``; its exit status."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.05, max(0.1, duration)))
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def corrupt_chunks(store: str) -> int:
    """Files under a final chunk name that are not that chunk (any digest)."""
    digests = [digest_by_name("sha512-256"), digest_by_name("sha256")]
    bad = 0
    for dirpath, _dirs, files in os.walk(store):
        for name in files:
            if not name.endswith(".cacnk") or name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            cid = bytes.fromhex(name[: -len(".cacnk")])
            with open(path, "rb") as f:
                blob = f.read()
            for digest in digests:
                try:
                    chunk_codec.decode(blob, cid, digest)
                    break
                except CasyncError:
                    continue
            else:
                bad += 1
    return bad


def temp_files(*dirs: str) -> int:
    """Temporary files of pycasync anywhere below ``dirs``."""
    count = 0
    for top in dirs:
        for _dirpath, _dirs, files in os.walk(top):
            count += sum(TEMP_MARK in name for name in files)
    return count


def prune_cutoff(stderr: bytes) -> int:
    """The mtime (ns) from which on ``prune -v`` said it keeps chunks (its start)."""
    match = re.search(rb"prune keeps every chunk with an mtime at or after (\d+) ns", stderr)
    if match is None:
        raise SystemExit(f"prune did not report its cutoff: {stderr.decode(errors='replace')}")
    return int(match.group(1))


def missing_chunks(store: str, index_path: str) -> int:
    """Chunks of the index that the local store does not hold."""
    missing = 0
    with open(index_path, "rb") as f:
        for item in read_index(f):  # the index reads its table lazily
            name = item.id.hex()
            if not os.path.exists(os.path.join(store, name[:4], name + ".cacnk")):
                missing += 1
    return missing


def same_file(a: str, b: str) -> bool:
    """Byte equality of two files, read in pieces."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


class Lab:
    """The inputs shared by every experiment, made once in ``workdir``."""

    def __init__(self, workdir: str, size: int, seed: int) -> None:
        self.dir = workdir
        self.rng = random.Random(seed)
        self.blob = os.path.join(workdir, "blob")
        with open(self.blob, "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 22)
                f.write(self.rng.randbytes(n))
                left -= n
        self.tree = os.path.join(workdir, "tree")
        for i in range(40):
            sub = os.path.join(self.tree, f"d{i % 5}")
            os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, f"f{i}"), "wb") as f:
                f.write(self.rng.randbytes(size // 40))
        self.store = self.path("ref-store")
        self.index = self.path("ref.caibx")
        run("make", "-s", self.store, self.index, self.blob)

    def path(self, name: str) -> str:
        """A fresh path in the workdir."""
        return os.path.join(self.dir, name)


def writer_experiment(
    lab: Lab, name: str, kills: int, argv: Callable[[str, str], list[str]], reference: str
) -> Result:
    """Kill a store writer ``kills`` times, then rerun it and compare with ``reference``."""
    res = Result(name)
    os.makedirs(lab.path(f"{name}-out.d"))  # the output alone in its directory
    store, out = lab.path(f"{name}-store"), lab.path(f"{name}-out.d/out")
    probe = lab.path(f"{name}-probe-store")
    for directory in (store, probe):  # chop, like desync's, writes only into a store that exists
        os.makedirs(directory, exist_ok=True)
    duration = timed(*argv(probe, lab.path(f"{name}-probe-out")))
    for _ in range(kills):
        kill_at_random(argv(store, out), duration, lab.rng)
        res.kills += 1
    res.corrupt = corrupt_chunks(store)
    run(*argv(store, out))
    res.rerun_identical = same_file(out, reference) if os.path.isfile(reference) else True
    res.leaked = temp_files(store, os.path.dirname(out))
    return res


def exp_make(lab: Lab, kills: int) -> Result:
    res = writer_experiment(lab, "make", kills, lambda s, o: ["make", "-s", s, o, lab.blob], lab.index)
    res.notes.append("leaked = chunk temp files; prune removes them after an hour")
    return res


def exp_tar_index(lab: Lab, kills: int) -> Result:
    ref = lab.path("tar-ref.caidx")
    run("tar", "-i", "-s", lab.path("tar-ref-store"), ref, lab.tree)
    return writer_experiment(lab, "tar-index", kills, lambda s, o: ["tar", "-i", "-s", s, o, lab.tree], ref)


def exp_chop(lab: Lab, kills: int) -> Result:
    res = writer_experiment(lab, "chop", kills, lambda s, o: ["chop", "-s", s, lab.index, lab.blob], "")
    out = lab.path("chop-check")
    run("extract", "-s", lab.path("chop-store"), lab.index, out)
    res.rerun_identical = same_file(out, lab.blob)
    return res


def exp_cache(lab: Lab, kills: int) -> Result:
    argv = lambda s, o: ["cache", "-s", lab.store, "-c", s, lab.index]  # noqa: E731
    res = writer_experiment(lab, "cache", kills, argv, "")
    out = lab.path("cache-check")
    run("extract", "-s", lab.path("cache-store"), lab.index, out)
    res.rerun_identical = same_file(out, lab.blob)
    return res


def exp_extract(lab: Lab, kills: int) -> Result:
    res = Result("extract")
    os.makedirs(lab.path("extract-out.d"))
    out = lab.path("extract-out.d/out")
    duration = timed("extract", "-s", lab.store, lab.index, lab.path("extract-probe"))
    os.unlink(lab.path("extract-probe"))
    for _ in range(kills):
        kill_at_random(["extract", "-s", lab.store, lab.index, out], duration, lab.rng)
        res.kills += 1
    run("extract", "-s", lab.store, lab.index, out)
    res.rerun_identical = same_file(out, lab.blob)
    res.leaked = temp_files(os.path.dirname(out))
    res.leaked_fails = True
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(store: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*CLI, "chunk-server", "-w", "-s", store, "-l", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("hostile: the chunk-server did not start")


def exp_server_put(lab: Lab, kills: int) -> Result:
    res = Result("server-put")
    store, port = lab.path("server-store"), _free_port()
    os.makedirs(store)
    url = f"http://127.0.0.1:{port}/"
    server = _start_server(store, port)
    try:
        duration = timed("make", "-s", url, lab.path("server-probe.caibx"), lab.blob)
        shutil.rmtree(store)
        os.makedirs(store)
        for _ in range(kills):
            client = subprocess.Popen([*CLI, "make", "-s", url, lab.path("server.caibx"), lab.blob],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(lab.rng.uniform(0.05, max(0.1, duration)))
            server.send_signal(signal.SIGKILL)
            server.wait()
            client.wait()
            res.kills += 1
            server = _start_server(store, port)
        res.corrupt = corrupt_chunks(store)
        run("make", "-s", url, lab.path("server.caibx"), lab.blob)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    identical = same_file(lab.path("server.caibx"), lab.index)
    res.rerun_identical = identical and not missing_chunks(store, lab.index)
    res.leaked = temp_files(store)
    return res


def exp_prune_race(lab: Lab, rounds: int) -> Result:
    res = Result("prune-race")
    store = lab.path("race-store")
    other = lab.path("race-other.caibx")
    small = os.path.join(lab.dir, "race-input")
    os.makedirs(small, exist_ok=True)
    run("make", other, lab.blob)  # an index whose chunks the makes never write
    duration = 0.0
    overlapped = finished_before = 0
    for r in range(rounds):
        files = []
        for k in range(3):
            path = os.path.join(small, f"r{r}-{k}")
            with open(path, "wb") as f:
                f.write(lab.rng.randbytes(lab.rng.randint(2, 6) << 20))
            files.append(path)
        if not duration:
            duration = timed("make", "-s", lab.path("race-probe"), lab.path("race-probe.caibx"), files[0])
        makes = [subprocess.Popen([*CLI, "make", "-s", store, p + ".caibx", p],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for p in files]
        time.sleep(lab.rng.uniform(0.0, duration))
        prune = subprocess.run([*CLI, "-v", "prune", "-y", "-s", store, other], capture_output=True)
        cutoff = prune_cutoff(prune.stderr)
        for proc, path in zip(makes, files):
            _, err = proc.communicate()
            if proc.returncode != 0:
                res.notes.append(f"round {r}: make failed: {err.decode(errors='replace').strip()}")
                continue
            # prune promises the chunks of a make still running when it began (or started
            # later); one that had finished before is protected only by its index in the list.
            if os.stat(path + ".caibx").st_mtime_ns >= cutoff:
                res.lost += missing_chunks(store, path + ".caibx")
                overlapped += 1
            else:
                finished_before += 1
        if prune.returncode != 0:
            res.notes.append(f"round {r}: prune failed: {prune.stderr.decode(errors='replace').strip()}")
        res.kills += 1  # rounds, shown in the same column
    res.corrupt = corrupt_chunks(store)
    res.notes.append("kills column = rounds (3 makes + 1 prune each)")
    res.notes.append(f"{overlapped} makes ran when the prune began (lost counts theirs); "
                     f"{finished_before} had finished before it (unprotected by design, not counted)")
    return res


EXPERIMENTS: dict[str, Callable[[Lab, int], Result]] = {
    "make": exp_make,
    "tar-index": exp_tar_index,
    "chop": exp_chop,
    "cache": exp_cache,
    "extract": exp_extract,
    "server-put": exp_server_put,
    "prune-race": exp_prune_race,
}


def parse_size(text: str) -> int:
    """``48MiB`` / ``1GiB`` / bytes."""
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
    low = text.lower()
    for unit, factor in units.items():
        if low.endswith(unit):
            return int(float(low[: -len(unit)]) * factor)
    return int(low)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=40, help="kills per experiment (default 40)")
    ap.add_argument("--rounds", type=int, default=30, help="prune-race rounds (default 30)")
    ap.add_argument("--size", default="48MiB", help="input size (default 48MiB)")
    ap.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated experiments")
    ap.add_argument("--workdir", help="where to work (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the workdir")
    ap.add_argument("--seed", type=int, default=1, help="random seed")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        ap.error(f"unknown experiment(s): {', '.join(unknown)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="pycasync-hostile-")
    os.makedirs(workdir, exist_ok=True)
    results = []
    try:
        lab = Lab(workdir, parse_size(args.size), args.seed)
        for name in names:
            t0 = time.monotonic()
            res = EXPERIMENTS[name](lab, args.rounds if name == "prune-race" else args.kills)
            res.seconds = round(time.monotonic() - t0, 1)
            results.append(res)
            print(f"{name}: done in {res.seconds} s", file=sys.stderr)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=2))
    else:
        head = ("experiment", "kills", "corrupt", "rerun", "leaked", "lost", "secs")
        print("{:<12} {:>5} {:>7} {:>9} {:>6} {:>5} {:>6}  ok".format(*head))
        for r in results:
            rerun = "identical" if r.rerun_identical else "DIFFERS"
            row = (r.name, r.kills, r.corrupt, rerun, r.leaked, r.lost, r.seconds, "ok" if r.ok else "FAILED")
            print("{:<12} {:>5} {:>7} {:>9} {:>6} {:>5} {:>6}  {}".format(*row))
            for note in r.notes:
                print(f"    {note}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
