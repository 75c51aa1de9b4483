#!/usr/bin/python3
"""bench_peers.py — `make bench`: blkmap's reads against the peers installed
on the machine, in the same run, on the same bytes of one blkmap-server
store (a tmpfs directory served twice: as is, and with --fault-latency-ms
2, every answer 2 ms late):
  random   cold random 4 KiB reads, one per MiB in shuffled order, each
           timed alone (median ms): blkmap through a mapping of the flat
           object, of a dataset with 1 MiB blocks (format 3: a miss
           fetches the 64 KiB piece, checked by its own sum) and of one
           with 64 KiB blocks; GDAL /vsicurl/ (python3-gdal) and fsspec's HTTP file
           with exact ranges (python3-fsspec) on the flat object.  A fresh
           handle (empty cache) each run.  ds1m_read: the same reads of
           the 1 MiB dataset through bm_read (Python's .read(): the piece
           that holds them), and ds1m_read_vs_block against a bm_read of
           the whole block each (what a 4 KiB bm_read fetched before);
           flat_read: bm_read of 4 KiB of the flat object (a Range GET
           of those 4 KiB), a read call as GDAL's and fsspec's are.
  seqsum   sequential read + SHA-256 of the whole object (median s):
           `blkmap sum URL` (flat, ds1m, ds64k) and `curl -s URL | openssl
           dgst -sha256` as whole processes; GDAL, fsspec and blkmap's
           mapping (map: the default 16 KiB blocks, map64k: 64 KiB; map_ds1m
           and map_ds64k: the datasets, whose read-ahead sends block GETs
           in parallel where the flat object's grows its Range GETs) read
           1 MiB at a time into hashlib inside this process (their
           start-up not counted).
  open     opening a handle and closing it, no read (median ms): blkmap
           on the flat object and on the dataset with 64 KiB blocks;
           GDAL's VSIFOpenL + VSIFCloseL on the flat object (with
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
One line per figure:
  peers <figure> blkmap=<x> <peer>=<y>... ratio=<blkmap / best peer>
Several runs, interleaved (peer after peer within a run); medians.
BENCH_PEERS_MIB (default 256) sets the size, BENCH_PEERS_RUNS (default 5)
the runs, BENCH_PEERS_FIGURES (default "open,random,seqsum") which figures,
BENCH_PEERS_PLACEMENT (above) which placements of open and random.  Not a test: nothing is asserted.  Runs with Debian's python
(/usr/bin/python3: GDAL's binding is there); a missing peer is named and
skipped.
"""
import hashlib
import os
import random
import shutil
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


def start_server(root, extra):
    server = subprocess.Popen([os.path.join(builddir, "blkmap-server"), "--root", root,
                               "--listen", "127.0.0.1:0", "--max-body-bytes", str(1 << 40)] + extra,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = server.stdout.readline()
    if not first.startswith("blkmap-server: serving "):
        server.kill()
        sys.exit("bench_peers: blkmap-server did not start: %r" % first)
    return server, first.split()[-1]


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
    """bm_read of 4 KiB at each offset (format 3 with large blocks: the
    64 KiB piece that holds it); with whole_block, of the whole block that
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


# ---- open + close, no read: seconds per call ------------------------------------

def open_blkmap(url):
    t = time.perf_counter()
    blkmap.open(url).close()
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


def bench_open(b, label, runs, gdal_ok):
    flat = b + "/peers/flat.bin"
    o = {k: [] for k in ("flat", "ds64k", "gdal")}
    for i in range(20 * runs):
        o["flat"].append(open_blkmap(flat))
        o["ds64k"].append(open_blkmap(b + "/peers/ds64k"))
        if gdal_ok:
            o["gdal"].append(open_gdal(flat))
    med = {k: statistics.median(v) * 1e3 if v else None for k, v in o.items()}
    for what in ("flat", "ds64k"):
        line("open_%s%s" % (what, label), "ms", [("blkmap", med[what]), ("gdal", med["gdal"])])


def bench_random(b, label, runs, size, gdal_ok, fsspec_ok):
    flat = b + "/peers/flat.bin"
    rruns = runs if "_latency" not in label else max(1, runs // 2)
    r = {k: [] for k in ("flat", "flat64k", "ds1m", "ds1m_read", "ds1m_read_block", "ds64k",
                         "flat_read", "gdal", "fsspec")}
    for i in range(rruns):
        offs = offsets(size, i)
        r["flat"] += rand_blkmap(flat, offs)
        r["flat64k"] += rand_blkmap(flat, offs, 64 * KiB)
        r["ds1m"] += rand_blkmap(b + "/peers/ds1m", offs)
        r["ds1m_read"] += rand_read(b + "/peers/ds1m", offs)
        r["ds1m_read_block"] += rand_read(b + "/peers/ds1m", offs, MiB)
        # Those whole-block reads move 256 MiB: the figure measured right
        # after them paid for it (ds64k's misses 0.20 ms against 0.13 ms
        # one second later, flat64k's 0.12-0.13 in the same runs).
        time.sleep(1)
        r["ds64k"] += rand_blkmap(b + "/peers/ds64k", offs)
        r["flat_read"] += rand_read(flat, offs)
        if gdal_ok:
            r["gdal"] += rand_gdal(flat, offs)
        if fsspec_ok:
            r["fsspec"] += rand_fsspec(flat, offs)
    med = {k: statistics.median(v) * 1e3 if v else None for k, v in r.items()}
    for what in ("flat", "flat64k", "ds1m", "ds1m_read", "ds64k", "flat_read"):
        line("random_4k_%s%s" % (what, label), "ms",
             [("blkmap", med[what]), ("gdal", med["gdal"]), ("fsspec", med["fsspec"])])
    line("random_4k_ds1m_read_vs_block%s" % label, "ms",
         [("piece", med["ds1m_read"]), ("block", med["ds1m_read_block"])])


def bench_seqsum(b, label, runs, want, gdal_ok, fsspec_ok):
    flat = b + "/peers/flat.bin"
    s = {k: [] for k in ("flat", "ds1m", "ds64k", "map", "map64k", "map_ds1m", "map_ds64k",
                         "curl", "gdal", "fsspec")}
    for i in range(runs):
        s["flat"].append(seq_blkmap(flat, want))
        s["map"].append(seq_map(flat, want))
        s["map64k"].append(seq_map(flat, want, 64 * KiB))
        s["ds1m"].append(seq_blkmap(b + "/peers/ds1m", want))
        s["ds64k"].append(seq_blkmap(b + "/peers/ds64k", want))
        s["map_ds1m"].append(seq_map(b + "/peers/ds1m", want))
        s["map_ds64k"].append(seq_map(b + "/peers/ds64k", want))
        s["curl"].append(seq_curl(flat, want))
        if gdal_ok:
            s["gdal"].append(seq_gdal(flat, want))
        if fsspec_ok:
            s["fsspec"].append(seq_fsspec(flat, want))
    med = {k: statistics.median(v) if v else None for k, v in s.items()}
    for what in ("flat", "ds1m", "ds64k", "map", "map64k", "map_ds1m", "map_ds64k"):
        line("seqsum_%s%s" % (what, label), "s",
             [("blkmap", med[what]), ("curl|openssl", med["curl"]), ("gdal", med["gdal"]),
              ("fsspec", med["fsspec"])])


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


def line(figure, unit, results):
    """results: [(name, value)], blkmap's first; ratio = blkmap / best peer."""
    ours = results[0][1]
    peers = [(n, v) for n, v in results[1:] if v is not None]
    best = min(peers, key=lambda p: p[1]) if peers else None
    cols = " ".join("%s=%.3f" % (n, v) for n, v in results if v is not None)
    tail = " ratio=%.2f (vs %s)" % (ours / best[1], best[0]) if best else ""
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
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = tempfile.mkdtemp(prefix="bench_peers.", dir=shm)
    servers = []
    try:
        plain, base = start_server(root, [])
        servers.append(plain)
        data = os.urandom(size)
        want = hashlib.sha256(data).hexdigest()
        path = os.path.join(root, "input")
        with open(path, "wb") as f:
            f.write(data)
        del data
        subprocess.run(["curl", "-sf", "-T", path, base + "/peers/flat.bin"], check=True)
        env = dict(os.environ)
        for bs, name in ((MiB, "ds1m"), (64 * KiB, "ds64k")):
            subprocess.run([os.path.join(builddir, "blkmap"), "put", "--blksize", str(bs), path,
                            base + "/peers/" + name], check=True, env=env, stdout=subprocess.DEVNULL)
        os.unlink(path)
        slow, slow_base = start_server(root, ["--fault-latency-ms", "2"])
        servers.append(slow)
        print("bench_peers: %d MiB, %d runs, medians; random: ms per 4 KiB read; "
              "seqsum: s per read + SHA-256" % (mib, runs))
        for label, b in (("", base), ("_latency2ms", slow_base)):
            for where in placements(servers):
                if "open" in figures:
                    bench_open(b, label + where, runs, gdal_ok)
                if "random" in figures:
                    bench_random(b, label + where, runs, size, gdal_ok, fsspec_ok)
            if "seqsum" in figures:
                bench_seqsum(b, label, runs, want, gdal_ok, fsspec_ok)
    finally:
        for srv in servers:
            srv.terminate()
            srv.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
