# server-mock/ — blkmap-server, the HTTP object server the tests and the
# demo point at (issue 3). Its tests are tests/test_server_*.c; its
# benchmark is tests/bench_server.c (`make bench`).

bin_PROGRAMS += blkmap-server
blkmap_server_SOURCES = \
	server-mock/srv.h \
	server-mock/main.c \
	server-mock/server.c \
	server-mock/conn.c \
	server-mock/handler.c \
	server-mock/key.c \
	server-mock/etag.c \
	server-mock/store.c \
	server-mock/store_disk.c \
	server-mock/store_mem.c \
	server-mock/faults.c \
	server-mock/stats.c
blkmap_server_CFLAGS = $(AM_CFLAGS) $(LIBEVENT_CFLAGS) $(JANSSON_CFLAGS)
blkmap_server_LDADD = $(LIBEVENT_LIBS) $(JANSSON_LIBS)

# Tests: each starts the real blkmap-server on port 0 and drives it with
# libcurl (tests/test_server_util.c); each depends on the server binary.
SERVER_TEST_SOURCES = tests/test_server_util.c tests/test_server_util.h
SERVER_TEST_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS) \
	$(CMOCKA_CFLAGS)
SERVER_TEST_LDADD = $(CURL_LIBS) $(JANSSON_LIBS) $(CMOCKA_LIBS)
SERVER_TESTS = tests/test_server_protocol tests/test_server_race \
	tests/test_server_limits tests/test_server_lifecycle \
	tests/test_server_faults tests/test_server_edges
check_PROGRAMS += $(SERVER_TESTS)
TESTS += $(SERVER_TESTS)

tests_test_server_protocol_SOURCES = tests/test_server_protocol.c \
	$(SERVER_TEST_SOURCES)
tests_test_server_protocol_CFLAGS = $(SERVER_TEST_CFLAGS)
tests_test_server_protocol_LDADD = $(SERVER_TEST_LDADD)
EXTRA_tests_test_server_protocol_DEPENDENCIES = blkmap-server$(EXEEXT)

tests_test_server_race_SOURCES = tests/test_server_race.c \
	$(SERVER_TEST_SOURCES)
tests_test_server_race_CFLAGS = $(SERVER_TEST_CFLAGS)
tests_test_server_race_LDADD = $(SERVER_TEST_LDADD)
EXTRA_tests_test_server_race_DEPENDENCIES = blkmap-server$(EXEEXT)

tests_test_server_limits_SOURCES = tests/test_server_limits.c \
	$(SERVER_TEST_SOURCES)
tests_test_server_limits_CFLAGS = $(SERVER_TEST_CFLAGS)
tests_test_server_limits_LDADD = $(SERVER_TEST_LDADD)
EXTRA_tests_test_server_limits_DEPENDENCIES = blkmap-server$(EXEEXT)

tests_test_server_lifecycle_SOURCES = tests/test_server_lifecycle.c \
	$(SERVER_TEST_SOURCES)
tests_test_server_lifecycle_CFLAGS = $(SERVER_TEST_CFLAGS)
tests_test_server_lifecycle_LDADD = $(SERVER_TEST_LDADD)
EXTRA_tests_test_server_lifecycle_DEPENDENCIES = blkmap-server$(EXEEXT)

tests_test_server_faults_SOURCES = tests/test_server_faults.c \
	$(SERVER_TEST_SOURCES)
tests_test_server_faults_CFLAGS = $(SERVER_TEST_CFLAGS)
tests_test_server_faults_LDADD = $(SERVER_TEST_LDADD)
EXTRA_tests_test_server_faults_DEPENDENCIES = blkmap-server$(EXEEXT)

tests_test_server_edges_SOURCES = tests/test_server_edges.c \
	$(SERVER_TEST_SOURCES)
tests_test_server_edges_CFLAGS = $(SERVER_TEST_CFLAGS)
tests_test_server_edges_LDADD = $(SERVER_TEST_LDADD)
EXTRA_tests_test_server_edges_DEPENDENCIES = blkmap-server$(EXEEXT)

# Benchmark (`make bench`): blkmap-server vs nginx on the same files.
check_PROGRAMS += tests/bench_server
BENCHMARKS += tests/bench_server
tests_bench_server_SOURCES = tests/bench_server.c $(SERVER_TEST_SOURCES)
tests_bench_server_CFLAGS = $(SERVER_TEST_CFLAGS)
tests_bench_server_LDADD = $(SERVER_TEST_LDADD)
EXTRA_tests_bench_server_DEPENDENCIES = blkmap-server$(EXEEXT)
