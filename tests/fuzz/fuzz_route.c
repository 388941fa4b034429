/* fuzz_route: next hops (SmartHost, a TransportTable's right column) and a
 * whole TransportTable.  Oracle: a hop that parses prints as text that
 * parses to the same hop. */
#include "fuzz.h"
#include "route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_str(data, size), err[512], text[600];
	struct route_hop hop, again;
	struct route_table *t;

	if (route_parse_hop(s, &hop, err, sizeof(err)) == 0) {
		route_hop_text(&hop, text, sizeof(text));
		FUZZ_CHECK(route_parse_hop(text, &again, err, sizeof(err)) == 0);
		FUZZ_CHECK(again.port == hop.port && strcmp(again.host, hop.host) == 0);
		FUZZ_CHECK(again.literal == hop.literal);
	}
	t = route_table_load(fuzz_file(data, size), err, sizeof(err));
	if (t != NULL) {
		struct route_hop out;
		route_lookup(t, NULL, "example.com", &out);
		route_table_free(t);
	}
	free(s);
	return 0;
}
