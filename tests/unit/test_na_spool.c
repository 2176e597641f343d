/* test_na_spool.c -- the agent's spool: order, bounds, the byte layout of its files, restarts, corruption.
 *
 * Real files in a temp directory. The layout test builds a spool file by hand from the format at the
 * top of nodeagent/na_spool.c, so a change to the format that the comment does not follow fails here.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "na_test.h"

static uint8_t *frame_of(uint64_t seq, size_t len)
{
	uint8_t *f = malloc(len);
	assert_non_null(f);
	for (size_t i = 0; i < len; i++)
		f[i] = (uint8_t)(seq * 31 + i);
	return f;
}

static void put(na__spool *sp, uint64_t seq, size_t len)
{
	assert_int_equal(na__spool_put(sp, seq, frame_of(seq, len), len, 0), 0);
}

/* Takes the head, checks its seq and bytes, and pops it. */
static void expect_head(na__spool *sp, cm_buf *buf, uint64_t wseq, size_t wlen)
{
	uint64_t seq;
	const uint8_t *data;
	size_t len;
	assert_int_equal(na__spool_take(sp, 1, buf, &seq, &data, &len), 0);
	assert_int_equal(seq, wseq);
	assert_int_equal(len, wlen);
	uint8_t *w = frame_of(wseq, wlen);
	assert_memory_equal(data, w, wlen);
	free(w);
	na__spool_done(sp, seq, 1);
}

static size_t count_files(const char *dir)
{
	char path[PATH_MAX];
	fmt_into(path, sizeof(path), "%s/spool", dir);
	DIR *d = opendir(path);
	assert_non_null(d);
	size_t n = 0;
	for (struct dirent *de; (de = readdir(d));)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void order_and_restart(const char *dir)
{
	na__spool *sp;
	cm_err err;
	cm_buf buf;
	uint64_t last;
	cm_buf_init(&buf);
	assert_int_equal(na__spool_open(dir, 100, 0, &sp, &last, &err), 0);
	assert_int_equal(last, 0);
	for (uint64_t s = 1000; s < 1010; s++)
		put(sp, s, 100 + s % 7);
	expect_head(sp, &buf, 1000, 100 + 1000 % 7);
	uint64_t seq;
	const uint8_t *data;
	size_t len;
	assert_int_equal(na__spool_take(sp, 1, &buf, &seq, &data, &len), 0); /* not acked: stays first */
	assert_int_equal(seq, 1001);
	na__spool_done(sp, seq, 0);
	if (dir) {
		assert_int_equal(count_files(dir), 9);
		na__spool_close(sp); /* as if the agent died: the rest survives */
		assert_int_equal(na__spool_open(dir, 100, 0, &sp, &last, &err), 0);
		assert_int_equal(last, 1009);
	}
	for (uint64_t s = 1001; s < 1010; s++)
		expect_head(sp, &buf, s, 100 + s % 7);
	assert_int_equal(na__spool_take(sp, 1, &buf, &seq, &data, &len), CM_ENOENT);
	na__spool_stats st;
	na__spool_stats_get(sp, &st);
	assert_int_equal(st.batches, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.dropped, 0);
	na__spool_close(sp);
	if (dir) {
		assert_int_equal(count_files(dir), 0);
		assert_int_equal(na__spool_open(dir, 100, 0, &sp, &last, &err), 0);
		assert_int_equal(last, 1009); /* the seq file remembers past an empty spool */
		na__spool_close(sp);
	}
	cm_buf_close(&buf);
}

static void test_order_and_restart(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	temp_dir(dir, "spool");
	order_and_restart(dir);
	order_and_restart(NULL);
	rm_tree(dir);
}

/* Past max_bytes the oldest batch not in flight goes first; the one being sent stays. */
static void bounds(const char *dir)
{
	na__spool *sp;
	cm_err err;
	cm_buf buf;
	uint64_t last, seq;
	const uint8_t *data;
	size_t len;
	cm_buf_init(&buf);
	assert_int_equal(na__spool_open(dir, 1000, 3000, &sp, &last, &err), 0);
	for (uint64_t s = 1; s <= 3; s++)
		put(sp, s, 1000);
	assert_int_equal(na__spool_take(sp, 1, &buf, &seq, &data, &len), 0); /* 1 in flight */
	put(sp, 4, 1000);                                                 /* 4000 > 3000: 2 goes */
	put(sp, 5, 1000);                                                 /* then 3 */
	na__spool_stats st;
	na__spool_stats_get(sp, &st);
	assert_int_equal(st.dropped, 2);
	assert_int_equal(st.dropped_bytes, 2000);
	assert_int_equal(st.batches, 3);
	assert_int_equal(st.bytes, 3000);
	na__spool_done(sp, seq, 1);
	expect_head(sp, &buf, 4, 1000);
	expect_head(sp, &buf, 5, 1000);
	na__spool_close(sp);
	/* a count bound too, and a batch larger than the byte bound is still kept when it is the newest */
	assert_int_equal(na__spool_open(dir, 2, 500, &sp, &last, &err), 0);
	put(sp, 6, 100);
	put(sp, 7, 100);
	put(sp, 8, 100);
	put(sp, 9, 800);
	na__spool_stats_get(sp, &st);
	assert_int_equal(st.dropped, 3);
	expect_head(sp, &buf, 9, 800);
	/* a logs-only batch is never the one dropped: the metrics batches after it go instead */
	assert_int_equal(na__spool_put(sp, 10, frame_of(10, 100), 100, 1), 0);
	put(sp, 11, 100);
	put(sp, 12, 100);
	put(sp, 13, 100);
	na__spool_stats_get(sp, &st);
	assert_int_equal(st.dropped, 5);
	expect_head(sp, &buf, 10, 100);
	expect_head(sp, &buf, 13, 100);
	na__spool_close(sp);
	cm_buf_close(&buf);
}

static void test_bounds_drop_oldest(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	temp_dir(dir, "spool");
	bounds(dir);
	bounds(NULL);
	rm_tree(dir);
}

static void le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A file written from the documented layout is read back; each broken variant is deleted and counted. */
static void test_layout_and_corruption(void **state)
{
	(void)state;
	char dir[PATH_MAX], path[PATH_MAX];
	temp_dir(dir, "spool");
	na__spool *sp;
	cm_err err;
	uint64_t last;
	assert_int_equal(na__spool_open(dir, 100, 0, &sp, &last, &err), 0); /* creates dir/spool */
	na__spool_close(sp);
	uint8_t f[32 + 5] = {'C', 'S', 'P', '1', 1, 0, 32, 0};
	le64(f + 8, 0x1234);
	le64(f + 16, 1700000000000ULL);
	cm_put_u32le(f + 24, 5);
	memcpy(f + 32, "hello", 5);
	cm_put_u32le(f + 28, cm_crc32c(cm_crc32c(0, f, 28), f + 32, 5));
	struct {
		const char *name;
		uint64_t seq;
		size_t off;
		uint8_t xor ;
		size_t len;
	} cases[] = {
	    {"0000000000001234.batch", 0x1234, 0, 0, sizeof(f)},     /* valid */
	    {"0000000000001235.batch", 0x1234, 0, 0, sizeof(f)},     /* seq does not match the name */
	    {"0000000000001236.batch", 0x1236, 0, 0x20, sizeof(f)},  /* magic */
	    {"0000000000001237.batch", 0x1237, 0, 0, sizeof(f) - 1}, /* truncated */
	    {"0000000000001238.batch", 0x1238, 33, 0x01, sizeof(f)}, /* payload flipped: CRC */
	    {".tmp-0000000000001239", 0x1239, 0, 0, sizeof(f)},      /* half-written */
	};
	for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
		uint8_t g[sizeof(f)];
		memcpy(g, f, sizeof(f));
		le64(g + 8, cases[i].seq);
		cm_put_u32le(g + 28, cm_crc32c(cm_crc32c(0, g, 28), g + 32, 5));
		g[cases[i].off] ^= cases[i].xor ;
		fmt_into(path, sizeof(path), "%s/spool/%s", dir, cases[i].name);
		FILE *fp = fopen(path, "wb");
		assert_non_null(fp);
		assert_int_equal(fwrite(g, 1, cases[i].len, fp), cases[i].len);
		fclose(fp);
	}
	fmt_into(path, sizeof(path), "%s/spool/README", dir); /* foreign names are left alone */
	write_file(path, "x");
	assert_int_equal(na__spool_open(dir, 100, 0, &sp, &last, &err), 0);
	na__spool_stats st;
	na__spool_stats_get(sp, &st);
	assert_int_equal(st.corrupt, 4); /* 1235, 1236, 1237 and the tmp file; 1238's CRC is found on read */
	assert_int_equal(st.batches, 2);
	assert_int_equal(last, 0x1238);
	cm_buf buf;
	cm_buf_init(&buf);
	uint64_t seq;
	const uint8_t *data;
	size_t len;
	assert_int_equal(na__spool_take(sp, 1, &buf, &seq, &data, &len), 0);
	assert_int_equal(seq, 0x1234);
	assert_memory_equal(data, "hello", 5);
	na__spool_done(sp, seq, 1);
	assert_int_equal(na__spool_take(sp, 1, &buf, &seq, &data, &len), CM_ENOENT); /* 1238 fails its CRC */
	na__spool_stats_get(sp, &st);
	assert_int_equal(st.corrupt, 5);
	assert_int_equal(count_files(dir), 1); /* README */
	/* and a put writes exactly this layout */
	uint8_t *hello = malloc(5);
	memcpy(hello, "hello", 5);
	assert_int_equal(na__spool_put(sp, 0x1234, hello, 5, 0), 0);
	fmt_into(path, sizeof(path), "%s/spool/0000000000001234.batch", dir);
	char got[64];
	size_t n;
	assert_int_equal(cm_read_file(path, got, sizeof(got), &n), 0);
	assert_int_equal(n, sizeof(f));
	memcpy(f + 16, got + 16, 8); /* created time is the put's */
	cm_put_u32le(f + 28, cm_crc32c(cm_crc32c(0, f, 28), f + 32, 5));
	assert_memory_equal(got, f, sizeof(f));
	na__spool_close(sp);
	cm_buf_close(&buf);
	rm_tree(dir);
}

static uint64_t take(na__spool *sp, cm_buf *buf)
{
	uint64_t seq;
	const uint8_t *data;
	size_t len;
	return na__spool_take(sp, 3, buf, &seq, &data, &len) ? 0 : seq;
}

/* Several in flight: a window of the first three; done ones leave in seq order only, a batch not known
 * to be logs-only goes alone, and an idle one never goes past the window (the dedupe window relies on it). */
static void window(const char *dir)
{
	na__spool *sp;
	cm_err err;
	cm_buf buf;
	uint64_t last;
	cm_buf_init(&buf);
	assert_int_equal(na__spool_open(dir, 100, 0, &sp, &last, &err), 0);
	for (uint64_t s = 1; s <= 6; s++)
		assert_int_equal(na__spool_put(sp, s, frame_of(s, 10), 10, s != 5), 0);
	assert_int_equal(na__spool_sendable(sp, 3), 3);
	assert_int_equal(take(sp, &buf), 1);
	assert_int_equal(take(sp, &buf), 2);
	assert_int_equal(take(sp, &buf), 3);
	assert_int_equal(take(sp, &buf), 0); /* 4 is outside the window while 1 is out */
	na__spool_done(sp, 3, 1);
	na__spool_done(sp, 2, 1);
	assert_int_equal(na__spool_pending(sp), 6); /* 2 and 3 wait for 1 */
	assert_int_equal(take(sp, &buf), 0);
	na__spool_done(sp, 1, 0);                   /* 1 failed: idle again, first */
	assert_int_equal(na__spool_oldest_seq(sp), 1);
	assert_int_equal(take(sp, &buf), 1);
	na__spool_done(sp, 1, 1);                   /* 1, 2, 3 leave together */
	assert_int_equal(na__spool_pending(sp), 3);
	assert_int_equal(na__spool_oldest_seq(sp), 4);
	assert_int_equal(na__spool_sendable(sp, 3), 1); /* 4; 5 goes alone, and 6 after it */
	assert_int_equal(take(sp, &buf), 4);
	assert_int_equal(na__spool_sendable(sp, 3), 0);
	assert_int_equal(take(sp, &buf), 0);        /* 5 goes alone: not while 4 is out */
	na__spool_done(sp, 4, 1);
	assert_int_equal(na__spool_sendable(sp, 3), 1);
	assert_int_equal(take(sp, &buf), 5);
	assert_int_equal(na__spool_sendable(sp, 3), 0);
	assert_int_equal(take(sp, &buf), 0);        /* nothing while 5 is out */
	na__spool_done(sp, 5, 1);
	assert_int_equal(take(sp, &buf), 6);
	na__spool_done(sp, 6, 1);
	assert_int_equal(na__spool_pending(sp), 0);
	na__spool_close(sp);
	cm_buf_close(&buf);
}

static void test_window(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	temp_dir(dir, "spool");
	window(dir);
	window(NULL);
	rm_tree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order_and_restart),
	    cmocka_unit_test(test_bounds_drop_oldest),
	    cmocka_unit_test(test_layout_and_corruption),
	    cmocka_unit_test(test_window),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
