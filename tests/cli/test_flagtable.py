"""``tools/flagtable.py``: desync's command/flag pairs read from Go sources, tried on the real CLI.

A small desync-shaped tree (``cmd/desync/*.go``: root persistent flags, a
shared store-option helper, commands) gives known answers: a flag we have
(also as ``--flag=value`` parsing through ``--help``), one we refuse by name
(chunk-server's ``--encryption``), one we lack, a command we lack, and a
short name we lack. Where desync's mirror is on this machine, its real
table has no missing pair.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT

TOOL = os.path.join(ROOT, "tools", "flagtable.py")
MIRROR = "/work/.mirror/folbricht+desync/repo"

ROOT_GO = """package main
func newRootCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "desync",
	}
	cmd.PersistentFlags().StringVar(&cfgFile, "config", "", "config file")
	cmd.PersistentFlags().BoolVar(&verbose, "verbose", false, "verbose mode")
	return cmd
}
"""
OPTIONS_GO = """package main
func addStoreOptions(o *cmdStoreOptions, f *pflag.FlagSet) {
	f.IntVarP(&o.n, "concurrency", "n", 10, "number of concurrent goroutines")
	f.DurationVarP(&o.b, "error-retry-base-interval", "b", desync.DefaultErrorRetryBaseInterval, "delay")
}
"""
MAKE_GO = """package main
func newMakeCommand(ctx context.Context) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "make <index> <file>",
	}
	flags := cmd.Flags()
	flags.StringVarP(&opt.store, "store", "s", "", "target store, with a comma, in text")
	flags.StringVarP(&opt.chunkSize, "chunk-size", "Z", "16:64:256", "min:avg:max chunk size in kb")
	flags.BoolVar(&opt.frobnicate, "frobnicate", false, "a flag pycasync lacks")
	addStoreOptions(&opt.cmdStoreOptions, flags)
	return cmd
}
"""
SERVER_GO = """package main
func newChunkServerCommand(ctx context.Context) *cobra.Command {
	cmd := &cobra.Command{Use: "chunk-server"}
	flags := cmd.Flags()
	flags.BoolVar(&opt.encryption, "encryption", false, "encrypt")
	return cmd
}
"""
NEW_GO = """package main
func newTeleportCommand(ctx context.Context) *cobra.Command {
	cmd := &cobra.Command{Use: "teleport <index>"}
	cmd.Flags().BoolVarP(&opt.far, "far", "f", false, "far away")
	return cmd
}
"""


def _tool(*args: str) -> str:
    proc = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_small_desync_tree(tmp_path: os.PathLike[str]) -> None:
    d = os.path.join(tmp_path, "cmd", "desync")
    os.makedirs(d)
    files = {"root.go": ROOT_GO, "options.go": OPTIONS_GO, "make.go": MAKE_GO, "chunkserver.go": SERVER_GO,
             "teleport.go": NEW_GO, "make_test.go": MAKE_GO.replace("frobnicate", "ignored")}  # fmt: skip
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    out = _tool("--desync", str(tmp_path))
    lines = {tuple(line.split()[:2]): line for line in out.splitlines() if line.split()}
    assert "supported" in lines[("make", "--store,")]
    assert "store" in lines[("make", "--concurrency,")].split()  # from the helper
    assert "persistent" in lines[("make", "--config")]
    assert "no -Z" in lines[("make", "--chunk-size,")]  # desync's short name, not ours
    assert "desync commands: 3 (2 in pycasync;" in out
    assert "command/flag pairs: 13: supported 9, refused 0, missing 4" in out
    assert "supported" in lines[("chunk-server", "--encryption")]  # refused before the encryption merge
    assert "  missing   make --frobnicate" in out
    assert "  missing   teleport --far  (no such command)" in out
    assert "ignored" not in out  # _test.go files are not desync's commands


def test_desyncs_real_table() -> None:
    if not os.path.isdir(MIRROR):
        pytest.skip("no desync mirror on this machine")
    out = _tool("--brief", "--desync", MIRROR)
    assert ", missing 0" in out, out
