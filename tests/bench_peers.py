#!/usr/bin/python3
"""bench_peers.py — `make bench`: blkmap's reads against the peers installed
on the machine, in the same run, on the same bytes of one blkmap-server
store (a tmpfs directory served twice: as is, and with --fault-latency-ms
2, every answer 2 ms late):
  random   cold random 4 KiB reads, one per MiB in shuffled order, each
           timed alone (median ms): blkmap through a mapping of the flat
           object, of a dataset with 1 MiB blocks (format 4 with 16 KiB
           pieces, the default: a miss fetches the 16 KiB piece, checked
           by its own sum) and of one
           with 64 KiB blocks; GDAL /vsicurl/ (python3-gdal) and fsspec's HTTP file
           with exact ranges (python3-fsspec) on the flat object.  A fresh
           handle (empty cache) each run.  ds1m_read: the same reads of
           the 1 MiB dataset through bm_read (Python's .read(): the piece
           that holds them), and ds1m_read_vs_block against a bm_read of
           the whole block each (what a 4 KiB bm_read fetched before);
           flat_read: bm_read of 4 KiB of the flat object (a Range GET
           of those 4 KiB), a read call as GDAL's and fsspec's are.
           ds1m64k_read: the same bm_reads of a dataset of 1 MiB blocks
           in 64 KiB pieces (format 3, `put --piece 64k`: the 64 KiB piece
           that holds them).
  seqsum   sequential read + SHA-256 of the whole object (median s):
           `blkmap sum URL` (flat, ds1m, ds64k) and `curl -s URL | openssl
           dgst -sha256` as whole processes; GDAL, fsspec and blkmap's
           mapping (map: the default 16 KiB blocks, map64k: 64 KiB; map_ds1m
           and map_ds64k: the datasets, whose read-ahead sends block GETs
           in parallel where the flat object's grows its Range GETs) read
           1 MiB at a time into hashlib inside this process (their
           start-up not counted).
  open     opening a handle and closing it, no read (median ms): blkmap
           on the flat object, on it opened as a plain object
           (flat_known: flat=True, one GET), and on the dataset with
           64 KiB blocks; GDAL's VSIFOpenL + VSIFCloseL on the flat object (with
           --fault-latency-ms 2, each round trip is 2 ms or more).
  The random flat line maps the flat object in the default 16 KiB blocks
  (the size GDAL fetches), flat64k in 64 KiB ones.
Placement: on a machine of few CPUs a synchronous miss costs about twice
as much when the reader and the server that answers it run on two CPUs
(each wake-up lands on an idle CPU) as when they share one, and the
scheduler picks one or the other from run to run for every peer alike
(docs/client.md, "One CPU or two").  So open and random are measured
three times: as the scheduler places them (no suffix), with this process
and the server bound to CPU 0 (_cpu0: they share one), and with the
server on CPU 0 and this process on CPU 1 (_cpu1: a server elsewhere,
each answer waking an idle CPU, as from a remote server).  The bound
lines need two CPUs; BENCH_PEERS_PLACEMENT (default "free,cpu0,cpu1")
chooses.
Order: in each run of a figure the peers take turns being first (run i
begins at the i-th), and the mount peers below run after all the others'
runs: on the development VM whatever runs first after memory was freed
meets pages its host must fault in again, which costs a mapping or a
read that fills fresh memory and not a read into a reused buffer.  And
before each peer's timed run the object's files in the server's store
are read through (not timed), so that every peer is sent pages touched
a moment ago: on that VM a page left untouched a while costs tens of µs
to touch again, and a peer reading offsets another had just read was
served faster.
The mapping peers: the lines that measure a mapping (random_4k_flat,
flat64k, ds1m, ds64k; seqsum_map*) also show the same reads through a
read-only mmap of the flat object's file on a FUSE mount of the same
server, a fresh mount each run (empty caches; the file's page cache also
dropped before the map), the same offsets timed one by one
(bytes(mv[off:off + 4096]) as for blkmap's mapping) or the same 1 MiB
reads into hashlib (start-up and mount not counted):
  rclone_mmap     rclone mount of an :http: remote, --read-only,
                  --vfs-cache-mode off.  Random: --vfs-read-chunk-size
                  128k --buffer-size 0 (Range GETs of the 128 KiB a fault
                  reads around, no read-ahead buffer; one trial each, a
                  loaded machine: 0.95 ms per miss against 1.24 with 256k,
                  1.57 with 64k, 5.6-9.7 with the 16 MiB buffer; cache
                  mode full downloads ahead into its disk cache);
                  sequential: the defaults (128 MiB chunks, doubling,
                  16 MiB read ahead; full was no faster: 2.39 s against
                  2.16 for 256 MiB).
                  rclone lists a directory from its HTML page, which
                  blkmap-server does not serve (JSON listings): it mounts
                  through nginx, which answers GET /peers/ with a link to
                  flat.bin and proxies every other request to the server
                  (kept-alive connections, unbuffered).  That hop added
                  0.044 ms to GDAL's random read (0.065 -> 0.109 ms) and
                  0.054 ms with 2 ms added (4 interleaved runs, 64 MiB).
  httpdirfs_mmap  httpdirfs --single-file-mode, its defaults (no cache;
                  --cache stopped, "This web server does not support HTTP
                  range requests", on this server), straight at the server.
  The FUSE daemon runs where this process does (_cpu0: CPU 0, _cpu1: CPU 1),
  nginx where the servers do.
  A peer whose misses take more than 10x blkmap's (its first 16 offsets
  against blkmap's flat mapping in the same run) reads 32 offsets a run;
  one whose first sixteenth of the object takes more than 10x blkmap's
  map read, scaled, stops there (its bytes checked against that part's
  sum, its time scaled to the whole object); the line says so.
One line per figure:
  peers <figure> blkmap=<x> <peer>=<y>... ratio=<blkmap / best peer>
        [ratio_map=<blkmap / best mapping peer>] [(fewer reads: which)]
ratio is against the read-call peers (GDAL, fsspec, curl | openssl),
ratio_map against the mapping peers.
Several runs, interleaved (peer after peer within a run); medians.
BENCH_PEERS_MIB (default 256) sets the size, BENCH_PEERS_RUNS (default 5)
the runs, BENCH_PEERS_FIGURES (default "open,random,seqsum") which figures,
BENCH_PEERS_PLACEMENT (above) which placements of open and random.  Not a
test: nothing is asserted, but a peer that returns other bytes in a seqsum
read stops the bench.  Runs with Debian's python (/usr/bin/python3: GDAL's
binding is there) as root or a user who may mount FUSE; a missing peer is
named and skipped.
"""
import hashlib
import mmap
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
builddir = os.path.dirname(here)
sys.path.insert(0, os.path.join(builddir, "python"))

import blkmap  # noqa: E402

MiB = 1 << 20
KiB = 1 << 10
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def start_server(root, extra):
    server = subprocess.Popen([os.path.join(builddir, "blkmap-server"), "--root", root,
                               "--listen", "127.0.0.1:0", "--max-body-bytes", str(1 << 40)] + extra,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = server.stdout.readline()
    if not first.startswith("blkmap-server: serving "):
        server.kill()
        sys.exit("bench_peers: blkmap-server did not start: %r" % first)
    return server, first.split()[-1]


def start_front(tmp, bases):
    """nginx in front of each server, for rclone: it answers GET /peers/
    with an HTML page linking flat.bin (rclone's http remote lists a
    directory from its HTML page; blkmap-server's listings are JSON) and
    proxies every other request to the server, over kept-alive
    connections, unbuffered.  Returns (process, {server URL: nginx URL})."""
    d = os.path.join(tmp, "nginx")
    os.mkdir(d)
    fronts, servers = {}, []
    for i, b in enumerate(bases):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        fronts[b] = "http://127.0.0.1:%d" % port
        servers.append("""
  upstream s%d { server %s; keepalive 64; }
  server {
    listen 127.0.0.1:%d;
    location = /peers/ { default_type text/html; return 200 '<a href="flat.bin">flat.bin</a>'; }
    location / { proxy_pass http://s%d; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering off; }
  }""" % (i, b.split("//")[1], port, i))
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""daemon off;
master_process off;
error_log %(d)s/error.log;
pid %(d)s/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(d)s/body; proxy_temp_path %(d)s/proxy; fastcgi_temp_path %(d)s/fcgi;
  uwsgi_temp_path %(d)s/uwsgi; scgi_temp_path %(d)s/scgi;%(servers)s
}
""" % {"d": d, "servers": "".join(servers)})
    proc = subprocess.Popen([NGINX, "-p", d, "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    for front in fronts.values():
        while subprocess.run(["curl", "-sf", "-o", "/dev/null", front + "/peers/"]).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                sys.exit("bench_peers: nginx did not start (%s/error.log)" % d)
            time.sleep(0.05)
    return proc, fronts


def offsets(size, seed):
    """One 4 KiB-aligned offset in each MiB, shuffled."""
    rng = random.Random(seed)
    offs = [m * MiB + rng.randrange(0, MiB // (4 * KiB)) * 4 * KiB for m in range(size // MiB)]
    rng.shuffle(offs)
    return offs


# ---- cold random 4 KiB reads: one list of per-read seconds per call ----------

def rand_blkmap(url, offs, blksize=0):
    ds = blkmap.open(url, blksize=blksize) if blksize else blkmap.open(url)
    mv = ds.map()
    out = []
    for off in offs:
        t = time.perf_counter()
        bytes(mv[off:off + 4096])
        out.append(time.perf_counter() - t)
    del mv
    ds.close()
    return out


def rand_read(url, offs, whole_block=0):
    """bm_read of 4 KiB at each offset (a dataset of large blocks: the
    piece that holds it); with whole_block, of the whole block that
    holds it instead (what a 4 KiB bm_read fetched before)."""
    ds = blkmap.open(url)
    ds.read(0, 1)  # the index leaf (a dataset), as a mapping's first miss
    out = []
    for off in offs:
        start, n = (off - off % whole_block, whole_block) if whole_block else (off, 4096)
        t = time.perf_counter()
        ds.read(start, n)
        out.append(time.perf_counter() - t)
    ds.close()
    return out


def rand_gdal(url, offs):
    from osgeo import gdal
    gdal.VSICurlClearCache()
    f = gdal.VSIFOpenL("/vsicurl/" + url, "rb")
    if f is None:
        sys.exit("bench_peers: GDAL cannot open /vsicurl/%s" % url)
    out = []
    for off in offs:
        t = time.perf_counter()
        gdal.VSIFSeekL(f, off, 0)
        gdal.VSIFReadL(1, 4096, f)
        out.append(time.perf_counter() - t)
    gdal.VSIFCloseL(f)
    return out


def rand_fsspec(url, offs):
    import fsspec
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    out = []
    with fs.open(url, "rb", cache_type="none") as f:
        for off in offs:
            t = time.perf_counter()
            f.seek(off)
            f.read(4096)
            out.append(time.perf_counter() - t)
    return out


# ---- the mapping peers: a file on a FUSE mount of the server, mmap'ed ----------

class Mounts:
    """The FUSE mounts of one server's flat object: rclone's http remote
    (through nginx, which answers rclone's listing of peers/ in HTML, the
    one thing blkmap-server does not serve, and passes every other request
    on over kept-alive connections) and httpdirfs in single-file mode
    (straight at the server).  Each mount is fresh: a new process on an
    empty directory, unmounted when the read is done."""

    def __init__(self, tmp, base, front):
        self.tmp = tmp
        self.base = base    # blkmap-server's URL
        self.front = front  # nginx's URL for the same server, or None

    def mount(self, tool, seq):
        d = tempfile.mkdtemp(prefix=tool + ".", dir=self.tmp)
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        log = open(os.path.join(d, "log"), "w+")
        if tool == "rclone":
            cache = os.path.join(d, "cache")
            conf = os.path.join(d, "rclone.conf")
            open(conf, "w").close()
            # Random: no read-ahead buffer and Range GETs of 128 KiB (the
            # read-around a fault asks the kernel for); sequential: the
            # defaults (128 MiB chunks, doubling, 16 MiB read ahead).
            # --vfs-cache-mode off in both: full measured no faster
            # sequentially and, random, downloads ahead into its disk cache.
            opts = [] if seq else ["--vfs-read-chunk-size", "128k", "--buffer-size", "0"]
            argv = ["rclone", "mount", "--config", conf, "--cache-dir", cache, "--read-only",
                    "--vfs-cache-mode", "off"] + opts + \
                   ["--http-url", self.front + "/peers/", ":http:", mnt]
        else:
            argv = ["httpdirfs", "-f", "--single-file-mode", self.base + "/peers/flat.bin", mnt]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        path = os.path.join(mnt, "flat.bin")
        deadline = time.monotonic() + 30
        while not (os.path.ismount(mnt) and os.path.exists(path)):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.unmount(proc, mnt)
                log.seek(0)
                sys.exit("bench_peers: %s did not mount: %s" % (" ".join(argv), log.read()[-2000:]))
            time.sleep(0.05)
        log.close()
        return proc, mnt, path

    def unmount(self, proc, mnt):
        subprocess.run(["fusermount3", "-u", "-z", mnt], stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def mapped(self, tool, seq, fn):
        """fn(memoryview of the mounted file mmap'ed read-only), on a fresh
        mount whose page cache of the file is dropped before the map."""
        proc, mnt, path = self.mount(tool, seq)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
                mv = memoryview(m)
                try:
                    return fn(mv)
                finally:
                    mv.release()
                    m.close()
            finally:
                os.close(fd)
        finally:
            self.unmount(proc, mnt)


def rand_mount(mounts, tool, offs, ours):
    """rand_blkmap's reads through a mount's mapping.  A peer whose misses
    take more than 10x blkmap's (ours: the median of blkmap's flat
    mapping in this run) after 16 offsets stops at 32."""
    def reads(mv):
        out = []
        for off in offs:
            t = time.perf_counter()
            bytes(mv[off:off + 4096])
            out.append(time.perf_counter() - t)
            if len(out) >= 32 and statistics.median(out[:16]) > 10 * ours:
                break
        return out
    return mounts.mapped(tool, False, reads)


# ---- open + close, no read: seconds per call ------------------------------------

def open_blkmap(url, **options):
    t = time.perf_counter()
    blkmap.open(url, **options).close()
    return time.perf_counter() - t


def open_gdal(url):
    from osgeo import gdal
    gdal.VSICurlClearCache()
    t = time.perf_counter()
    f = gdal.VSIFOpenL("/vsicurl/" + url, "rb")
    if f is None:
        sys.exit("bench_peers: GDAL cannot open /vsicurl/%s" % url)
    gdal.VSIFCloseL(f)
    return time.perf_counter() - t


# ---- sequential read + SHA-256: seconds per call ---------------------------------

def seq_blkmap(url, want):
    t = time.perf_counter()
    out = subprocess.run([os.path.join(builddir, "blkmap"), "sum", url], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    dt = time.perf_counter() - t
    if out.split()[0] != want:
        sys.exit("bench_peers: blkmap sum %s: %s, expected %s" % (url, out.split()[0], want))
    return dt


def seq_map(url, want, blksize=0):
    """Sequential read + SHA-256 through a mapping, in this process (as
    GDAL's and fsspec's lines): what a program that maps the object pays
    for the block size (one fault per run of blocks read ahead: virtmem's
    fault-around)."""
    t = time.perf_counter()
    ds = blkmap.open(url, blksize=blksize) if blksize else blkmap.open(url)
    mv = ds.map()
    h = hashlib.sha256()
    for off in range(0, len(mv), MiB):
        h.update(mv[off:off + MiB])
    del mv
    ds.close()
    dt = time.perf_counter() - t
    if h.hexdigest() != want:
        sys.exit("bench_peers: mapped read of %s hashes to %s" % (url, h.hexdigest()))
    return dt


def seq_curl(url, want):
    t = time.perf_counter()
    out = subprocess.run(["sh", "-c", "curl -sf \"$0\" | openssl dgst -sha256", url], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    dt = time.perf_counter() - t
    if out.split()[-1] != want:
        sys.exit("bench_peers: curl | openssl %s: %s, expected %s" % (url, out, want))
    return dt


def seq_gdal(url, want):
    from osgeo import gdal
    gdal.VSICurlClearCache()
    t = time.perf_counter()
    f = gdal.VSIFOpenL("/vsicurl/" + url, "rb")
    h = hashlib.sha256()
    while True:
        b = gdal.VSIFReadL(1, MiB, f)
        if not b:
            break
        h.update(b)
    gdal.VSIFCloseL(f)
    dt = time.perf_counter() - t
    if h.hexdigest() != want:
        sys.exit("bench_peers: GDAL read of %s hashes to %s" % (url, h.hexdigest()))
    return dt


def seq_fsspec(url, want):
    import fsspec
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    t = time.perf_counter()
    h = hashlib.sha256()
    with fs.open(url, "rb", block_size=8 * MiB) as f:
        while True:
            b = f.read(MiB)
            if not b:
                break
            h.update(b)
    dt = time.perf_counter() - t
    if h.hexdigest() != want:
        sys.exit("bench_peers: fsspec read of %s hashes to %s" % (url, h.hexdigest()))
    return dt


def seq_mount(mounts, tool, want, part_bytes, want_part, ours):
    """seq_map's read through a mount's mapping.  A peer whose first
    part_bytes (a sixteenth of the object) take more than 10x blkmap's
    whole mapped read (ours, this run) scaled to them stops there: its time
    is scaled to the whole object (second value: True) and its bytes
    checked against the sum of that part."""
    part = False

    def read(mv):
        nonlocal part
        t = time.perf_counter()
        h = hashlib.sha256()
        for off in range(0, len(mv), MiB):
            h.update(mv[off:off + MiB])
            if off + MiB == part_bytes and \
               (time.perf_counter() - t) * len(mv) / part_bytes > 10 * ours:
                part = True
                break
        return time.perf_counter() - t, h.hexdigest(), len(mv)
    dt, got, size = mounts.mapped(tool, True, read)
    if got != (want_part if part else want):
        sys.exit("bench_peers: %s: the mapped read of the mounted object hashes to %s"
                 % (tool, got))
    return (dt * size / part_bytes if part else dt), part


def bench_open(b, label, runs, gdal_ok):
    flat = b + "/peers/flat.bin"
    o = {k: [] for k in ("flat", "flat_known", "ds64k", "gdal")}
    for i in range(20 * runs):
        o["flat"].append(open_blkmap(flat))
        o["flat_known"].append(open_blkmap(flat, flat=True))
        o["ds64k"].append(open_blkmap(b + "/peers/ds64k"))
        if gdal_ok:
            o["gdal"].append(open_gdal(flat))
    med = {k: statistics.median(v) * 1e3 if v else None for k, v in o.items()}
    for what in ("flat", "flat_known", "ds64k"):
        line("open_%s%s" % (what, label), "ms", [("blkmap", med[what]), ("gdal", med["gdal"])])


class Warm:
    """Reads an object's files in the server's store (root/objects/peers/
    NAME: a flat object's file, a dataset's directory) before a peer's
    timed run: the server then sends every peer pages touched a moment
    ago.  On the development VM a page untouched for a while costs tens
    of µs to touch again, so a peer that read offsets just read by
    another (flat_read after the flat mapping) was faster than one that
    came first to its object (docs/client.md, "Where a miss spends its
    time")."""
    def __init__(self, root):
        self.root = os.path.join(root, "objects", "peers")
        self.buf = bytearray(MiB)  # one buffer: the reads free no memory

    def __call__(self, name):
        path = os.path.join(self.root, name)
        files = [path] if os.path.isfile(path) else \
            [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
        for f in files:
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(self.buf):
                    pass


def object_of(key):
    """The object a step's peer reads (Warm's NAME)."""
    for name in ("ds1m64k", "ds1m", "ds64k"):
        if name in key:
            return name
    return "flat.bin"


def rotated(steps, i):
    """steps, begun at step i (modulo their number): each peer's runs are
    not all first after what ran before the figure (on the development
    VM, whatever reads first after memory was freed meets memory its host
    must fault in again: docs/client.md, "Where a miss spends its
    time")."""
    k = i % len(steps)
    return steps[k:] + steps[:k]


def bench_random(b, label, runs, size, gdal_ok, fsspec_ok, mounts, tools, warm):
    flat = b + "/peers/flat.bin"
    rruns = runs if "_latency" not in label else max(1, runs // 2)
    r = {k: [] for k in ("flat", "flat64k", "ds1m", "ds1m_read", "ds1m64k_read", "ds1m_read_block",
                         "ds64k", "flat_read", "gdal", "fsspec") + tuple(tools)}
    def whole_blocks(offs):
        out = rand_read(b + "/peers/ds1m", offs, MiB)
        # Those whole-block reads move 256 MiB: the figure measured right
        # after them paid for it (ds64k's misses 0.20 ms against 0.13 ms
        # one second later, flat64k's 0.12-0.13 in the same runs).
        time.sleep(1)
        return out
    steps = [("flat", lambda offs: rand_blkmap(flat, offs)),
             ("flat64k", lambda offs: rand_blkmap(flat, offs, 64 * KiB)),
             ("ds1m", lambda offs: rand_blkmap(b + "/peers/ds1m", offs)),
             ("ds1m_read", lambda offs: rand_read(b + "/peers/ds1m", offs)),
             ("ds1m64k_read", lambda offs: rand_read(b + "/peers/ds1m64k", offs)),
             ("ds1m_read_block", whole_blocks),
             ("ds64k", lambda offs: rand_blkmap(b + "/peers/ds64k", offs)),
             ("flat_read", lambda offs: rand_read(flat, offs))]
    if gdal_ok:
        steps.append(("gdal", lambda offs: rand_gdal(flat, offs)))
    if fsspec_ok:
        steps.append(("fsspec", lambda offs: rand_fsspec(flat, offs)))
    flat_med = []
    for i in range(rruns):
        offs = offsets(size, i)
        for key, fn in rotated(steps, i):
            warm(object_of(key))
            got = fn(offs)
            r[key] += got
            if key == "flat":
                flat_med.append(statistics.median(got))
    # The mount peers after all the others' runs: what their processes
    # and page caches leave behind is not what the next figure meets.
    for i in range(rruns):
        for tool in tools:
            warm("flat.bin")
            r[tool] += rand_mount(mounts, tool, offsets(size, i), flat_med[i])
    med = {k: statistics.median(v) * 1e3 if v else None for k, v in r.items()}
    cut = ["%s: %d of %d offsets" % (t, len(r[t]), rruns * len(offs))
           for t in tools if len(r[t]) < rruns * len(offs)]
    maps = [(t + "_mmap", med[t]) for t in tools]
    for what in ("flat", "flat64k", "ds1m", "ds1m_read", "ds1m64k_read", "ds64k", "flat_read"):
        mapping = not what.endswith("_read")
        line("random_4k_%s%s" % (what, label), "ms",
             [("blkmap", med[what]), ("gdal", med["gdal"]), ("fsspec", med["fsspec"])],
             maps if mapping else [], "; ".join(cut) if mapping else "")
    line("random_4k_ds1m_read_vs_block%s" % label, "ms",
         [("piece", med["ds1m_read"]), ("block", med["ds1m_read_block"])])


def bench_seqsum(b, label, runs, size, want, part, gdal_ok, fsspec_ok, mounts, tools, warm):
    """part: (bytes, their SHA-256): the first sixteenth of the object,
    where a peer too slow stops (seq_mount)."""
    flat = b + "/peers/flat.bin"
    s = {k: [] for k in ("flat", "ds1m", "ds64k", "map", "map64k", "map_ds1m", "map_ds64k",
                         "curl", "gdal", "fsspec") + tuple(tools)}
    scaled = set()
    steps = [("flat", lambda: seq_blkmap(flat, want)),
             ("map", lambda: seq_map(flat, want)),
             ("map64k", lambda: seq_map(flat, want, 64 * KiB)),
             ("ds1m", lambda: seq_blkmap(b + "/peers/ds1m", want)),
             ("ds64k", lambda: seq_blkmap(b + "/peers/ds64k", want)),
             ("map_ds1m", lambda: seq_map(b + "/peers/ds1m", want)),
             ("map_ds64k", lambda: seq_map(b + "/peers/ds64k", want)),
             ("curl", lambda: seq_curl(flat, want))]
    if gdal_ok:
        steps.append(("gdal", lambda: seq_gdal(flat, want)))
    if fsspec_ok:
        steps.append(("fsspec", lambda: seq_fsspec(flat, want)))
    for i in range(runs):
        for key, fn in rotated(steps, i):
            warm(object_of(key))
            s[key].append(fn())
    for i in range(runs):  # the mount peers last, as in bench_random
        for tool in tools:
            warm("flat.bin")
            dt, cut = seq_mount(mounts, tool, want, part[0], part[1], s["map"][i])
            s[tool].append(dt)
            if cut:
                scaled.add(tool)
    med = {k: statistics.median(v) if v else None for k, v in s.items()}
    note = "; ".join("%s: the first %d MiB a run, time x%g" % (t, part[0] // MiB, size / part[0])
                     for t in tools if t in scaled)
    maps = [(t + "_mmap", med[t]) for t in tools]
    for what in ("flat", "ds1m", "ds64k", "map", "map64k", "map_ds1m", "map_ds64k"):
        mapping = what.startswith("map")
        line("seqsum_%s%s" % (what, label), "s",
             [("blkmap", med[what]), ("curl|openssl", med["curl"]), ("gdal", med["gdal"]),
              ("fsspec", med["fsspec"])], maps if mapping else [], note if mapping else "")


def bind(pid, cpus):
    """Binds every thread of process pid (0: this one) to cpus."""
    pid = pid or os.getpid()
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile


def placements(servers):
    """Yields (suffix) for each placement asked for, with this process and
    the servers bound as it says; unbound again at the end."""
    asked = os.environ.get("BENCH_PEERS_PLACEMENT", "free,cpu0,cpu1").split(",")
    every = os.sched_getaffinity(0)
    for p in asked:
        if p == "free":
            yield ""
            continue
        if p not in ("cpu0", "cpu1"):
            sys.exit("bench_peers: BENCH_PEERS_PLACEMENT: %r is not free, cpu0 or cpu1" % p)
        if not {0, 1} <= every:
            print("bench_peers: no _%s lines (needs CPUs 0 and 1, may use %s)" % (p, sorted(every)))
            continue
        for srv in servers:
            bind(srv.pid, {0})
        bind(0, {0} if p == "cpu0" else {1})
        try:
            yield "_" + p
        finally:
            bind(0, every)
            for srv in servers:
                bind(srv.pid, every)


def have(module):
    try:
        __import__(module)
        return True
    except ImportError as e:
        print("bench_peers: no %s line (%s)" % (module, e))
        return False


def have_tool(tool, *needs):
    """The mapping peer tool, if it and what it needs are installed."""
    missing = [t for t in (tool,) + needs if not shutil.which(t) and not os.path.exists(t)]
    if missing:
        print("bench_peers: no %s_mmap column (%s not installed)" % (tool, ", ".join(missing)))
        return False
    return True


def line(figure, unit, results, maps=(), note=""):
    """results: [(name, value)], blkmap's first; ratio = blkmap / best
    peer of those.  maps: [(name, value)], the mapping peers: ratio_map =
    blkmap / best of them.  note: in parentheses at the end."""
    ours = results[0][1]
    cols = " ".join("%s=%.3f" % (n, v) for n, v in list(results) + list(maps) if v is not None)
    tail = ""
    for key, group in (("ratio", results[1:]), ("ratio_map", maps)):
        peers = [(n, v) for n, v in group if v is not None]
        if peers:
            best = min(peers, key=lambda p: p[1])
            tail += " %s=%.2f (vs %s)" % (key, ours / best[1], best[0])
    if note:
        tail += " (%s)" % note
    print("peers %s %s %s%s" % (figure, unit, cols, tail))
    sys.stdout.flush()


def main():
    mib = int(os.environ.get("BENCH_PEERS_MIB", "256"))
    runs = int(os.environ.get("BENCH_PEERS_RUNS", "5"))
    figures = os.environ.get("BENCH_PEERS_FIGURES", "open,random,seqsum").split(",")
    size = mib * MiB
    os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    gdal_ok = have("osgeo.gdal")
    fsspec_ok = have("fsspec") and have("aiohttp")
    tools = []
    if "random" in figures or "seqsum" in figures:
        tools = [t for t, needs in (("rclone", ("fusermount3", NGINX)),
                                    ("httpdirfs", ("fusermount3",)))
                 if have_tool(t, *needs)]
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = tempfile.mkdtemp(prefix="bench_peers.", dir=shm)
    tmp = tempfile.mkdtemp(prefix="bench_peers.")  # mount points, nginx, logs
    servers = []
    try:
        plain, base = start_server(root, [])
        servers.append(plain)
        data = os.urandom(size)
        want = hashlib.sha256(data).hexdigest()
        part_bytes = size // 16 // MiB * MiB
        part = (part_bytes, hashlib.sha256(data[:part_bytes]).hexdigest())
        path = os.path.join(root, "input")
        with open(path, "wb") as f:
            f.write(data)
        del data
        subprocess.run(["curl", "-sf", "-T", path, base + "/peers/flat.bin"], check=True)
        env = dict(os.environ)
        for bs, piece, name in ((MiB, 0, "ds1m"), (64 * KiB, 0, "ds64k"), (MiB, 64 * KiB, "ds1m64k")):
            subprocess.run([os.path.join(builddir, "blkmap"), "put", "--blksize", str(bs)] +
                           (["--piece", str(piece)] if piece else []) +
                           [path, base + "/peers/" + name],
                           check=True, env=env, stdout=subprocess.DEVNULL)
        os.unlink(path)
        slow, slow_base = start_server(root, ["--fault-latency-ms", "2"])
        servers.append(slow)
        fronts = {}
        if "rclone" in tools:
            front, fronts = start_front(tmp, (base, slow_base))
            servers.append(front)
        warm = Warm(root)
        print("bench_peers: %d MiB, %d runs, medians; random: ms per 4 KiB read; "
              "seqsum: s per read + SHA-256" % (mib, runs))
        for label, b in (("", base), ("_latency2ms", slow_base)):
            mounts = Mounts(tmp, b, fronts.get(b))
            for where in placements(servers):
                if "open" in figures:
                    bench_open(b, label + where, runs, gdal_ok)
                if "random" in figures:
                    bench_random(b, label + where, runs, size, gdal_ok, fsspec_ok, mounts, tools,
                                 warm)
            if "seqsum" in figures:
                bench_seqsum(b, label, runs, size, want, part, gdal_ok, fsspec_ok, mounts, tools,
                             warm)
    finally:
        for srv in servers:
            srv.terminate()
            srv.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
