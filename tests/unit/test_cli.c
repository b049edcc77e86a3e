/* Unit tests for mvmctl's parsing and formatting helpers (src/cli/cli.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* ---- memory sizes ---- */

static int mem(const char *s) {
    mvm_error *err = NULL;
    int v = -7;
    if (cli_parse_mem_mib(s, &v, &err) < 0) {
        assert_non_null(err);
        assert_int_equal(err->code, MVM_EINVAL);
        assert_non_null(strstr(err->msg, "memory size"));
        mvm_error_free(err);
        assert_int_equal(v, -7);
        return -1;
    }
    assert_null(err);
    return v;
}

static void test_mem_units(void **state) {
    (void)state;
    assert_int_equal(mem("512"), 512);
    assert_int_equal(mem("512M"), 512);
    assert_int_equal(mem("512m"), 512);
    assert_int_equal(mem("512MB"), 512);
    assert_int_equal(mem("512MiB"), 512);
    assert_int_equal(mem("1G"), 1024);
    assert_int_equal(mem("1g"), 1024);
    assert_int_equal(mem("2GiB"), 2048);
    assert_int_equal(mem("1.5G"), 1536);
    assert_int_equal(mem("0.5G"), 512);
    assert_int_equal(mem("2048K"), 2);
    assert_int_equal(mem("1048576KiB"), 1024);
    assert_int_equal(mem("1T"), 1048576);
}

static void test_mem_invalid(void **state) {
    (void)state;
    const char *bad[] = {"", "0", "0M", "M", "abc", "-1", " 512", "512 ", "10X", "1.5",
                         "1.G", ".5G", "512K", "1.0000001G", "2T", "99999999999999999999",
                         "1e3", "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (mem(bad[i]) != -1)
            fail_msg("'%s' should be rejected", bad[i]);
    }
    mvm_error *err = NULL;
    int v;
    assert_int_equal(cli_parse_mem_mib(NULL, &v, &err), -1);
    mvm_error_free(err);
}

/* ---- durations ---- */

static int dur(const char *s) {
    mvm_error *err = NULL;
    int v = -7;
    if (cli_parse_duration("timeout", s, &v, &err) < 0) {
        assert_non_null(err);
        assert_int_equal(err->code, MVM_EINVAL);
        assert_non_null(strstr(err->msg, "timeout"));
        mvm_error_free(err);
        return -1;
    }
    return v;
}

static void test_duration(void **state) {
    (void)state;
    assert_int_equal(dur("0"), 0);
    assert_int_equal(dur("10"), 10);
    assert_int_equal(dur("10s"), 10);
    assert_int_equal(dur("2m"), 120);
    assert_int_equal(dur("1h"), 3600);
    assert_int_equal(dur("1m30s"), 90);
    assert_int_equal(dur("1h1m1s"), 3661);
    const char *bad[] = {"", "s", "m5", "1m30", "30s1m", "1s1s", "-5", "5 s", "1.5s", "5ms",
                         "10d", "99999999999", "999999h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (dur(bad[i]) != -1)
            fail_msg("'%s' should be rejected", bad[i]);
}

/* ---- integers ---- */

static void test_int(void **state) {
    (void)state;
    mvm_error *err = NULL;
    long v = 0;
    assert_int_equal(cli_parse_int("CPU count", "4", 1, 8, &v, &err), 0);
    assert_int_equal(v, 4);
    const char *bad[] = {"", "0", "9", "x", "4x", " 4", "-1", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(cli_parse_int("CPU count", bad[i], 1, 8, &v, &err), -1);
        assert_non_null(strstr(err->msg, "CPU count"));
        mvm_error_free(err);
        err = NULL;
    }
}

/* ---- -e K=V ---- */

static void test_env(void **state) {
    (void)state;
    mvm_error *err = NULL;
    char *kv = NULL;
    assert_int_equal(cli_parse_env("A=B", &kv, &err), 0);
    assert_string_equal(kv, "A=B");
    free(kv);
    assert_int_equal(cli_parse_env("EMPTY=", &kv, &err), 0);
    assert_string_equal(kv, "EMPTY=");
    free(kv);
    assert_int_equal(cli_parse_env("X=a=b c", &kv, &err), 0);
    assert_string_equal(kv, "X=a=b c");
    free(kv);

    setenv("MVM_TEST_CLI_VAR", "from host", 1);
    assert_int_equal(cli_parse_env("MVM_TEST_CLI_VAR", &kv, &err), 0);
    assert_string_equal(kv, "MVM_TEST_CLI_VAR=from host");
    free(kv);
    unsetenv("MVM_TEST_CLI_VAR");
    kv = (char *)"sentinel";
    assert_int_equal(cli_parse_env("MVM_TEST_CLI_VAR", &kv, &err), 0);
    assert_null(kv);
    assert_null(err);

    const char *bad[] = {"=x", "", "A B=c", "A\tB", "\n=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(cli_parse_env(bad[i], &kv, &err), -1);
        assert_null(kv);
        assert_int_equal(err->code, MVM_EINVAL);
        mvm_error_free(err);
        err = NULL;
    }
}

static void test_strv(void **state) {
    (void)state;
    struct cli_strv sv = {0};
    assert_null(sv.v);
    assert_int_equal(cli_strv_push(&sv, strdup("a")), 0);
    assert_int_equal(cli_strv_push(&sv, strdup("b")), 0);
    assert_int_equal(sv.n, 2);
    assert_string_equal(sv.v[0], "a");
    assert_string_equal(sv.v[1], "b");
    assert_null(sv.v[2]);
    cli_strv_clear(&sv);
    assert_null(sv.v);
    assert_int_equal(sv.n, 0);
}

/* ---- splitting argv at the operand ---- */

static void test_command_after(void **state) {
    (void)state;
    int n;
    char *a1[] = {"run", "img", "--", "ls", "-l", NULL};
    char **cmd = cli_command_after(5, a1, 1, &n);
    assert_int_equal(n, 2);
    assert_string_equal(cmd[0], "ls");
    assert_string_equal(cmd[1], "-l");
    assert_null(cmd[2]);

    char *a2[] = {"exec", "vm", "ls", "--", "x", NULL};
    cmd = cli_command_after(5, a2, 1, &n);
    assert_int_equal(n, 3);
    assert_string_equal(cmd[0], "ls");
    assert_string_equal(cmd[1], "--"); /* only the first "--" separates */

    char *a3[] = {"run", "img", NULL};
    cmd = cli_command_after(2, a3, 1, &n);
    assert_int_equal(n, 0);
    assert_null(cmd[0]);

    char *a4[] = {"run", "img", "--", NULL};
    cmd = cli_command_after(3, a4, 1, &n);
    assert_int_equal(n, 0);

    char *a5[] = {"run", "img", "--", "--", NULL};
    cmd = cli_command_after(4, a5, 1, &n);
    assert_int_equal(n, 1);
    assert_string_equal(cmd[0], "--");
}

/* getopt with "+" stops at the first operand, so options of the guest command stay put. */
static void test_getopt_stops_at_operand(void **state) {
    (void)state;
    static const struct option lo[] = {
        {"name", required_argument, NULL, 'n'},
        {"rm", no_argument, NULL, 'r'},
        {0},
    };
    char *argv[] = {"run", "-i", "--name", "x", "--rm", "img", "sh", "-c", "echo -i", NULL};
    int argc = 9, c;
    bool i = false, rm = false;
    const char *name = NULL;
    cli_getopt_reset();
    while ((c = cli_getopt("run", argc, argv, "+:in:", lo)) != -1) {
        switch (c) {
        case 'i': i = true; break;
        case 'n': name = optarg; break;
        case 'r': rm = true; break;
        default: fail_msg("unexpected option %d", c);
        }
    }
    assert_true(i && rm);
    assert_string_equal(name, "x");
    assert_int_equal(optind, 5);
    int n;
    char **cmd = cli_command_after(argc, argv, optind, &n);
    assert_int_equal(n, 3);
    assert_string_equal(cmd[2], "echo -i");

    /* a leading "--" before the operand is consumed by getopt */
    char *argv2[] = {"run", "--", "img", "--", "ls", NULL};
    cli_getopt_reset();
    while ((c = cli_getopt("run", 5, argv2, "+:in:", lo)) != -1)
        fail_msg("unexpected option %d", c);
    assert_int_equal(optind, 2);
    cmd = cli_command_after(5, argv2, optind, &n);
    assert_int_equal(n, 1);
    assert_string_equal(cmd[0], "ls");
}

static void test_getopt_errors(void **state) {
    (void)state;
    static const struct option lo[] = {
        {"name", required_argument, NULL, 'n'},
        {"rm", no_argument, NULL, 'r'},
        {0},
    };
    char *unknown_long[] = {"run", "--foo", "img", NULL};
    char *unknown_short[] = {"run", "-x", "img", NULL};
    char *missing[] = {"run", "--name", NULL};
    char *missing_short[] = {"run", "-n", NULL};
    char *extra_arg[] = {"run", "--rm=1", "img", NULL};
    char **cases[] = {unknown_long, unknown_short, missing, missing_short, extra_arg};
    int argcs[] = {3, 3, 2, 2, 3};
    /* messages go to stderr; silence them */
    fflush(stderr);
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
    assert_true(saved >= 0 && devnull >= 0);
    dup2(devnull, 2);
    for (size_t k = 0; k < sizeof(argcs) / sizeof(argcs[0]); k++) {
        cli_getopt_reset();
        int c = cli_getopt("run", argcs[k], cases[k], "+:in:", lo);
        if (c != '?') {
            dup2(saved, 2);
            fail_msg("case %zu: got %d", k, c);
        }
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(devnull);
}

/* ---- human output ---- */

static void test_human_size(void **state) {
    (void)state;
    char b[32];
    cli_human_size(0, b, sizeof(b));
    assert_string_equal(b, "0 B");
    cli_human_size(1023, b, sizeof(b));
    assert_string_equal(b, "1023 B");
    cli_human_size(1536, b, sizeof(b));
    assert_string_equal(b, "1.5 KiB");
    cli_human_size(12ULL * 1024 * 1024 + 300 * 1024, b, sizeof(b));
    assert_string_equal(b, "12.3 MiB");
    cli_human_size(3ULL << 30, b, sizeof(b));
    assert_string_equal(b, "3.0 GiB");
}

static void test_human_ago(void **state) {
    (void)state;
    char b[64];
    long long now = 1700000000;
    struct { long long d; const char *want; } cases[] = {
        {0, "just now"},       {-5, "just now"},        {1, "1 second ago"},
        {5, "5 seconds ago"},  {60, "1 minute ago"},    {179, "2 minutes ago"},
        {3600, "1 hour ago"},  {7200, "2 hours ago"},   {86400 * 3, "3 days ago"},
        {86400 * 20, "2 weeks ago"}, {86400 * 90, "3 months ago"},
        {86400LL * 365 * 3, "3 years ago"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cli_human_ago(now - cases[i].d, now, b, sizeof(b));
        assert_string_equal(b, cases[i].want);
    }
    cli_human_ago(0, now, b, sizeof(b));
    assert_string_equal(b, "-");
}

static void test_rfc3339(void **state) {
    (void)state;
    assert_int_equal(cli_parse_rfc3339("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(cli_parse_rfc3339("2024-01-02T03:04:05Z"), 1704164645LL);
    assert_int_equal(cli_parse_rfc3339("2024-01-02T03:04:05.123Z"), 1704164645LL);
    assert_int_equal(cli_parse_rfc3339("2024-01-02T04:04:05+01:00"), 1704164645LL);
    assert_int_equal(cli_parse_rfc3339("2024-01-02T02:04:05-01:00"), 1704164645LL);
    assert_int_equal(cli_parse_rfc3339(NULL), -1);
    assert_int_equal(cli_parse_rfc3339(""), -1);
    assert_int_equal(cli_parse_rfc3339("2024-01-02"), -1);
    assert_int_equal(cli_parse_rfc3339("2024-01-02T03:04:05"), -1);
    assert_int_equal(cli_parse_rfc3339("2024-01-02T03:04:05Zjunk"), -1);
}

static void test_table(void **state) {
    (void)state;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    assert_non_null(f);
    struct cli_table t;
    const char *hdr[] = {"NAME", "STATE", "X"};
    const char *r1[] = {"a-long-name", "running", "1"};
    const char *r2[] = {"b", NULL, "22"};
    assert_int_equal(cli_table_init(&t, 3, hdr), 0);
    assert_int_equal(cli_table_add(&t, r1), 0);
    assert_int_equal(cli_table_add(&t, r2), 0);
    cli_table_print(&t, f);
    cli_table_clear(&t);
    fclose(f);
    assert_string_equal(out, "NAME          STATE     X\n"
                             "a-long-name   running   1\n"
                             "b                       22\n");
    free(out);
}

/* ---- tail ---- */

static long tail_of(const char *content, long n) {
    char path[] = "/tmp/mvm-test-cli-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    size_t l = strlen(content);
    assert_int_equal(write(fd, content, l), (ssize_t)l);
    off_t off = cli_tail_offset(fd, n);
    close(fd);
    return (long)off;
}

static void test_tail_offset(void **state) {
    (void)state;
    assert_int_equal(tail_of("", 3), 0);
    assert_int_equal(tail_of("a\nb\nc\n", -1), 0);
    assert_int_equal(tail_of("a\nb\nc\n", 0), 6);
    assert_int_equal(tail_of("a\nb\nc\n", 1), 4);
    assert_int_equal(tail_of("a\nb\nc\n", 2), 2);
    assert_int_equal(tail_of("a\nb\nc\n", 3), 0);
    assert_int_equal(tail_of("a\nb\nc\n", 10), 0);
    assert_int_equal(tail_of("a\nb\nc", 1), 4); /* unterminated last line counts */
    assert_int_equal(tail_of("a\n\n\n", 2), 2);

    /* lines spanning the internal read chunk */
    size_t big = 3 * 4096 + 17;
    char *s = malloc(big + 1);
    assert_non_null(s);
    memset(s, 'x', big);
    s[big] = '\0';
    s[100] = '\n';
    s[5000] = '\n';
    s[big - 1] = '\n';
    assert_int_equal(tail_of(s, 1), 5001);
    assert_int_equal(tail_of(s, 2), 101);
    assert_int_equal(tail_of(s, 3), 0);
    free(s);
}

static void test_guest_dir(void **state) {
    (void)state;
    setenv("MVM_GUEST_DIR", "/opt/guest", 1);
    assert_string_equal(cli_guest_dir(), "/opt/guest");
    setenv("MVM_GUEST_DIR", "", 1);
    assert_string_not_equal(cli_guest_dir(), "");
    unsetenv("MVM_GUEST_DIR");
    const char *d = cli_guest_dir();
    assert_true(!strcmp(d, MVM_GUEST_DIR_BUILD) || !strcmp(d, MVM_GUEST_DIR_INSTALL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mem_units),
        cmocka_unit_test(test_mem_invalid),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_strv),
        cmocka_unit_test(test_command_after),
        cmocka_unit_test(test_getopt_stops_at_operand),
        cmocka_unit_test(test_getopt_errors),
        cmocka_unit_test(test_human_size),
        cmocka_unit_test(test_human_ago),
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_tail_offset),
        cmocka_unit_test(test_guest_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
