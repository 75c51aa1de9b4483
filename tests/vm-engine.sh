#!/bin/sh
# tests/vm-engine.sh — runs a virtmem test program under one fault engine:
# make check runs tests/sigsegv/test_virtmem.sigsegv and
# tests/uffd/test_virtmem.uffd (empty stamp files, see tests/local.mk)
# through this script, which runs tests/test_virtmem with
# VIRTMEM_ENGINE=sigsegv or uffd under the per-test time limit.  A program
# whose engine cannot run here exits 77 (skipped).
[ $# -eq 2 ] || { echo "usage: vm-engine.sh ENGINE TEST.ENGINE" >&2; exit 99; }
engine=$1
stamp=${2%.*}
prog=$(dirname "$(dirname "$stamp")")/$(basename "$stamp")
VIRTMEM_ENGINE=$engine
export VIRTMEM_ENGINE
exec ${SHELL:-/bin/sh} "$(dirname "$0")/time-limit.sh" "$prog"
