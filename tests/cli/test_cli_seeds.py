"""desync's extract tests with seeds (``cmd/desync/extract_test.go``), run against ``pycasync extract``.

The data is desync's own (``tests/data/desync``, see its README): every case
of ``TestExtractCommand`` that uses seeds must rebuild ``blob1`` exactly, every
case of ``TestExtractWithInvalidSeeds`` must fail with one error line and
leave no output. Plus the flags desync lacks: a seed without an index, info's
seeds, and the bad-input errors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support import DATA_DIR
from tests.support.cli import ok, one_error, run

DESYNC = os.path.join(DATA_DIR, "desync")
BLOB1 = Path(DESYNC, "blob1").read_bytes()

# (name, arguments before OUTPUT, chunks that may come from the store at most, or None)
GOOD = [
    ("single seed", "--store blob1.store --seed blob2.caibx blob1.caibx", None),
    ("multi seed", "-s blob1.store --seed blob2.caibx --seed blob1.caibx blob1.caibx", 0),
    ("seed directory", "-s blob1.store --seed-dir . --skip-invalid-seeds blob1.caibx", None),
    ("explicit data", "--store blob1.store --seed blob2_without_data.caibx:blob2 blob1.caibx", None),
    ("explicit data and options",
     "--store blob1.store --seed blob2_without_data.caibx:blob2:reserved_options blob1.caibx", None),
    ("multi seed, explicit data", "-s blob1.store --seed blob2_without_data.caibx:blob2"
     " --seed blob1_without_data.caibx:blob1 blob1.caibx", 0),
    ("multi seed, one explicit data",
     "-s blob1.store --seed blob2_without_data.caibx:blob2 --seed blob1.caibx blob1.caibx", 0),
    ("corrupted seed skipped",
     "-s blob1.store --seed blob2_corrupted.caibx --skip-invalid-seeds blob1.caibx", None),
    ("corrupted seeds skipped, empty store",
     "-s empty.store --seed blob2_corrupted.caibx --seed blob1.caibx --skip-invalid-seeds blob1.caibx", 0),
    # blob1's seed wins every run, so the corrupted seeds are never used, hence never validated.
    ("seed directory without skipping", "-s blob1.store --seed-dir . --seed blob1.caibx blob1.caibx", 0),
    ("corrupted seed unused, empty store",
     "--store empty.store --seed blob2_corrupted.caibx --seed blob1.caibx blob1.caibx", 0),
    ("everything in the seed", "--store empty.store --seed blob1.caibx blob1.caibx", 0),
    ("regenerate the corrupted seed",
     "--store blob1.store --seed blob2_corrupted.caibx --regenerate-invalid-seeds blob1.caibx", None),
    ("regenerate a corrupted index, empty store",
     "--store empty.store --seed blob1_corrupted_index.caibx --regenerate-invalid-seeds blob1.caibx", 0),
    ("a seed without an index", "--store empty.store --seed blob1 blob1.caibx", 0),
]

# (name, arguments before OUTPUT, exit status, what the error names)
BAD = [
    ("corrupted seed", "-s blob1.store --seed blob2_corrupted.caibx blob1.caibx", 1, "blob2_corrupted.caibx"),
    ("missing seed", "--store blob1.store --seed blob_missing blob1.caibx", 1, "blob_missing"),
    ("missing seed data", "--store blob1.store --seed blob2_without_data.caibx blob1.caibx", 1,
     "blob2_without_data"),
    ("multiple corrupted seeds", "-s empty.store --seed blob2_corrupted.caibx --seed blob1.caibx blob2.caibx",
     1, "blob2_corrupted.caibx"),
    ("corrupted index and a valid seed",
     "--store blob2.store --seed blob1_corrupted_index.caibx --seed blob1.caibx blob2.caibx", 1,
     "blob1_corrupted_index.caibx"),
    ("corrupted index", "--store blob2.store --seed blob1_corrupted_index.caibx blob2.caibx", 1,
     "blob1_corrupted_index.caibx"),
    ("skip and regenerate", "-s blob1.store --seed blob1_corrupted_index.caibx --regenerate-invalid-seeds"
     " --skip-invalid-seeds blob1.caibx", 2, "--skip-invalid-seeds"),
]


@pytest.fixture
def testdata(tmp_path: Path) -> Path:
    """A copy of desync's test data (symlinks kept), so the tests may run in it."""
    where = tmp_path / "testdata"
    shutil.copytree(DESYNC, where, symlinks=True)
    return where


def _in(where: Path, args: str) -> list[str]:
    """``args`` split, with the test data's relative names made absolute."""
    out = []
    for arg in args.split():
        if arg.startswith("-") or arg.isdigit():
            out.append(arg)
        elif ":" in arg:
            parts = arg.split(":")
            out.append(":".join([str(where / parts[0]), str(where / parts[1]), *parts[2:]]))
        else:
            out.append(str(where / arg))
    return out


@pytest.mark.parametrize("name,args,max_fetched", GOOD, ids=[case[0] for case in GOOD])
def test_extract_with_seeds(env, testdata, tmp_path, name, args, max_fetched):
    out = tmp_path / "out1"
    proc = ok(env, "extract", "--print-stats", *_in(testdata, args), str(out))
    assert out.read_bytes() == BLOB1
    stats = json.loads(proc.stdout)
    counted = stats["chunks-from-seeds"] + stats["chunks-from-store"] + stats["chunks-in-place"]
    assert stats["chunks-total"] == counted
    if max_fetched is not None:
        assert stats["chunks-from-store"] <= max_fetched
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("name,args,status,names", BAD, ids=[case[0] for case in BAD])
def test_extract_with_invalid_seeds(env, testdata, tmp_path, name, args, status, names):
    (tmp_path / "o").mkdir()
    out = tmp_path / "o" / "out"
    one_error(run(env, "extract", *_in(testdata, args), str(out)), status, names)
    assert os.listdir(tmp_path / "o") == []  # nothing half-written


def test_in_place_without_store_data(env, testdata, tmp_path):
    """desync's 'extract to existing file without overwrite': all in place, an empty store."""
    out = tmp_path / "out3"
    out.write_bytes(BLOB1)
    proc = ok(env, "extract", "--print-stats", "--in-place", "--store", str(testdata / "empty.store"),
              "--seed", str(testdata / "blob2.caibx"), str(testdata / "blob1.caibx"), str(out))
    assert out.read_bytes() == BLOB1
    stats = json.loads(proc.stdout)
    assert stats["chunks-in-place"] == stats["chunks-total"] - stats["chunks-zero"]
    assert stats["chunks-from-store"] == 0


def test_stats_keys(env, testdata, tmp_path):
    proc = ok(env, "extract", "--print-stats", "-s", str(testdata / "empty.store"),
              "--seed", str(testdata / "blob1.caibx"), str(testdata / "blob1.caibx"), str(tmp_path / "o"))
    stats = json.loads(proc.stdout)
    assert list(stats)[:9] == [
        "chunks-from-seeds", "chunks-from-store", "chunks-in-place", "bytes-copied-from-seeds",
        "bytes-cloned-from-seeds", "blocksize", "bytes-total", "chunks-total", "seeds",
    ]  # fmt: skip
    assert stats["seeds"] == 2  # the seed and desync's null-chunk seed
    assert stats["bytes-total"] == len(BLOB1) and stats["blocksize"] > 0
    assert stats["bytes-copied-from-seeds"] + stats["bytes-cloned-from-seeds"] > 0


def test_seed_to_stdout(env, testdata):
    proc = ok(env, "extract", "--print-stats", "-s", str(testdata / "empty.store"), "--seed",
              str(testdata / "blob1"), str(testdata / "blob1.caibx"), "-")
    assert proc.stdout == BLOB1
    assert json.loads(proc.stderr)["chunks-from-store"] == 0


def test_info_with_seeds(env, testdata):
    base = ["info", "-s", str(testdata / "blob1.store"), str(testdata / "blob1.caibx")]
    by_index = json.loads(ok(env, *base, "--seed", str(testdata / "blob2.caibx")).stdout)
    by_data = json.loads(ok(env, *base, "--seed", f"{testdata / 'blob2_without_data.caibx'}:x").stdout)
    raw = json.loads(ok(env, *base, "--seed", str(testdata / "blob1")).stdout)
    assert by_index == by_data
    assert 0 < by_index["in-seed"] < by_index["unique"]
    assert raw["in-seed"] == raw["unique"] and raw["dedup-size-not-in-seed"] == 0
    in_dir = json.loads(ok(env, *base, "--seed-dir", str(testdata)).stdout)
    assert in_dir["in-seed"] >= by_index["in-seed"]


@pytest.mark.parametrize("make_bad,fragment", [
    (lambda d: d / "missing.img", "no such file"),
    (lambda d: d / "blob1.caibx.broken.caibx", "not a casync index"),
    (lambda d: d / "short.caibx", "bytes"),
    (lambda d: d / "locked.img", "Permission denied"),
    (lambda d: d / "blob1.store", "Is a directory"),
])  # fmt: skip
def test_bad_seeds(env, testdata, tmp_path, make_bad, fragment):
    bad = make_bad(testdata)
    if bad.name.endswith("broken.caibx"):
        bad.write_bytes(b"not an index at all, not at all, but long enough for a header.")
        Path(str(bad)[: -len(".caibx")]).write_bytes(b"x")
    elif bad.name == "short.caibx":
        shutil.copy(testdata / "blob1.caibx", bad)
        (testdata / "short").write_bytes(BLOB1[: len(BLOB1) // 2])
    elif bad.name == "locked.img":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        bad.write_bytes(BLOB1)
        bad.chmod(0)
    out = tmp_path / "out"
    one_error(run(env, "extract", "-s", str(testdata / "empty.store"), "--seed", str(bad),
                  str(testdata / "blob1.caibx"), str(out)), 1, "seed ", fragment)
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="the example reads /usr/bin/python3")
def test_readme_seed_example_runs(tmp_path):
    import subprocess
    import sys

    from tests.support import ROOT

    readme = Path(ROOT, "README.md").read_text()
    code = readme.split("## Seeds", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("/tmp/", f"{tmp_path}/")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    from_seeds, from_store = map(int, proc.stdout.split())
    assert from_seeds > 10 * from_store
    assert Path(tmp_path, "pycasync-v2.out").read_bytes() == Path(tmp_path, "pycasync-v2.img").read_bytes()


def test_old_desync_spellings(env, testdata, tmp_path):
    """``-seed``/``-seed-dir`` (desync's Go-flag spellings) work like ``--seed``/``--seed-dir``."""
    out = tmp_path / "out"
    ok(env, "extract", "-store", str(testdata / "empty.store"), "-seed", str(testdata / "blob1.caibx"),
       str(testdata / "blob1.caibx"), str(out))
    assert out.read_bytes() == BLOB1
