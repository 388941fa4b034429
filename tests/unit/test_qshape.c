/* test_qshape: relay/qshape.c, `krelay queue summary`'s table: qshape's
 * age buckets at their edges, domains compared without case, the order
 * (most recipients first, then by name), --top, names made safe in the
 * table and escaped in the JSON. */
#include "qshape.h"
#include "unit.h"

TEST(buckets)
{
	CHECK(qshape_bucket(-10) == 0);
	CHECK(qshape_bucket(0) == 0);
	CHECK(qshape_bucket(5 * 60 - 1) == 0);
	CHECK(qshape_bucket(5 * 60) == 1);
	CHECK(qshape_bucket(10 * 60) == 2);
	CHECK(qshape_bucket(640 * 60 - 1) == 7);
	CHECK(qshape_bucket(1280 * 60 - 1) == 8);
	CHECK(qshape_bucket(1280 * 60) == 9);
	CHECK(qshape_bucket(30 * 86400) == 9);
	CHECK_STR(qshape_bucket_names[9], "1280+");
}

TEST(table_and_json)
{
	struct qshape *q = qshape_new();
	char *buf = NULL;
	size_t len = 0;
	FILE *out;

	CHECK(qshape_add(q, "b.example", 30) == 0);
	CHECK(qshape_add(q, "B.Example", 700) == 0);
	CHECK(qshape_add(q, "a.example", 100000) == 0);
	CHECK(qshape_add(q, "c.example", 60) == 0);
	CHECK(qshape_add(q, "c.example", 90000) == 0);
	CHECK(qshape_add(q, "x\ny", 1) == 0);
	out = open_memstream(&buf, &len);
	qshape_print(q, 0, out);
	fclose(out);
	CHECK_STR(
	    buf,
	    "               T     5    10    20    40    80   160   320   640  1280  1280+\n"
	    "    TOTAL      6     3     0     1     0     0     0     0     0     0      2\n"
	    "b.example      2     1     0     1     0     0     0     0     0     0      0\n"
	    "c.example      2     1     0     0     0     0     0     0     0     0      1\n"
	    "a.example      1     0     0     0     0     0     0     0     0     0      1\n"
	    "   x\\x0Ay      1     1     0     0     0     0     0     0     0     0      0\n");
	free(buf);
	out = open_memstream(&buf, &len);
	qshape_json(q, 2, out);
	fclose(out);
	CHECK_STR(
	    buf, "{\"buckets\": [\"5\", \"10\", \"20\", \"40\", \"80\", \"160\", \"320\", \"640\", "
	         "\"1280\", \"1280+\"], \"total\": {\"total\": 6, \"ages\": [3, 0, 1, 0, 0, 0, 0, "
	         "0, 0, 2]}, \"domains\": [{\"domain\": \"b.example\", \"total\": 2, \"ages\": "
	         "[1, 0, 1, 0, 0, 0, 0, 0, 0, 0]}, {\"domain\": \"c.example\", \"total\": 2, "
	         "\"ages\": [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]}]}\n");
	free(buf);
	qshape_free(q);
	q = qshape_new();
	out = open_memstream(&buf, &len);
	qshape_json(q, 0, out);
	fclose(out);
	CHECK_STR(
	    buf, "{\"buckets\": [\"5\", \"10\", \"20\", \"40\", \"80\", \"160\", \"320\", \"640\", "
	         "\"1280\", \"1280+\"], \"total\": {\"total\": 0, \"ages\": [0, 0, 0, 0, 0, 0, 0, "
	         "0, 0, 0]}, \"domains\": []}\n");
	free(buf);
	qshape_free(q);
}

int main(void)
{
	RUN(buckets);
	RUN(table_and_json);
	UNIT_END("test_qshape");
}
