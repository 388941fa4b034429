/* state: see state.h. */
#include "state.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>

bool state_may(const struct state_table *t, unsigned from, unsigned to)
{
	return from < t->count && to < t->count && (t->may_enter[from] & TO(to)) != 0;
}

static const char *name(const struct state_table *t, unsigned s)
{
	return s < t->count && t->names[s] != NULL ? t->names[s] : "?";
}

unsigned state_enter(const struct state_table *t, unsigned from, unsigned to, const char *who_fmt,
                     ...)
{
	bool ok = state_may(t, from, to);
	char who[320];
	va_list ap;

	if (ok && (from == to || !log_tracing()))
		return to;
	va_start(ap, who_fmt);
	vsnprintf(who, sizeof(who), who_fmt, ap);
	va_end(ap);
	if (!ok) {
		log_warnx("%s %s: no transition from %s to %s", t->kind, who, name(t, from),
		          name(t, to));
		log_flush();
		assert(!"state transition not in its table");
	}
	log_trace("%s %s %s -> %s", t->kind, who, name(t, from), name(t, to));
	return to;
}
