#!/bin/sh
# tests/time-limit.sh — the per-test time limit: make check runs every test
# program through this script (LOG_COMPILER in Makefile.am).  It runs the
# test under timeout(1), in a process group of its own: a test still running
# after BLKMAP_TEST_TIME_LIMIT seconds (default 300; a passing test takes a
# few seconds, 30 times that under TSan) gets SIGTERM, its whole group
# (servers and mirrors it started) SIGKILL 10 s later, and the test fails
# with a line naming it and the limit.  cmocka's last "[ RUN      ]" line
# just above that line in the test's .log names the hung case.  Every
# test's .log ends with how long it ran.
limit=${BLKMAP_TEST_TIME_LIMIT:-300}
case $limit in
'' | *[!0-9]*)
	echo "time-limit.sh: BLKMAP_TEST_TIME_LIMIT must be a number of seconds, not '$limit'" >&2
	exit 99 ;;
esac
[ $# -ge 1 ] || { echo "usage: time-limit.sh TEST [ARGS...]" >&2; exit 99; }

start_ms=$(date +%s%3N)
timeout --kill-after=10 "$limit" "$@"
rc=$?
elapsed_ms=$(( $(date +%s%3N) - start_ms ))
elapsed=$(( elapsed_ms / 1000 ))
# The last line of every test's .log: where make check's time goes.
echo "time-limit.sh: $1 ran $(( elapsed_ms / 1000 )).$(printf '%03d' $(( elapsed_ms % 1000 ))) s (limit ${limit} s)" >&2
# 124: timeout sent SIGTERM; 137 (128+SIGKILL): SIGTERM was not enough.
if { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && [ "$elapsed" -ge "$limit" ]; then
	echo "TIMEOUT: $1 still running after the per-test time limit of ${limit} s" \
		"(BLKMAP_TEST_TIME_LIMIT); killed; the last '[ RUN ]' line above names the case" >&2
	exit 1
fi
exit $rc
