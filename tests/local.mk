# tests/ — virtmem tests (cmocka) and the page-fault benchmark.
VMTEST_LDADD = virtmem/libvirtmem.la $(CMOCKA_LIBS)
VMTEST_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)

virtmem_tests = \
	tests/test_virtmem \
	tests/test_virtmem_threads \
	tests/test_virtmem_signals \
	tests/test_virtmem_overlay \
	tests/test_virtmem_unwind \
	tests/test_virtmem_faults
check_PROGRAMS += $(virtmem_tests) tests/test_pagetab
TESTS += tests/test_pagetab

# Each virtmem test program runs once per fault engine: tests/sigsegv/X.sigsegv
# and tests/uffd/X.uffd are empty stamps that tests/vm-engine.sh turns into a
# run of tests/X with VIRTMEM_ENGINE set (skipped where the engine cannot
# run); each run has its log (tests/uffd/X.log).
TEST_EXTENSIONS = .sigsegv .uffd
SIGSEGV_LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/vm-engine.sh sigsegv
UFFD_LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/vm-engine.sh uffd
vm_engine_runs = \
	tests/sigsegv/test_virtmem.sigsegv \
	tests/sigsegv/test_virtmem_threads.sigsegv \
	tests/sigsegv/test_virtmem_signals.sigsegv \
	tests/sigsegv/test_virtmem_overlay.sigsegv \
	tests/uffd/test_virtmem.uffd \
	tests/uffd/test_virtmem_threads.uffd \
	tests/uffd/test_virtmem_signals.uffd \
	tests/uffd/test_virtmem_overlay.uffd \
	tests/sigsegv/test_virtmem_unwind.sigsegv \
	tests/uffd/test_virtmem_unwind.uffd \
	tests/sigsegv/test_virtmem_faults.sigsegv \
	tests/uffd/test_virtmem_faults.uffd
TESTS += $(vm_engine_runs)
CLEANFILES += $(vm_engine_runs)
EXTRA_DIST += tests/vm-engine.sh
$(vm_engine_runs): tests/vm-engine.sh
	$(AM_V_GEN)mkdir -p $(@D) && : > $@

tests_test_virtmem_SOURCES = tests/test_virtmem.c tests/vmtest.h tests/vmfixture.h
tests_test_virtmem_CFLAGS = $(VMTEST_CFLAGS)
tests_test_virtmem_LDADD = $(VMTEST_LDADD)
tests_test_virtmem_LDFLAGS = $(IN_PLACE_LINK)
tests_test_virtmem_threads_SOURCES = tests/test_virtmem_threads.c tests/vmtest.h tests/vmfixture.h
tests_test_virtmem_threads_CFLAGS = $(VMTEST_CFLAGS)
tests_test_virtmem_threads_LDADD = $(VMTEST_LDADD)
tests_test_virtmem_threads_LDFLAGS = $(IN_PLACE_LINK)
tests_test_virtmem_signals_SOURCES = tests/test_virtmem_signals.c tests/vmtest.h tests/vmfixture.h
tests_test_virtmem_signals_CFLAGS = $(VMTEST_CFLAGS)
tests_test_virtmem_signals_LDADD = $(VMTEST_LDADD)
tests_test_virtmem_signals_LDFLAGS = $(IN_PLACE_LINK)
tests_test_virtmem_overlay_SOURCES = tests/test_virtmem_overlay.c tests/vmtest.h tests/vmfixture.h
tests_test_virtmem_overlay_CFLAGS = $(VMTEST_CFLAGS)
tests_test_virtmem_overlay_LDADD = $(VMTEST_LDADD)
tests_test_virtmem_overlay_LDFLAGS = $(IN_PLACE_LINK)
tests_test_virtmem_unwind_SOURCES = tests/test_virtmem_unwind.c tests/vmtest.h tests/vmfixture.h
tests_test_virtmem_unwind_CFLAGS = $(VMTEST_CFLAGS)
tests_test_virtmem_unwind_LDADD = $(VMTEST_LDADD)
tests_test_virtmem_unwind_LDFLAGS = $(IN_PLACE_LINK)
# What a user sees when the system refuses a call virtmem makes: the test
# program has its own mmap, memfd_create, ioctl, ... (tests/fault_inject.c,
# shared with the wcfs tests), which fail where a test plans it.
tests_test_virtmem_faults_SOURCES = tests/test_virtmem_faults.c tests/vmtest.h tests/vmfixture.h \
	tests/fault_inject.c tests/fault_inject.h
tests_test_virtmem_faults_CFLAGS = $(VMTEST_CFLAGS)
tests_test_virtmem_faults_LDADD = $(VMTEST_LDADD) -ldl
tests_test_virtmem_faults_LDFLAGS = $(IN_PLACE_LINK)
# The page table is internal: test it from its source.
tests_test_pagetab_SOURCES = tests/test_pagetab.c virtmem/pagetab.c
tests_test_pagetab_CFLAGS = $(VMTEST_CFLAGS)
tests_test_pagetab_LDADD = $(CMOCKA_LIBS)

check_PROGRAMS += tests/bench_pagefault
BENCHMARKS += tests/bench_pagefault
tests_bench_pagefault_SOURCES = tests/bench_pagefault.c
tests_bench_pagefault_LDADD = virtmem/libvirtmem.la

# What the wcfs mirror buys (issue 5): PSS and network bytes of 4 readers,
# overlay vs loadblk; overlay vs plain mmap throughput.  Needs blkmap-wcfs.
check_PROGRAMS += tests/bench_wcfs
BENCHMARKS += tests/bench_wcfs
tests_bench_wcfs_SOURCES = tests/bench_wcfs.c $(SERVER_TEST_SOURCES)
tests_bench_wcfs_CFLAGS = $(SERVER_TEST_CFLAGS)
tests_bench_wcfs_LDADD = client/libblkmap.la $(SERVER_TEST_LDADD)

# The client's switch to mmap-overlay mode through a real mirror (issue 5).
check_PROGRAMS += tests/test_overlay
TESTS += tests/test_overlay
tests_test_overlay_SOURCES = tests/test_overlay.c tests/wcfs_util.c tests/wcfs_util.h \
	$(CLIENT_TEST_SOURCES)
tests_test_overlay_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_overlay_LDADD = $(CLIENT_TEST_LDADD)
tests_test_overlay_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_overlay_DEPENDENCIES = blkmap-server$(EXEEXT) blkmap-wcfs$(EXEEXT) blkmap$(EXEEXT)
