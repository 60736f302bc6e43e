"""Remote indexes end to end through the real command line.

``pycasync index-server`` runs as a subprocess on 127.0.0.1; ``make`` writes
its index there by PUT (with ``-w``), ``extract``/``info``/``list-chunks``
read it back by URL, and casync's own client fetches the index from it. The
same commands use indexes on a real sshd (``sftp://``) and a real S3 API
server (moto) when those fixtures are available.
"""

from __future__ import annotations

import os
import subprocess
from typing import Callable

import pytest

from tests.support.cli import Server, chunk_files, ok, one_error, read, run
from tests.support.moto import TEST_KEY, TEST_SECRET, MotoServer, make_bucket
from tests.support.sshd import SSHServer, write_ssh_home


def _dirs(tmp_path: os.PathLike[str], *names: str) -> list[str]:
    out = []
    for name in names:
        path = os.path.join(tmp_path, name)
        os.makedirs(path, exist_ok=True)
        out.append(path)
    return out


def test_make_to_index_server_and_read_back(
    env: dict[str, str], blob: tuple[str, bytes], tmp_path: os.PathLike[str],
    serve: Callable[..., Server], run_casync: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    src, content = blob
    indexes, store = _dirs(tmp_path, "indexes", "store")
    server = serve("-w", "-s", indexes, command="index-server")
    url = server.url + "blob.caibx"
    ok(env, "make", "-s", store, url, src)
    local = os.path.join(tmp_path, "local.caibx")
    ok(env, "make", local, src)
    assert read(os.path.join(indexes, "blob.caibx")) == read(local)  # the same bytes, uploaded
    assert not [n for n in os.listdir(indexes) if n != "blob.caibx"]  # no temp left

    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-s", store, url, out)
    assert read(out) == content
    listed = ok(env, "list-chunks", url).stdout.decode().split()
    assert listed == ok(env, "list-chunks", local).stdout.decode().split()
    assert b'"size": %d' % len(content) in ok(env, "info", "-s", store, url).stdout

    # casync's own client reads the index from the server
    casync_out = os.path.join(tmp_path, "casync-out")
    run_casync(f"--store={store}", "--seed-output=no", "extract", url, casync_out)
    assert read(casync_out) == content
    assert server.stop() == 0


def test_read_only_index_server_refuses_make(
    env: dict[str, str], blob: tuple[str, bytes], tmp_path: os.PathLike[str],
    serve: Callable[..., Server],
) -> None:
    src, _ = blob
    indexes, store = _dirs(tmp_path, "indexes", "store")
    server = serve("-s", indexes, command="index-server")
    one_error(run(env, "make", "-s", store, server.url + "x.caibx", src), 1, "x.caibx")
    assert os.listdir(indexes) == []
    missing = run(env, "extract", "-s", store, server.url + "nope.caibx", os.path.join(tmp_path, "o"))
    one_error(missing, 1, "nope.caibx")
    assert not os.path.exists(os.path.join(tmp_path, "o"))


def test_index_server_usage_errors(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    one_error(run(env, "index-server", "-l", "127.0.0.1:0"), 2, "no index store")
    one_error(run(env, "index-server", "-s", str(tmp_path), "--cert", "c.pem"), 2, "--cert and --key")
    one_error(run(env, "index-server", "-s", "ssh://host/x"), 1, "ssh://")


def test_sftp_store_and_index_with_home_ssh_config(
    env: dict[str, str], blob: tuple[str, bytes], tmp_path: os.PathLike[str],
    sshd: SSHServer,
) -> None:
    """A user's ``~/.ssh/config`` alias is all it takes: chunks and the index on the SSH host."""
    pytest.importorskip("paramiko")
    src, content = blob
    write_ssh_home(sshd, env["HOME"], alias="backup-host")
    remote = os.path.join(tmp_path, "remote")  # the sshd runs on this machine
    store_url = f"sftp://backup-host{remote}/store"
    index_url = f"sftp://backup-host{remote}/indexes/blob.caibx"
    os.makedirs(os.path.join(remote, "indexes"))
    ok(env, "make", "-n", "3", "-s", store_url, index_url, src)
    local = os.path.join(tmp_path, "local.caibx")
    ok(env, "make", local, src)
    assert read(os.path.join(remote, "indexes", "blob.caibx")) == read(local)
    assert chunk_files(os.path.join(remote, "store"))
    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-s", store_url, index_url, out)
    assert read(out) == content
    ok(env, "verify", "-s", store_url)
    # an unknown host key is refused: empty known_hosts
    write_ssh_home(sshd, env["HOME"], alias="backup-host", known=False)
    proc = run(env, "list-chunks", index_url)
    one_error(proc, 1, "backup-host")
    assert b"Host key verification failed" in proc.stderr  # OpenSSH's ssh says so (the default client)
    proc = run(dict(env, PYCASYNC_SFTP_CLIENT="paramiko"), "list-chunks", index_url)
    one_error(proc, 1, "backup-host")
    assert b"known_hosts" in proc.stderr  # and paramiko's SSH, where no ssh is installed


def test_tar_untar_mtree_with_a_remote_caidx(
    env: dict[str, str], tmp_path: os.PathLike[str], serve: Callable[..., Server],
) -> None:
    indexes, store, tree = _dirs(tmp_path, "indexes", "store", "tree")
    os.makedirs(os.path.join(tree, "sub"))
    with open(os.path.join(tree, "sub", "f.txt"), "wb") as f:
        f.write(os.urandom(100_000))
    os.symlink("sub/f.txt", os.path.join(tree, "link"))
    server = serve("-w", "-s", indexes, command="index-server")
    url = server.url + "tree.caidx"
    ok(env, "tar", "-i", "-s", store, url, tree)
    local = os.path.join(tmp_path, "local.caidx")
    ok(env, "tar", "-i", "-s", store, local, tree)
    assert read(os.path.join(indexes, "tree.caidx")) == read(local)
    out = os.path.join(tmp_path, "out")
    ok(env, "untar", "-i", "-s", store, url, out)
    assert read(os.path.join(out, "sub", "f.txt")) == read(os.path.join(tree, "sub", "f.txt"))
    assert os.readlink(os.path.join(out, "link")) == "sub/f.txt"
    mtree = [ok(env, "mtree", "-i", "-s", store, where).stdout for where in (url, local)]
    assert mtree[0] == mtree[1] and b"f.txt" in mtree[0]


@pytest.mark.parametrize(
    "args",
    [
        ["info", "http://me:hunter2@[::1/idx/b.caibx"],
        ["list-chunks", "s3+http://[::1/bucket/x.caibx"],
        ["info", "sftp://[::1/x.caibx"],
        ["extract", "-s", "http://[::1/store", "x.caibx", "out"],
        ["index-server", "-s", "https://[::1/indexes"],
    ],
)
def test_malformed_urls_are_usage_errors(env: dict[str, str], args: list[str]) -> None:
    message = one_error(run(env, *args), 2, "invalid location", "Invalid IPv6 URL")
    assert "hunter2" not in message


def test_servers_and_reports_refuse_missing_stores(
    env: dict[str, str], blob: tuple[str, bytes], tmp_path: os.PathLike[str], sshd: SSHServer,
) -> None:
    """A typo in a store location is an error, not an empty answer, for every backend that can tell."""
    pytest.importorskip("paramiko")
    src, _ = blob
    index = os.path.join(tmp_path, "x.caibx")
    ok(env, "make", index, src)
    one_error(run(env, "index-server", "-s", os.path.join(tmp_path, "nope"), "-l", "127.0.0.1:0"), 1,
              "nope", "not a directory")  # fmt: skip
    one_error(run(env, "index-server", "-s", index, "-l", "127.0.0.1:0"), 1, "not a directory")
    write_ssh_home(sshd, env["HOME"], alias="backup-host")
    missing = f"sftp://backup-host{tmp_path}/no-store"
    one_error(run(env, "info", "-s", missing, index), 1, "no-store", "does not exist")
    mnt = os.path.join(tmp_path, "mnt")
    os.mkdir(mnt)
    one_error(run(env, "mount-index", "-s", missing, index, mnt), 1, "no-store", "does not exist")
    with open(os.path.join(mnt, "occupied"), "w"):
        pass
    one_error(run(env, "mount-index", "-s", str(tmp_path), index, mnt), 2, "not empty")


def test_chop_cache_and_tar_index_into_s3(
    env: dict[str, str], blob: tuple[str, bytes], tmp_path: os.PathLike[str],
    moto_server: MotoServer,
) -> None:
    """The writing commands other than make, with an S3 store as their target."""
    src, content = blob
    bucket = "cli-remote-" + os.urandom(4).hex()
    make_bucket(moto_server.endpoint, bucket)
    env = dict(env, S3_ACCESS_KEY=TEST_KEY, S3_SECRET_KEY=TEST_SECRET)
    s3 = f"s3+{moto_server.endpoint}/{bucket}"
    local_store, tree = _dirs(tmp_path, "local-store", "tree")
    index = os.path.join(tmp_path, "x.caibx")
    ok(env, "make", "-s", local_store, index, src)

    ok(env, "chop", "-s", f"{s3}/chopped", index, src)  # the file's chunks as the index cuts them
    ok(env, "cache", "-s", local_store, "-c", f"{s3}/cached", index)  # copied from another store
    for prefix in ("chopped", "cached"):
        out = os.path.join(tmp_path, f"out-{prefix}")
        ok(env, "extract", "-s", f"{s3}/{prefix}", index, out)
        assert read(out) == content

    with open(os.path.join(tree, "f.bin"), "wb") as f:
        f.write(content)
    caidx = os.path.join(tmp_path, "t.caidx")
    ok(env, "tar", "-i", "-s", f"{s3}/tree", caidx, tree)
    out = os.path.join(tmp_path, "tree-out")
    ok(env, "untar", "-i", "-s", f"{s3}/tree", caidx, out)
    assert read(os.path.join(out, "f.bin")) == content
