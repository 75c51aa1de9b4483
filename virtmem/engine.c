/* engine.c — the registry of fault engines: how a fault on a mapping
 * reaches the fault path (fault.c).  Each engine is a struct vm_engine
 * defined in its own file (sigsegv.c, uffd.c) and listed here, best first;
 * a handle gets one when it opens (engine_pick).
 *
 * Owns: the table of engines and the choice among them.
 * Locking: none (the table is constant; probes are once-only).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const struct vm_engine *const engines[] = {
	&vm_engine_uffd,
	&vm_engine_sigsegv,
};
#define NENGINES (sizeof(engines) / sizeof(engines[0]))

static const struct vm_engine *engine_by_name(const char *name)
{
	for (size_t i = 0; i < NENGINES; i++)
		if (strcmp(engines[i]->name, name) == 0)
			return engines[i];
	return NULL;
}

int vm_engine_probe(const char *name)
{
	const struct vm_engine *e = engine_by_name(name);
	return e == NULL ? -EINVAL : e->probe();
}

const char *vm_engine_name(const struct vm_engine *e)
{
	if (e == &vm_engine_uffd && uffd_user_mode_only())
		return "uffd-user";
	return e->name;
}

const struct vm_engine *engine_pick(int flags, bool overlay, int *errp)
{
	const struct vm_engine *want = NULL;
	const char *env = getenv("VIRTMEM_ENGINE");

	*errp = 0;
	if (flags & VM_ENGINE_SIGSEGV) {
		want = &vm_engine_sigsegv;
	} else if (flags & VM_ENGINE_UFFD) {
		want = &vm_engine_uffd;
		if (overlay) {
			vm_log("mmap-overlay mode runs on the sigsegv engine, not uffd");
			*errp = -ENOTSUP;
			return NULL;
		}
	} else if (env != NULL && *env != '\0') {
		want = engine_by_name(env);
		if (want == NULL) {
			vm_log("VIRTMEM_ENGINE=%s: no such engine (sigsegv or uffd)", env);
			*errp = -EINVAL;
			return NULL;
		}
	}
	/* The base layer of overlay mode is the backend's own mapping,
	 * which userfaultfd cannot serve from: overlay handles take faults
	 * with the SIGSEGV engine. */
	if (overlay)
		return &vm_engine_sigsegv;
	if (want != NULL) {
		int rc = want->probe();
		if (rc < 0) {
			vm_log("the %s fault engine cannot run here: %s", want->name, vm_strerror(rc));
			*errp = rc;
			return NULL;
		}
		return want;
	}
	for (size_t i = 0; i < NENGINES; i++)
		if (engines[i]->probe() == 0)
			return engines[i];
	return &vm_engine_sigsegv; /* always available */
}
