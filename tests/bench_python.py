#!/usr/bin/python3
"""bench_python.py — `make bench`: a numpy reduction (the sum of a float64
array) over a dataset mapped by the blkmap package, against baselines in the
same run, on the same bytes:
  - np.memmap of a local file (on the build tree's disk): cold (the file's
    pages dropped from the page cache first: posix_fadvise DONTNEED) and
    warm (the same mapping summed again);
  - fsspec's HTTP file (Debian's python3-fsspec) read whole from the same
    blkmap-server, then np.frombuffer.
blkmap cold is a fresh handle (nothing cached); warm, the same handle again.
Each figure is the median of several runs, in MB/s; a line per pair gives
ratio = ours / baseline.  Nothing is asserted.  BENCH_PY_MIB (default 128)
sets the size, BENCH_PY_RUNS (default 5) the runs.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
builddir = os.path.dirname(here)
sys.path.insert(0, os.path.join(builddir, "python"))

try:
    import numpy as np
except ImportError:
    print("bench_python: skipped: no numpy (apt-get install python3-numpy)")
    sys.exit(0)
import blkmap  # noqa: E402

MiB = 1 << 20


def median_rate(fn, nbytes, runs):
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        rates.append(nbytes / (time.perf_counter() - t) / 1e6)
    return statistics.median(rates)


def line(name, ours, base):
    print("python %s ours=%.0f baseline=%.0f ratio=%.2f" % (name, ours, base, ours / base))
    sys.stdout.flush()


def main():
    mib = int(os.environ.get("BENCH_PY_MIB", "128"))
    runs = int(os.environ.get("BENCH_PY_RUNS", "5"))
    n = mib * MiB // 8
    values = np.random.default_rng(0).random(n)
    want = float(values.sum())
    tmp = tempfile.mkdtemp(prefix="bench_python.", dir=builddir)
    server = subprocess.Popen([os.path.join(builddir, "blkmap-server"), "--memory",
                               "--listen", "127.0.0.1:0",
                               "--max-body-bytes", str(values.nbytes + MiB)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = server.stdout.readline()
        if not first.startswith("blkmap-server: serving "):
            sys.exit("bench_python: blkmap-server did not start: %r" % first)
        base = first.split()[-1]
        url = base + "/bench/py"
        blkmap.put_array(url, values, blksize=4 * MiB)
        path = os.path.join(tmp, "values.f8")
        values.tofile(path)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        import urllib.request
        req = urllib.request.Request(base + "/bench/flat.f8", data=values.tobytes(), method="PUT")
        urllib.request.urlopen(req).close()
        nbytes = values.nbytes
        del values

        def check(s):
            if abs(s - want) > 1e-6 * abs(want):
                sys.exit("bench_python: sum %r, expected %r" % (s, want))

        # blkmap, cold: a fresh handle each time.
        def bm_cold():
            with blkmap.open(url) as ds:
                check(float(ds.array().sum()))
        bm_c = median_rate(bm_cold, nbytes, runs)
        ds = blkmap.open(url)
        warm_a = ds.array()
        check(float(warm_a.sum()))
        bm_w = median_rate(lambda: check(float(warm_a.sum())), nbytes, runs)

        def mm_cold():
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            m = np.memmap(path, dtype="<f8", mode="r")
            check(float(m.sum()))
            del m
        mm_c = median_rate(mm_cold, nbytes, runs)
        m = np.memmap(path, dtype="<f8", mode="r")
        check(float(m.sum()))
        mm_w = median_rate(lambda: check(float(m.sum())), nbytes, runs)

        fs_rate = None
        try:
            import fsspec
            fs = fsspec.filesystem("http", skip_instance_cache=True)

            def fs_read():
                with fs.open(base + "/bench/flat.f8", "rb", block_size=8 * MiB) as f:
                    check(float(np.frombuffer(f.read(), dtype="<f8").sum()))
            fs_rate = median_rate(fs_read, nbytes, runs)
        except ImportError as e:
            print("bench_python: no fsspec HTTP line (%s): apt-get install python3-fsspec "
                  "python3-aiohttp" % e)

        print("bench_python: %d MiB of float64, sum, median of %d runs, MB/s" % (mib, runs))
        line("sum_%dM_cold_vs_memmap_cold" % mib, bm_c, mm_c)
        line("sum_%dM_warm_vs_memmap_warm" % mib, bm_w, mm_w)
        if fs_rate is not None:
            line("sum_%dM_cold_vs_fsspec_http" % mib, bm_c, fs_rate)
        del warm_a
        ds.close()
        del m
    finally:
        server.terminate()
        server.wait(timeout=60)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
