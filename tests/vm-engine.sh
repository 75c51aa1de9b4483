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
# Under ThreadSanitizer (./quickstart tsan): the uffd engine calls nothing
# signal-unsafe from its SIGSEGV handler (no load, no malloc), so that
# report class, off for the SIGSEGV engine, is on again.  Not for the
# programs that run SIGSEGV-engine handles whatever is asked: overlay
# handles, test_virtmem_unwind's engine choice by flags, and
# test_virtmem_faults' children where the uffd engine is refused.
case "$(basename "$prog")" in
test_virtmem_overlay|test_virtmem_unwind|test_virtmem_faults) safe_only=no ;;
*) safe_only=yes ;;
esac
if [ "$engine" = uffd ] && [ "$safe_only" = yes ]; then
	TSAN_OPTIONS="${TSAN_OPTIONS-} report_signal_unsafe=1"
	export TSAN_OPTIONS
fi
exec ${SHELL:-/bin/sh} "$(dirname "$0")/time-limit.sh" "$prog"
