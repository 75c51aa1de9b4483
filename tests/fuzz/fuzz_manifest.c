/* tests/fuzz/fuzz_manifest.c — libFuzzer target for the manifest parser
 * (client/manifest.c), the first thing libblkmap reads from a server.
 * Properties: any input is refused with a one-line message or parses; what
 * parses dumps to JSON that parses again and dumps to the same bytes (the
 * round trip a commit relies on).  Locking: none. */
#include "config.h"

#include <string.h>

#include "../../client/internal.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bm_manifest *m = NULL, *again = NULL;
	char msg[1024] = "";
	size_t len1 = 0, len2 = 0;
	int rc;

	rc = bm_manifest_parse((const char *)data, size, &m, msg, sizeof(msg));
	if (rc < 0) {
		if (m != NULL)
			fuzz_fail("a refused manifest (%d) was returned", rc);
		if (rc != BM_ENOMEM)
			fuzz_check_message("bm_manifest_parse", msg);
		return 0;
	}
	char *dump1 = bm_manifest_dump(m, &len1);
	if (dump1 == NULL)
		fuzz_fail("bm_manifest_dump failed on a manifest that parsed");
	rc = bm_manifest_parse(dump1, len1, &again, msg, sizeof(msg));
	if (rc < 0)
		fuzz_fail("a parsed manifest dumps to JSON that is refused (%s):\n%s", msg, dump1);
	char *dump2 = bm_manifest_dump(again, &len2);
	if (dump2 == NULL)
		fuzz_fail("bm_manifest_dump failed on a dumped manifest");
	if (len1 != len2 || memcmp(dump1, dump2, len1) != 0)
		fuzz_fail("dump, parse, dump gives other bytes:\n%s\n%s", dump1, dump2);
	free(dump1);
	free(dump2);
	bm_manifest_free(again);
	bm_manifest_free(m);
	return 0;
}
