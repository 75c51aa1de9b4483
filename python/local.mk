# python/ — the blkmap Python package (pure Python over libblkmap with
# ctypes), its pytest suite (tests/python/, run by tests/python.test) and
# the example program (examples/).  `make install` puts the package in
# $(pkgpythondir), where Debian's python3 finds it under the prefix.
PY_SOURCES = python/blkmap/__init__.py python/blkmap/_lib.py
PY_TESTS = \
	tests/python/conftest.py \
	tests/python/test_dataset.py \
	tests/python/test_lifetime.py \
	tests/python/test_put.py \
	tests/python/test_docs.py \
	tests/python/test_examples.py \
	tests/python/test_load.py \
	tests/python/test_abi.py
EXTRA_DIST += $(PY_SOURCES) $(PY_TESTS) tests/python.test examples/mean_over_dataset.py

if HAVE_PYTHON
pkgpython_PYTHON = $(PY_SOURCES)
nodist_pkgpython_PYTHON = python/blkmap/_config.py
endif

# Where make install puts libblkmap: the package's last resort when the
# dynamic loader does not find it.
python/blkmap/_config.py: Makefile
	$(AM_V_GEN)$(MKDIR_P) python/blkmap && \
	{ echo '# Written by make (python/local.mk): the configured libdir.'; \
	  echo 'LIBDIR = "$(libdir)"'; } > $@
CLEANFILES += python/blkmap/_config.py

# In a build tree apart from the sources, the package is copied next to
# the built library, so that PYTHONPATH=python finds both there.
all-local: python/blkmap/_config.py
	@if test "$(srcdir)" != "."; then \
	  for f in $(PY_SOURCES); do \
	    cmp -s "$(srcdir)/$$f" "$$f" || cp "$(srcdir)/$$f" "$$f" || exit 1; \
	    chmod u+w "$$f"; \
	  done; \
	fi
clean-local:
	@if test "$(srcdir)" != "."; then rm -f $(PY_SOURCES); fi
	rm -rf python/blkmap/__pycache__

LONG_TESTS += tests/python.test
# The layout of blkmap.h's structs as C sees it, for the ctypes twins' test.
check_PROGRAMS += tests/abi_layout
tests_abi_layout_SOURCES = tests/abi_layout.c
AM_TESTS_ENVIRONMENT += PYTHON='$(PYTHON)'; export PYTHON;

# `make bench`: numpy over a mapped dataset vs np.memmap of a local file and
# fsspec's HTTP file (tests/bench_python.py), run with configure's python.
EXTRA_DIST += tests/bench_python.py
if HAVE_PYTHON
BENCHMARKS += tests/bench_python
endif
tests/bench_python: $(srcdir)/tests/bench_python.py Makefile
	$(AM_V_GEN)$(MKDIR_P) tests && sed '1s|.*|#!$(PYTHON)|' $(srcdir)/tests/bench_python.py > $@ && chmod +x $@
CLEANFILES += tests/bench_python
