/* tests/fault_preload.c — the test-side fault injector (fault_inject.c)
 * as a library to preload (LD_PRELOAD) into a program the tests run, e.g.
 * blkmap-wcfs: its plans come from the environment, read once when the
 * library is loaded, before main.  BLKMAP_TEST_FAULTS holds plans
 * separated by ';', each "CALL,NTH,COUNT,ERRNO" (fi_fail: CALL named as
 * fi_name names it, "pthread_create,1,1,11": the first pthread_create
 * fails with EAGAIN).  A plan that does not parse stops the program with
 * one line on stderr (exit 125): a test never runs without its fault.
 * Owns nothing past loading; no locking (runs before any thread).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault_inject.h"

static int plan_one(const char *spec)
{
	char name[32];
	unsigned nth, count;
	int err, end = 0;

	if (sscanf(spec, "%31[a-z_0-9],%u,%u,%d%n", name, &nth, &count, &err, &end) != 4 ||
	    spec[end] != '\0')
		return -1;
	for (int c = 0; c < FI_NCALLS; c++)
		if (!strcmp(fi_name((enum fi_call)c), name)) {
			fi_fail((enum fi_call)c, nth, count, err);
			return 0;
		}
	return -1;
}

__attribute__((constructor)) static void plan_from_env(void)
{
	const char *env = getenv("BLKMAP_TEST_FAULTS");
	char buf[512];

	if (env == NULL || *env == '\0')
		return;
	snprintf(buf, sizeof(buf), "%s", env);
	for (char *save = NULL, *s = strtok_r(buf, ";", &save); s; s = strtok_r(NULL, ";", &save))
		if (plan_one(s) < 0) {
			fprintf(stderr, "fault_preload: BLKMAP_TEST_FAULTS: %s: expected CALL,NTH,COUNT,ERRNO\n", s);
			_exit(125);
		}
}
