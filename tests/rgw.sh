#!/usr/bin/env bash
# tests/rgw.sh — a throwaway Ceph RADOS Gateway (S3) on loopback for the tests.
#
#   rgw.sh start DIR      start a one-node cluster in the new directory DIR:
#                         one mon, one OSD on memstore (data in RAM), radosgw
#                         (beast) on 127.0.0.1, a user with S3 keys; prints
#                         endpoint=, access_key=, secret_key=, dir= lines
#   rgw.sh stop DIR       kill what DIR's cluster runs and remove DIR
#   rgw.sh shared STATE   the instance shared by one `make check`: the first
#                         caller starts it (under a lock in the directory
#                         STATE), later ones reuse it; it is stopped within a
#                         second after its owner exits (the nearest `make`
#                         above the caller, else the caller itself; the
#                         caller is $BLKMAP_RGW_CALLER, else the parent)
#
# Exit status 77 (automake's SKIP) with one line on stderr when radosgw or
# ceph is not installed; 1 with the reason when it does not come up.  Ports
# are random free ones below the ephemeral range; nothing runs as a service
# and nothing is left running: every daemon's pid is in DIR/run, stop kills
# them all (SIGKILL: the data is throwaway).
set -uo pipefail

BINS=(ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool ceph-authtool)
ACCESS_KEY=BLKMAPTESTACCESSKEY
SECRET_KEY=blkmap-test-secret-key-0123456789abcdef

say() { printf 'rgw.sh: %s\n' "$*" >&2; }

check_installed() {
	local b
	for b in "${BINS[@]}"; do
		if ! command -v "$b" >/dev/null 2>&1; then
			say "$b not found (Debian packages radosgw ceph-mon ceph-osd; ./quickstart installs them)"
			exit 77
		fi
	done
}

# free_port: a port in 20000..32767 that nothing listens on now.
free_port() {
	local p i
	for i in $(seq 50); do
		p=$((20000 + RANDOM % 12768))
		# a connection refused: nothing listens there now
		(: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
	done
	return 1
}

# wait_for SECONDS CMD...: run CMD every 0.2 s until it succeeds; bounded.
wait_for() {
	local limit=$(( $1 * 5 )) i
	shift
	for ((i = 0; i < limit; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

write_conf() {
	local dir=$1 fsid=$2 mport=$3 rport=$4
	cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mport
# No cephx: the cluster is private to this directory and loopback.  The
# client side must say so too or radosgw never reaches the mon.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
keyring = $dir/keyring
mon data = $dir/mon.\$id
osd data = $dir/osd.\$id
osd objectstore = memstore
memstore device bytes = 2147483648
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
# radosgw creates its pools at start, each one or two mon commits: with
# the default 1 s between paxos proposals the gateway took 11 s to answer
# (2.7 s from nothing to answering with these).
paxos propose interval = 0.05
paxos min wait = 0.01
osd pool default pg autoscale mode = off
mon warn on pool no redundancy = false

[client.rgw]
# tcp_nodelay: beast writes a response's head and body separately; with
# Nagle's algorithm on, the body waits for the ACK of the head, which the
# client delays (40 ms): every request on a kept-alive connection took
# 42 ms instead of 1 ms.
rgw frontends = beast endpoint=127.0.0.1:$rport tcp_nodelay=1
rgw thread pool size = 32
EOF
}

# rgw_answers PORT: radosgw (not some other server) answers on PORT.
rgw_answers() {
	curl -sS --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null | grep -q ListAllMyBucketsResult
}

osd_up() {
	ceph -c "$1/ceph.conf" --connect-timeout 5 osd dump 2>/dev/null | grep -q '^osd\.0 up'
}

# try_start DIR: one attempt on fresh ports; 0 when radosgw answers.
try_start() {
	local dir=$1 fsid mport rport uuid log=$1/log/start.log
	fsid=$(cat /proc/sys/kernel/random/uuid) && mport=$(free_port) && rport=$(free_port) || return 1
	[ "$mport" != "$rport" ] || return 1
	mkdir -p "$dir/run" "$dir/log" "$dir/mon.a" "$dir/osd.0"
	write_conf "$dir" "$fsid" "$mport" "$rport"
	local c=(-c "$dir/ceph.conf")
	{
		ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' &&
		monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mport]" "$dir/monmap" &&
		ceph-mon "${c[@]}" --mkfs -i a --monmap "$dir/monmap" &&
		ceph-mon "${c[@]}" -i a
	} </dev/null >>"$log" 2>&1 || { say "ceph-mon did not start (see $log)"; return 1; }
	uuid=$(cat /proc/sys/kernel/random/uuid)
	if ! ceph "${c[@]}" --connect-timeout 30 osd new "$uuid" </dev/null >>"$log" 2>&1; then
		say "the mon on port $mport does not answer (see $log)"
		return 1
	fi
	{
		ceph-osd "${c[@]}" -i 0 --mkfs --osd-uuid "$uuid" &&
		ceph-osd "${c[@]}" -i 0
	} </dev/null >>"$log" 2>&1 || { say "ceph-osd did not start (see $log)"; return 1; }
	wait_for 60 osd_up "$dir" || { say "osd.0 not up after 60 s (see $dir/log)"; return 1; }
	radosgw "${c[@]}" -n client.rgw </dev/null >>"$log" 2>&1 ||
		{ say "radosgw did not start (see $log)"; return 1; }
	wait_for 120 rgw_answers "$rport" ||
		{ say "radosgw not answering on port $rport after 120 s (see $dir/log)"; return 1; }
	radosgw-admin "${c[@]}" -n client.admin user create --uid=blkmap \
		--display-name=blkmap --access-key="$ACCESS_KEY" \
		--secret-key="$SECRET_KEY" </dev/null >>"$log" 2>&1 ||
		{ say "radosgw-admin user create failed (see $log)"; return 1; }
	cat >"$dir/env" <<EOF
endpoint=http://127.0.0.1:$rport
access_key=$ACCESS_KEY
secret_key=$SECRET_KEY
dir=$dir
EOF
}

kill_daemons() {
	local dir=$1 p pid
	for p in "$dir"/run/*.pid; do
		[ -f "$p" ] || continue
		pid=$(cat "$p" 2>/dev/null) || continue
		[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	done
	# A daemon that died before writing its pid file left nothing to kill;
	# one that is being started may still be writing it: wait for the
	# killed ones to be gone, bounded.
	for p in "$dir"/run/*.pid; do
		[ -f "$p" ] || continue
		pid=$(cat "$p" 2>/dev/null) || continue
		[ -n "$pid" ] && wait_for 10 gone "$pid"
	done
	return 0
}

# gone PID: the process has exited (a zombie counts: whoever adopted it
# may never reap it).
gone() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 0
	[ -z "$st" ] || [ "$st" = Z ]
}

cmd_start() {
	local dir=$1 attempt
	check_installed
	for attempt in 1 2 3; do
		mkdir -p "$dir" || exit 1
		if try_start "$dir"; then
			cat "$dir/env"
			return 0
		fi
		kill_daemons "$dir"
		[ "$attempt" -lt 3 ] && rm -rf "$dir"
	done
	say "radosgw did not come up in 3 attempts; logs kept in $dir/log"
	exit 1
}

cmd_stop() {
	local dir=$1
	[ -d "$dir" ] || return 0
	kill_daemons "$dir"
	rm -rf "$dir"
}

# owner_pid: the nearest ancestor named make (or gmake) of the caller
# (BLKMAP_RGW_CALLER, else this script's parent), else the caller.
owner_pid() {
	local caller=${BLKMAP_RGW_CALLER:-$PPID} pid comm ppid
	pid=$caller
	[ -n "${BLKMAP_RGW_OWNER:-}" ] && { echo "$BLKMAP_RGW_OWNER"; return; }
	while [ "$pid" -gt 1 ] 2>/dev/null; do
		comm=$(cat "/proc/$pid/comm" 2>/dev/null) || break
		case $comm in make|gmake) echo "$pid"; return ;; esac
		# comm may hold spaces: read the fields after the ')'
		ppid=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f2)
		[ -n "$ppid" ] || break
		pid=$ppid
	done
	echo "$caller"
}

cmd_shared() {
	local state=$1 owner env inst
	check_installed
	mkdir -p "$state" || exit 1
	owner=$(owner_pid)
	exec 9>"$state/rgw.lock"
	flock -w 600 9 || { say "waited 600 s for $state/rgw.lock"; exit 1; }
	# Instances whose owner is gone are stopped (their watchdog died too).
	for env in "$state"/rgw-*.env; do
		[ -f "$env" ] || continue
		local o=${env##*/rgw-}
		o=${o%.env}
		if ! kill -0 "$o" 2>/dev/null; then
			inst=$(sed -n 's/^dir=//p' "$env")
			[ -n "$inst" ] && cmd_stop "$inst"
			rm -f "$env"
		fi
	done
	env=$state/rgw-$owner.env
	if [ -f "$env" ]; then
		cat "$env"
		return 0
	fi
	inst=$(mktemp -d "${TMPDIR:-/tmp}/blkmap-rgw.XXXXXX") || exit 1
	# The daemons must not inherit the lock's descriptor (they would hold
	# the lock as long as they run).
	cmd_start "$inst" 9>&- >/dev/null || exit $?
	cp "$inst/env" "$env.tmp" && mv "$env.tmp" "$env"
	# The watchdog: stops the instance once the owner has exited.
	setsid bash -c '
		while kill -0 "$1" 2>/dev/null && [ -f "$3" ]; do sleep 1; done
		exec 9>"$4"; flock -w 600 9
		rm -f "$3"; bash "$0" stop "$2"' \
		"$0" "$owner" "$inst" "$env" "$state/rgw.lock" \
		</dev/null >/dev/null 2>&1 9>&- &
	cat "$env"
}

case ${1:-} in
start) [ $# -eq 2 ] || { say "usage: rgw.sh start DIR"; exit 2; }; cmd_start "$2" ;;
stop) [ $# -eq 2 ] || { say "usage: rgw.sh stop DIR"; exit 2; }; cmd_stop "$2" ;;
shared) [ $# -eq 2 ] || { say "usage: rgw.sh shared STATEDIR"; exit 2; }; cmd_shared "$2" ;;
*) say "usage: rgw.sh start DIR | stop DIR | shared STATEDIR"; exit 2 ;;
esac
