/* engine.c — the registry of fault engines: how a fault on a mapping
 * reaches the fault path (fault.c).  Each engine is a struct vm_engine
 * defined in its own file and listed here, best first.
 *
 * Owns: the table of engines.
 * Locking: none (the table is constant).
 */
#include "config.h"

#include "internal.h"

static const struct vm_engine *const engines[] = {
	&vm_engine_sigsegv,
};

const struct vm_engine *engine_pick(void)
{
	for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++)
		if (engines[i]->probe() == 0)
			return engines[i];
	return &vm_engine_sigsegv; /* always available */
}
