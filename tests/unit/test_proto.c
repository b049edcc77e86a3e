/* Unit tests for the agent wire protocol codec (src/lib/agent/proto.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mvm/proto.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static void free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

/* ---------------------------------------------------------------- header codec */

static void test_hdr_roundtrip(void **state)
{
    (void)state;
    uint8_t b[MVM_FRAME_HDR];
    assert_int_equal(mvm_frame_encode_hdr(b, MVM_F_STDOUT, 0x01020304u, 0x00030405u), 0);
    const uint8_t want[MVM_FRAME_HDR] = { 0x00, 0x03, 0x04, 0x05, MVM_F_STDOUT, 0, 0, 0,
                                          0x01, 0x02, 0x03, 0x04 };
    assert_memory_equal(b, want, sizeof(want));
    struct mvm_frame_hdr h;
    assert_int_equal(mvm_frame_decode_hdr(b, sizeof(b), &h), MVM_FRAME_HDR);
    assert_int_equal(h.len, 0x30405);
    assert_int_equal(h.type, MVM_F_STDOUT);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.chan, 0x01020304u);

    assert_int_equal(mvm_frame_encode_hdr(b, MVM_F_HELLO, 0, MVM_FRAME_MAX), 0);
    assert_int_equal(mvm_frame_decode_hdr(b, sizeof(b), &h), MVM_FRAME_HDR);
    assert_int_equal(h.len, MVM_FRAME_MAX);
}

static void test_hdr_encode_rejects(void **state)
{
    (void)state;
    uint8_t b[MVM_FRAME_HDR];
    assert_int_equal(mvm_frame_encode_hdr(b, MVM_F_HELLO, 0, MVM_FRAME_MAX + 1), -1);
    assert_int_equal(mvm_frame_encode_hdr(b, 0, 0, 0), -1);
    assert_int_equal(mvm_frame_encode_hdr(b, MVM_F_TYPE_MAX + 1, 0, 0), -1);
}

static void test_hdr_decode_truncated(void **state)
{
    (void)state;
    uint8_t b[MVM_FRAME_HDR];
    struct mvm_frame_hdr h;
    assert_int_equal(mvm_frame_encode_hdr(b, MVM_F_PING, 1, 3), 0);
    for (size_t n = 0; n < MVM_FRAME_HDR; n++)
        assert_int_equal(mvm_frame_decode_hdr(b, n, &h), 0);
}

static void test_hdr_decode_bad(void **state)
{
    (void)state;
    uint8_t b[MVM_FRAME_HDR];
    struct mvm_frame_hdr h;

    /* oversized length */
    assert_int_equal(mvm_frame_encode_hdr(b, MVM_F_PING, 1, 0), 0);
    uint32_t big = MVM_FRAME_MAX + 1;
    b[0] = (uint8_t)(big >> 24);
    b[1] = (uint8_t)(big >> 16);
    b[2] = (uint8_t)(big >> 8);
    b[3] = (uint8_t)big;
    assert_int_equal(mvm_frame_decode_hdr(b, sizeof(b), &h), -1);
    memset(b, 0xff, 4);
    assert_int_equal(mvm_frame_decode_hdr(b, sizeof(b), &h), -1);

    /* unknown types */
    assert_int_equal(mvm_frame_encode_hdr(b, MVM_F_PING, 1, 0), 0);
    b[4] = 0;
    assert_int_equal(mvm_frame_decode_hdr(b, sizeof(b), &h), -1);
    b[4] = MVM_F_TYPE_MAX + 1;
    assert_int_equal(mvm_frame_decode_hdr(b, sizeof(b), &h), -1);
    b[4] = 0xff;
    assert_int_equal(mvm_frame_decode_hdr(b, sizeof(b), &h), -1);

    /* nonzero flags / reserved */
    for (int i = 5; i < 8; i++) {
        assert_int_equal(mvm_frame_encode_hdr(b, MVM_F_PING, 1, 0), 0);
        b[i] = 1;
        assert_int_equal(mvm_frame_decode_hdr(b, sizeof(b), &h), -1);
    }
}

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(mvm_frame_type_name(MVM_F_HELLO), "HELLO");
    assert_string_equal(mvm_frame_type_name(MVM_F_EXIT), "EXIT");
    assert_string_equal(mvm_frame_type_name(MVM_F_CTL_RESP), "CTL_RESP");
    assert_string_equal(mvm_frame_type_name(0), "UNKNOWN");
    assert_string_equal(mvm_frame_type_name(200), "UNKNOWN");
}

/* ---------------------------------------------------------------- incremental reader */

/* Builds a frame into out; returns total size. */
static size_t mkframe(uint8_t *out, uint8_t type, uint32_t chan, const char *payload)
{
    size_t n = strlen(payload);
    assert_int_equal(mvm_frame_encode_hdr(out, type, chan, (uint32_t)n), 0);
    memcpy(out + MVM_FRAME_HDR, payload, n);
    return MVM_FRAME_HDR + n;
}

static void test_reader_byte_by_byte(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = mkframe(buf, MVM_F_STDOUT, 7, "hello");
    n += mkframe(buf + n, MVM_F_STDIN, 7, "");
    n += mkframe(buf + n, MVM_F_EXIT, 7, "{\"code\":0}");

    struct mvm_frame_reader r;
    mvm_frame_reader_init(&r);
    struct mvm_frame_hdr h;
    const uint8_t *p;
    int got = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(mvm_frame_reader_feed(&r, buf + i, 1), 0);
        int rc;
        while ((rc = mvm_frame_reader_next(&r, &h, &p)) == 1) {
            switch (got) {
            case 0:
                assert_int_equal(h.type, MVM_F_STDOUT);
                assert_int_equal(h.len, 5);
                assert_memory_equal(p, "hello", 5);
                break;
            case 1:
                assert_int_equal(h.type, MVM_F_STDIN);
                assert_int_equal(h.len, 0);
                break;
            case 2:
                assert_int_equal(h.type, MVM_F_EXIT);
                assert_int_equal(h.chan, 7);
                assert_memory_equal(p, "{\"code\":0}", h.len);
                break;
            }
            got++;
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(got, 3);
    assert_false(r.bad);
    mvm_frame_reader_free(&r);
}

static void test_reader_two_frames_one_feed(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = mkframe(buf, MVM_F_PING, 0, "abc");
    n += mkframe(buf + n, MVM_F_PONG, 0, "defg");
    struct mvm_frame_reader r;
    mvm_frame_reader_init(&r);
    assert_int_equal(mvm_frame_reader_feed(&r, buf, n), 0);
    struct mvm_frame_hdr h;
    const uint8_t *p;
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 1);
    assert_int_equal(h.type, MVM_F_PING);
    assert_int_equal(h.len, 3);
    assert_memory_equal(p, "abc", 3);
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 1);
    assert_int_equal(h.type, MVM_F_PONG);
    assert_int_equal(h.len, 4);
    assert_memory_equal(p, "defg", 4);
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 0);
    mvm_frame_reader_free(&r);
}

static void test_reader_split_frame(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = mkframe(buf, MVM_F_STDERR, 3, "0123456789");
    size_t n2 = mkframe(buf + n, MVM_F_STDOUT, 4, "xyz");
    struct mvm_frame_reader r;
    mvm_frame_reader_init(&r);
    struct mvm_frame_hdr h;
    const uint8_t *p;
    /* first feed: header + part of payload */
    assert_int_equal(mvm_frame_reader_feed(&r, buf, MVM_FRAME_HDR + 4), 0);
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 0);
    /* second feed: rest of frame 1 and the start of frame 2 */
    assert_int_equal(mvm_frame_reader_feed(&r, buf + MVM_FRAME_HDR + 4, n - MVM_FRAME_HDR - 4 + 5), 0);
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 1);
    assert_int_equal(h.chan, 3);
    assert_memory_equal(p, "0123456789", 10);
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 0);
    assert_int_equal(mvm_frame_reader_feed(&r, buf + n + 5, n2 - 5), 0);
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 1);
    assert_int_equal(h.chan, 4);
    assert_memory_equal(p, "xyz", 3);
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 0);
    mvm_frame_reader_free(&r);
}

static void test_reader_large_frame(void **state)
{
    (void)state;
    size_t plen = MVM_FRAME_MAX;
    uint8_t *buf = malloc(MVM_FRAME_HDR + plen);
    assert_non_null(buf);
    assert_int_equal(mvm_frame_encode_hdr(buf, MVM_F_STDOUT, 9, (uint32_t)plen), 0);
    for (size_t i = 0; i < plen; i++)
        buf[MVM_FRAME_HDR + i] = (uint8_t)(i * 31);
    struct mvm_frame_reader r;
    mvm_frame_reader_init(&r);
    struct mvm_frame_hdr h;
    const uint8_t *p;
    for (size_t off = 0; off < MVM_FRAME_HDR + plen; off += 1000) {
        size_t k = MVM_FRAME_HDR + plen - off;
        if (k > 1000)
            k = 1000;
        assert_int_equal(mvm_frame_reader_feed(&r, buf + off, k), 0);
    }
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 1);
    assert_int_equal(h.len, plen);
    assert_memory_equal(p, buf + MVM_FRAME_HDR, plen);
    mvm_frame_reader_free(&r);
    free(buf);
}

static void test_reader_bad_stream(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = mkframe(buf, MVM_F_PING, 0, "ok");
    size_t m = mkframe(buf + n, MVM_F_PING, 0, "no");
    buf[n + 4] = 0; /* type 0 on the second frame */
    struct mvm_frame_reader r;
    mvm_frame_reader_init(&r);
    assert_int_equal(mvm_frame_reader_feed(&r, buf, n + m), 0);
    struct mvm_frame_hdr h;
    const uint8_t *p;
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), 1);
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), -1);
    assert_true(r.bad);
    assert_int_equal(mvm_frame_reader_next(&r, &h, &p), -1);
    mvm_frame_reader_free(&r);
}

/* ---------------------------------------------------------------- blocking I/O */

static void test_frame_write_read_socketpair(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(mvm_frame_write(sv[0], MVM_F_HELLO, 0, "{\"version\":1}", 13), 0);
    assert_int_equal(mvm_frame_write(sv[0], MVM_F_STDIN, 5, NULL, 0), 0);
    assert_int_equal(mvm_frame_write(sv[0], MVM_F_STDOUT, 5, "xy", 2), 0);
    assert_int_equal(mvm_frame_write(sv[0], 0, 5, "xy", 2), -1);
    assert_int_equal(errno, EINVAL);

    struct mvm_frame_hdr h;
    uint8_t *p;
    assert_int_equal(mvm_frame_read(sv[1], &h, &p), 1);
    assert_int_equal(h.type, MVM_F_HELLO);
    assert_int_equal(h.len, 13);
    assert_string_equal((char *)p, "{\"version\":1}");
    free(p);
    assert_int_equal(mvm_frame_read(sv[1], &h, &p), 1);
    assert_int_equal(h.type, MVM_F_STDIN);
    assert_int_equal(h.chan, 5);
    assert_int_equal(h.len, 0);
    assert_non_null(p);
    assert_int_equal(p[0], 0);
    free(p);
    assert_int_equal(mvm_frame_read(sv[1], &h, &p), 1);
    assert_int_equal(h.len, 2);
    assert_memory_equal(p, "xy", 2);
    free(p);

    /* clean EOF */
    close(sv[0]);
    assert_int_equal(mvm_frame_read(sv[1], &h, &p), 0);
    close(sv[1]);
}

static void test_frame_read_eof_inside(void **state)
{
    (void)state;
    int sv[2];
    struct mvm_frame_hdr h;
    uint8_t *p;
    uint8_t hb[MVM_FRAME_HDR];

    /* EOF inside the payload */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(mvm_frame_encode_hdr(hb, MVM_F_STDOUT, 1, 10), 0);
    assert_int_equal(write(sv[0], hb, sizeof(hb)), sizeof(hb));
    assert_int_equal(write(sv[0], "abc", 3), 3);
    close(sv[0]);
    errno = 0;
    assert_int_equal(mvm_frame_read(sv[1], &h, &p), -1);
    assert_int_equal(errno, EIO);
    close(sv[1]);

    /* EOF inside the header */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(write(sv[0], hb, 5), 5);
    close(sv[0]);
    errno = 0;
    assert_int_equal(mvm_frame_read(sv[1], &h, &p), -1);
    assert_int_equal(errno, EIO);
    close(sv[1]);

    /* malformed header */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    hb[5] = 1;
    assert_int_equal(write(sv[0], hb, sizeof(hb)), sizeof(hb));
    errno = 0;
    assert_int_equal(mvm_frame_read(sv[1], &h, &p), -1);
    assert_int_equal(errno, EPROTO);
    close(sv[0]);
    close(sv[1]);
}

static void test_frame_write_large(void **state)
{
    (void)state;
    /* larger than the socket buffer: writer in a child, reader here */
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    size_t n = MVM_FRAME_MAX;
    uint8_t *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i ^ (i >> 8));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(sv[1]);
        _exit(mvm_frame_write(sv[0], MVM_F_STDOUT, 2, big, n) == 0 ? 0 : 1);
    }
    close(sv[0]);
    struct mvm_frame_hdr h;
    uint8_t *p;
    assert_int_equal(mvm_frame_read(sv[1], &h, &p), 1);
    assert_int_equal(h.len, n);
    assert_memory_equal(p, big, n);
    free(p);
    free(big);
    assert_int_equal(mvm_frame_read(sv[1], &h, &p), 0);
    close(sv[1]);
}

/* ---------------------------------------------------------------- JSON reader */

static void test_mj_get_str(void **state)
{
    (void)state;
    const char js[] = " { \"a\" : \"plain\", \"b\":\"q\\\"b\\\\s\\/n\\nt\\tr\\rB\\bF\\f\","
                      "\"u\":\"\\u00e9\\u20ac\\ud83d\\ude00\", \"e\":\"\" } ";
    char *s = NULL;
    assert_int_equal(mvm_mj_validate(S(js)), 0);
    assert_int_equal(mvm_mj_get_str(S(js), "a", &s), 1);
    assert_string_equal(s, "plain");
    free(s);
    assert_int_equal(mvm_mj_get_str(S(js), "b", &s), 1);
    assert_string_equal(s, "q\"b\\s/n\nt\tr\rB\bF\f");
    free(s);
    assert_int_equal(mvm_mj_get_str(S(js), "u", &s), 1);
    assert_string_equal(s, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    free(s);
    assert_int_equal(mvm_mj_get_str(S(js), "e", &s), 1);
    assert_string_equal(s, "");
    free(s);
    s = NULL;
    assert_int_equal(mvm_mj_get_str(S(js), "missing", &s), 0);
    assert_null(s);
}

static void test_mj_escaped_key_and_no_nul(void **state)
{
    (void)state;
    /* keys are compared after decoding; input need not be NUL-terminated */
    char js[] = "{\"k\\u0065y\":\"v\"}XXXX";
    char *s;
    assert_int_equal(mvm_mj_get_str(js, strlen(js) - 4, "key", &s), 1);
    assert_string_equal(s, "v");
    free(s);
    assert_int_equal(mvm_mj_get_str(js, strlen(js), "key", &s), -1);
}

static void test_mj_bad_strings(void **state)
{
    (void)state;
    char *s;
    assert_int_equal(mvm_mj_get_str(S("{\"a\":\"\\u0000\"}"), "a", &s), -1);
    assert_int_equal(mvm_mj_get_str(S("{\"a\":\"\\ud800\"}"), "a", &s), -1);
    assert_int_equal(mvm_mj_get_str(S("{\"a\":\"\\udc00\"}"), "a", &s), -1);
    assert_int_equal(mvm_mj_get_str(S("{\"a\":\"\\u12\"}"), "a", &s), -1);
    assert_int_equal(mvm_mj_get_str(S("{\"a\":\"\\x\"}"), "a", &s), -1);
    assert_int_equal(mvm_mj_get_str(S("{\"a\":\"raw\nnewline\"}"), "a", &s), -1);
    assert_int_equal(mvm_mj_validate("{\"a\":\"\0\"}", 9), -1);
}

static void test_mj_get_int(void **state)
{
    (void)state;
    const char js[] = "{\"a\":0,\"b\":-42,\"c\":9223372036854775807,"
                      "\"d\":-9223372036854775808,\"e\":123}";
    long long v;
    assert_int_equal(mvm_mj_get_int(S(js), "a", &v), 1);
    assert_int_equal(v, 0);
    assert_int_equal(mvm_mj_get_int(S(js), "b", &v), 1);
    assert_int_equal(v, -42);
    assert_int_equal(mvm_mj_get_int(S(js), "c", &v), 1);
    assert_true(v == 9223372036854775807LL);
    assert_int_equal(mvm_mj_get_int(S(js), "d", &v), 1);
    assert_true(v == -9223372036854775807LL - 1);
    assert_int_equal(mvm_mj_get_int(S(js), "e", &v), 1);
    assert_int_equal(v, 123);
    assert_int_equal(mvm_mj_get_int(S(js), "zz", &v), 0);

    assert_int_equal(mvm_mj_get_int(S("{\"a\":9223372036854775808}"), "a", &v), -1);
    assert_int_equal(mvm_mj_get_int(S("{\"a\":-9223372036854775809}"), "a", &v), -1);
    assert_int_equal(mvm_mj_get_int(S("{\"a\":1.5}"), "a", &v), -1);
    assert_int_equal(mvm_mj_get_int(S("{\"a\":1e3}"), "a", &v), -1);
    assert_int_equal(mvm_mj_get_int(S("{\"a\":01}"), "a", &v), -1);
    assert_int_equal(mvm_mj_get_int(S("{\"a\":-}"), "a", &v), -1);
    assert_int_equal(mvm_mj_get_int(S("{\"a\":+1}"), "a", &v), -1);
}

static void test_mj_get_bool_and_null(void **state)
{
    (void)state;
    const char js[] = "{\"t\":true,\"f\":false,\"n\":null}";
    bool b = false;
    assert_int_equal(mvm_mj_get_bool(S(js), "t", &b), 1);
    assert_true(b);
    assert_int_equal(mvm_mj_get_bool(S(js), "f", &b), 1);
    assert_false(b);
    assert_int_equal(mvm_mj_get_bool(S(js), "n", &b), 0); /* null reads as absent */
    assert_int_equal(mvm_mj_get_bool(S(js), "x", &b), 0);
    assert_int_equal(mvm_mj_get_bool(S("{\"t\":tru}"), "t", &b), -1);
    assert_int_equal(mvm_mj_get_bool(S("{\"t\":truex}"), "t", &b), -1);
}

static void test_mj_get_strv(void **state)
{
    (void)state;
    const char js[] = "{\"v\":[ \"a\" , \"b\\n\",\"\" ],\"e\":[]}";
    char **v;
    assert_int_equal(mvm_mj_get_strv(S(js), "v", &v), 1);
    assert_string_equal(v[0], "a");
    assert_string_equal(v[1], "b\n");
    assert_string_equal(v[2], "");
    assert_null(v[3]);
    free_strv(v);
    assert_int_equal(mvm_mj_get_strv(S(js), "e", &v), 1);
    assert_null(v[0]);
    free_strv(v);
    assert_int_equal(mvm_mj_get_strv(S(js), "nope", &v), 0);

    assert_int_equal(mvm_mj_get_strv(S("{\"v\":[1]}"), "v", &v), -1);
    assert_int_equal(mvm_mj_get_strv(S("{\"v\":[\"a\",]}"), "v", &v), -1);
    assert_int_equal(mvm_mj_get_strv(S("{\"v\":[\"a\"}"), "v", &v), -1);
    assert_int_equal(mvm_mj_get_strv(S("{\"v\":[[\"a\"]]}"), "v", &v), -1);
}

static void test_mj_strv_cap(void **state)
{
    (void)state;
    size_t n = MVM_EXEC_MAX_ARGS + 1;
    char *js = malloc(16 + n * 4);
    assert_non_null(js);
    size_t len = 0;
    len += (size_t)sprintf(js, "{\"v\":[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(js + len, "%s\"x\"", i ? "," : "");
    len += (size_t)sprintf(js + len, "]}");
    char **v;
    assert_int_equal(mvm_mj_get_strv(js, len, "v", &v), -1);
    /* exactly at the cap is fine */
    len = (size_t)sprintf(js, "{\"v\":[");
    for (size_t i = 0; i < MVM_EXEC_MAX_ARGS; i++)
        len += (size_t)sprintf(js + len, "%s\"x\"", i ? "," : "");
    len += (size_t)sprintf(js + len, "]}");
    assert_int_equal(mvm_mj_get_strv(js, len, "v", &v), 1);
    free_strv(v);
    free(js);
}

static void test_mj_wrong_type(void **state)
{
    (void)state;
    const char js[] = "{\"s\":\"x\",\"i\":1,\"b\":true,\"v\":[\"a\"]}";
    char *s;
    long long i;
    bool b;
    char **v;
    assert_int_equal(mvm_mj_get_str(S(js), "i", &s), -1);
    assert_int_equal(mvm_mj_get_str(S(js), "v", &s), -1);
    assert_int_equal(mvm_mj_get_int(S(js), "s", &i), -1);
    assert_int_equal(mvm_mj_get_int(S(js), "b", &i), -1);
    assert_int_equal(mvm_mj_get_bool(S(js), "i", &b), -1);
    assert_int_equal(mvm_mj_get_strv(S(js), "s", &v), -1);
}

static void test_mj_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "   ",
        "{",
        "}",
        "[]",
        "\"str\"",
        "{\"a\":\"unterminated}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\" 1}",
        "{\"a\":}",
        "{a:1}",
        "{\"a\":{\"b\":1}}",
        "{\"a\":1} x",
        "{\"a\":1}}",
        "{\"a\":1}{}",
        "{\"a\":1 \"b\":2}",
        "{\"a\":nul}",
        "{\"a\":1,\"a\":2}",
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        long long v;
        int rc = mvm_mj_get_int(bad[k], strlen(bad[k]), "a", &v);
        if (rc != -1)
            fail_msg("accepted malformed document %s", bad[k]);
    }
    /* validate() alone */
    assert_int_equal(mvm_mj_validate(S("{\"a\":1,}")), -1);
    assert_int_equal(mvm_mj_validate(S("{\"a\":{}}")), -1);
    assert_int_equal(mvm_mj_validate(S("{\"a\":1} trailing")), -1);
    assert_int_equal(mvm_mj_validate(S("{}")), 0);
    assert_int_equal(mvm_mj_validate(S(" \n{ }\t")), 0);
    assert_int_equal(mvm_mj_validate(NULL, 0), -1);
}

/* ---------------------------------------------------------------- JSON writer */

static void test_mj_writer_roundtrip(void **state)
{
    (void)state;
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    mvm_mj_str(&w, "s", "q\"\\\n\t\x01\x1f end");
    mvm_mj_int(&w, "i", -123456789012LL);
    mvm_mj_bool(&w, "b", true);
    char *vals[] = { "a", "b\"c", NULL };
    mvm_mj_strv(&w, "v", vals);
    mvm_mj_strv(&w, "empty", NULL);
    mvm_mj_str(&w, "we\"ird", "k");
    size_t len;
    char *js = mvm_mj_end(&w, &len);
    assert_non_null(js);
    assert_int_equal(strlen(js), len);
    assert_int_equal(mvm_mj_validate(js, len), 0);
    assert_null(strchr(js, '\n'));
    assert_null(strchr(js, '\x01'));

    char *s;
    long long i;
    bool b;
    char **v;
    assert_int_equal(mvm_mj_get_str(js, len, "s", &s), 1);
    assert_string_equal(s, "q\"\\\n\t\x01\x1f end");
    free(s);
    assert_int_equal(mvm_mj_get_int(js, len, "i", &i), 1);
    assert_true(i == -123456789012LL);
    assert_int_equal(mvm_mj_get_bool(js, len, "b", &b), 1);
    assert_true(b);
    assert_int_equal(mvm_mj_get_strv(js, len, "v", &v), 1);
    assert_string_equal(v[0], "a");
    assert_string_equal(v[1], "b\"c");
    assert_null(v[2]);
    free_strv(v);
    assert_int_equal(mvm_mj_get_strv(js, len, "empty", &v), 1);
    assert_null(v[0]);
    free_strv(v);
    assert_int_equal(mvm_mj_get_str(js, len, "we\"ird", &s), 1);
    assert_string_equal(s, "k");
    free(s);
    free(js);

    mvm_mj_begin(&w);
    js = mvm_mj_end(&w, &len);
    assert_string_equal(js, "{}");
    free(js);
}

/* ---------------------------------------------------------------- exec request */

static void test_exec_req_roundtrip(void **state)
{
    (void)state;
    char *argv[] = { "sh", "-c", "echo \"$X\"", NULL };
    char *env[] = { "X=1", "EMPTY=", "WEIRD=a=b", NULL };
    struct mvm_exec_req in = { .argv = argv, .env = env, .cwd = "/tmp", .tty = true,
                               .rows = 50, .cols = 132 };
    size_t len;
    char *js = mvm_exec_req_encode(&in, &len);
    assert_non_null(js);
    struct mvm_exec_req out;
    assert_int_equal(mvm_exec_req_decode(js, len, &out), 0);
    for (int k = 0; k < 3; k++)
        assert_string_equal(out.argv[k], argv[k]);
    assert_null(out.argv[3]);
    assert_non_null(out.env);
    for (int k = 0; k < 3; k++)
        assert_string_equal(out.env[k], env[k]);
    assert_null(out.env[3]);
    assert_string_equal(out.cwd, "/tmp");
    assert_true(out.tty);
    assert_int_equal(out.rows, 50);
    assert_int_equal(out.cols, 132);
    mvm_exec_req_free(&out);
    assert_null(out.argv);
    free(js);
}

static void test_exec_req_minimal(void **state)
{
    (void)state;
    struct mvm_exec_req out;
    assert_int_equal(mvm_exec_req_decode(S("{\"argv\":[\"true\"]}"), &out), 0);
    assert_string_equal(out.argv[0], "true");
    assert_null(out.env);
    assert_null(out.cwd);
    assert_false(out.tty);
    assert_int_equal(out.rows, 24);
    assert_int_equal(out.cols, 80);
    mvm_exec_req_free(&out);

    /* unknown keys are ignored for forward compatibility */
    assert_int_equal(mvm_exec_req_decode(S("{\"argv\":[\"x\"],\"future\":\"y\"}"), &out), 0);
    mvm_exec_req_free(&out);

    char *argv[] = { "ls", NULL };
    struct mvm_exec_req in = { .argv = argv };
    size_t len;
    char *js = mvm_exec_req_encode(&in, &len);
    assert_non_null(js);
    assert_int_equal(mvm_exec_req_decode(js, len, &out), 0);
    assert_string_equal(out.argv[0], "ls");
    assert_null(out.env);
    assert_null(out.cwd);
    mvm_exec_req_free(&out);
    free(js);
}

static void test_exec_req_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{}",
        "{\"env\":[\"A=1\"]}",
        "{\"argv\":[]}",
        "{\"argv\":\"sh\"}",
        "{\"argv\":[\"sh\"],\"env\":[\"NOEQUALS\"]}",
        "{\"argv\":[\"sh\"],\"env\":[\"=x\"]}",
        "{\"argv\":[\"sh\"],\"cwd\":1}",
        "{\"argv\":[\"sh\"],\"tty\":\"yes\"}",
        "{\"argv\":[\"sh\"],\"rows\":-1}",
        "{\"argv\":[\"sh\"],\"cols\":70000}",
        "{\"argv\":[\"sh\"]",
        "{\"argv\":[\"sh\"]} junk",
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        struct mvm_exec_req out;
        if (mvm_exec_req_decode(bad[k], strlen(bad[k]), &out) != -1)
            fail_msg("accepted bad exec request %s", bad[k]);
        assert_null(out.argv);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdr_roundtrip),
        cmocka_unit_test(test_hdr_encode_rejects),
        cmocka_unit_test(test_hdr_decode_truncated),
        cmocka_unit_test(test_hdr_decode_bad),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_reader_byte_by_byte),
        cmocka_unit_test(test_reader_two_frames_one_feed),
        cmocka_unit_test(test_reader_split_frame),
        cmocka_unit_test(test_reader_large_frame),
        cmocka_unit_test(test_reader_bad_stream),
        cmocka_unit_test(test_frame_write_read_socketpair),
        cmocka_unit_test(test_frame_read_eof_inside),
        cmocka_unit_test(test_frame_write_large),
        cmocka_unit_test(test_mj_get_str),
        cmocka_unit_test(test_mj_escaped_key_and_no_nul),
        cmocka_unit_test(test_mj_bad_strings),
        cmocka_unit_test(test_mj_get_int),
        cmocka_unit_test(test_mj_get_bool_and_null),
        cmocka_unit_test(test_mj_get_strv),
        cmocka_unit_test(test_mj_strv_cap),
        cmocka_unit_test(test_mj_wrong_type),
        cmocka_unit_test(test_mj_malformed),
        cmocka_unit_test(test_mj_writer_roundtrip),
        cmocka_unit_test(test_exec_req_roundtrip),
        cmocka_unit_test(test_exec_req_minimal),
        cmocka_unit_test(test_exec_req_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
