# tests/fuzz/ — fuzz targets (docs/testing.md).  Each target's
# LLVMFuzzerTestOneInput is built twice:
#  - always, as tests/fuzz/replay_<name>: a plain program (tests/fuzz/replay.c)
#    that make check runs over the committed seed corpus
#    (tests/fuzz/corpus/<name>/) and every regression input
#    (tests/fuzz/regressions/<name>/);
#  - with ./configure --enable-fuzzing (clang), as tests/fuzz/fuzz_<name>,
#    the libFuzzer binary that `./quickstart fuzz [SECONDS]` runs.
FUZZ_MANIFEST_SOURCES = tests/fuzz/fuzz_manifest.c tests/fuzz/fuzz.h
FUZZ_MANIFEST_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
FUZZ_MANIFEST_LDADD = client/libblkmap.la $(JANSSON_LIBS)

# The format layer of dataset format v2: index pages and v2 manifests.
FUZZ_INDEX_SOURCES = tests/fuzz/fuzz_index.c tests/fuzz/fuzz.h
FUZZ_INDEX_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
FUZZ_INDEX_LDADD = client/libblkmap.la $(JANSSON_LIBS)

FUZZ_URL_SOURCES = tests/fuzz/fuzz_url.c tests/fuzz/fuzz.h
FUZZ_URL_LDADD = client/libblkmap.la

# The client's handling of responses: a loopback server thread sends the
# input to the HTTP store (and to bm_open + bm_read).
FUZZ_RESPONSE_SOURCES = tests/fuzz/fuzz_response.c tests/fuzz/fuzz.h
FUZZ_RESPONSE_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
FUZZ_RESPONSE_LDADD = client/libblkmap.la

# The mirror's directory listing (wcfs/listing.c: pure, no FUSE calls;
# wcfs.h needs FUSE's headers).
FUZZ_LIST_SOURCES = tests/fuzz/fuzz_list.c tests/fuzz/fuzz.h wcfs/listing.c wcfs/wcfs.h
FUZZ_LIST_CFLAGS = $(AM_CFLAGS) $(FUSE3_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
FUZZ_LIST_LDADD = $(JANSSON_LIBS)

# The store's parsers of listings and S3 errors (client/store_list.c).
FUZZ_STORE_SOURCES = tests/fuzz/fuzz_store.c tests/fuzz/fuzz.h
FUZZ_STORE_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
FUZZ_STORE_LDADD = client/libblkmap.la $(JANSSON_LIBS)

# The server's connection code without its process (server.c, main.c):
# fuzz_server.c plays the worker.
FUZZ_SERVER_SOURCES = tests/fuzz/fuzz_server.c tests/fuzz/fuzz.h \
	server-mock/srv.h server-mock/conn.c server-mock/handler.c \
	server-mock/key.c server-mock/etag.c server-mock/store.c \
	server-mock/store_disk.c server-mock/store_mem.c \
	server-mock/faults.c server-mock/stats.c
FUZZ_SERVER_CFLAGS = $(AM_CFLAGS) $(LIBEVENT_CFLAGS) $(JANSSON_CFLAGS)
FUZZ_SERVER_LDADD = $(LIBEVENT_LIBS) $(JANSSON_LIBS)

FUZZ_REPLAYS = tests/fuzz/replay_index tests/fuzz/replay_list tests/fuzz/replay_manifest \
	tests/fuzz/replay_response tests/fuzz/replay_server tests/fuzz/replay_store \
	tests/fuzz/replay_url
check_PROGRAMS += $(FUZZ_REPLAYS)
TESTS += $(FUZZ_REPLAYS)
tests_fuzz_replay_index_SOURCES = tests/fuzz/replay.c $(FUZZ_INDEX_SOURCES)
tests_fuzz_replay_index_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"index"'
tests_fuzz_replay_index_CFLAGS = $(FUZZ_INDEX_CFLAGS)
tests_fuzz_replay_index_LDADD = $(FUZZ_INDEX_LDADD)
tests_fuzz_replay_list_SOURCES = tests/fuzz/replay.c $(FUZZ_LIST_SOURCES)
tests_fuzz_replay_list_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"list"'
tests_fuzz_replay_list_CFLAGS = $(FUZZ_LIST_CFLAGS)
tests_fuzz_replay_list_LDADD = $(FUZZ_LIST_LDADD)
tests_fuzz_replay_manifest_SOURCES = tests/fuzz/replay.c $(FUZZ_MANIFEST_SOURCES)
tests_fuzz_replay_manifest_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"manifest"'
tests_fuzz_replay_manifest_CFLAGS = $(FUZZ_MANIFEST_CFLAGS)
tests_fuzz_replay_manifest_LDADD = $(FUZZ_MANIFEST_LDADD)
tests_fuzz_replay_response_SOURCES = tests/fuzz/replay.c $(FUZZ_RESPONSE_SOURCES)
tests_fuzz_replay_response_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"response"'
tests_fuzz_replay_response_CFLAGS = $(FUZZ_RESPONSE_CFLAGS)
tests_fuzz_replay_response_LDADD = $(FUZZ_RESPONSE_LDADD)
tests_fuzz_replay_server_SOURCES = tests/fuzz/replay.c $(FUZZ_SERVER_SOURCES)
tests_fuzz_replay_server_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"server"'
tests_fuzz_replay_server_CFLAGS = $(FUZZ_SERVER_CFLAGS)
tests_fuzz_replay_server_LDADD = $(FUZZ_SERVER_LDADD)
tests_fuzz_replay_store_SOURCES = tests/fuzz/replay.c $(FUZZ_STORE_SOURCES)
tests_fuzz_replay_store_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"store"'
tests_fuzz_replay_store_CFLAGS = $(FUZZ_STORE_CFLAGS)
tests_fuzz_replay_store_LDADD = $(FUZZ_STORE_LDADD)
tests_fuzz_replay_url_SOURCES = tests/fuzz/replay.c $(FUZZ_URL_SOURCES)
tests_fuzz_replay_url_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"url"'
tests_fuzz_replay_url_LDADD = $(FUZZ_URL_LDADD)

EXTRA_DIST += tests/fuzz/corpus tests/fuzz/regressions

if FUZZING
FUZZ_TARGETS = tests/fuzz/fuzz_index tests/fuzz/fuzz_list tests/fuzz/fuzz_manifest \
	tests/fuzz/fuzz_response tests/fuzz/fuzz_server tests/fuzz/fuzz_store tests/fuzz/fuzz_url
noinst_PROGRAMS += $(FUZZ_TARGETS)
tests_fuzz_fuzz_index_SOURCES = $(FUZZ_INDEX_SOURCES)
tests_fuzz_fuzz_index_CFLAGS = $(FUZZ_INDEX_CFLAGS)
tests_fuzz_fuzz_index_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_index_LDADD = $(FUZZ_INDEX_LDADD)
tests_fuzz_fuzz_list_SOURCES = $(FUZZ_LIST_SOURCES)
tests_fuzz_fuzz_list_CFLAGS = $(FUZZ_LIST_CFLAGS)
tests_fuzz_fuzz_list_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_list_LDADD = $(FUZZ_LIST_LDADD)
tests_fuzz_fuzz_manifest_SOURCES = $(FUZZ_MANIFEST_SOURCES)
tests_fuzz_fuzz_manifest_CFLAGS = $(FUZZ_MANIFEST_CFLAGS)
tests_fuzz_fuzz_manifest_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_manifest_LDADD = $(FUZZ_MANIFEST_LDADD)
tests_fuzz_fuzz_response_SOURCES = $(FUZZ_RESPONSE_SOURCES)
tests_fuzz_fuzz_response_CFLAGS = $(FUZZ_RESPONSE_CFLAGS)
tests_fuzz_fuzz_response_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_response_LDADD = $(FUZZ_RESPONSE_LDADD)
tests_fuzz_fuzz_server_SOURCES = $(FUZZ_SERVER_SOURCES)
tests_fuzz_fuzz_server_CFLAGS = $(FUZZ_SERVER_CFLAGS)
tests_fuzz_fuzz_server_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_server_LDADD = $(FUZZ_SERVER_LDADD)
tests_fuzz_fuzz_store_SOURCES = $(FUZZ_STORE_SOURCES)
tests_fuzz_fuzz_store_CFLAGS = $(FUZZ_STORE_CFLAGS)
tests_fuzz_fuzz_store_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_store_LDADD = $(FUZZ_STORE_LDADD)
tests_fuzz_fuzz_url_SOURCES = $(FUZZ_URL_SOURCES)
tests_fuzz_fuzz_url_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_url_LDADD = $(FUZZ_URL_LDADD)
endif
