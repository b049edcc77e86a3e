/* Unit tests: flake staging hash, builder log tails, extraction verification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>

#include "build/build-internal.h"
#include "mvm/paths.h"
#include "util.h"

static char *tmpdir(void) {
    char *d = strdup("/tmp/mvm-test-build-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void put(const char *dir, const char *rel, const char *content) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static void hash(const char *dir, char out[65]) {
    mvm_error *e = NULL;
    assert_int_equal(build_source_hash(dir, out, &e), 0);
    assert_null(e);
}

static void test_source_hash(void **state) {
    (void)state;
    _cleanup_free_ char *d = tmpdir();
    char p[512];
    put(d, "flake.nix", "{ outputs = _: {}; }\n");
    snprintf(p, sizeof(p), "%s/sub", d);
    mkdir(p, 0755);
    put(d, "sub/a", "alpha");
    char h1[65], h2[65];
    hash(d, h1);
    hash(d, h2);
    assert_string_equal(h1, h2);

    /* mtimes do not matter */
    snprintf(p, sizeof(p), "%s/sub/a", d);
    struct utimbuf ut = {.actime = 12345, .modtime = 12345};
    utime(p, &ut);
    hash(d, h2);
    assert_string_equal(h1, h2);

    /* .git and a top-level result link are not inputs */
    snprintf(p, sizeof(p), "%s/.git", d);
    mkdir(p, 0755);
    put(d, ".git/HEAD", "ref: refs/heads/main\n");
    snprintf(p, sizeof(p), "%s/result", d);
    assert_int_equal(symlink("/nix/store/xyz-out", p), 0);
    hash(d, h2);
    assert_string_equal(h1, h2);

    /* content, mode, names, symlink targets do */
    put(d, "sub/a", "alphA");
    hash(d, h2);
    assert_string_not_equal(h1, h2);
    put(d, "sub/a", "alpha");
    hash(d, h2);
    assert_string_equal(h1, h2);
    snprintf(p, sizeof(p), "%s/sub/a", d);
    chmod(p, 0755);
    hash(d, h2);
    assert_string_not_equal(h1, h2);
    chmod(p, 0644);
    put(d, "sub/b", "");
    hash(d, h2);
    assert_string_not_equal(h1, h2);
    snprintf(p, sizeof(p), "%s/sub/b", d);
    unlink(p);
    snprintf(p, sizeof(p), "%s/sub/link", d);
    assert_int_equal(symlink("a", p), 0);
    hash(d, h2);
    assert_string_not_equal(h1, h2);
    mvm_rm_rf(d, NULL);

    mvm_error *e = NULL;
    assert_int_equal(build_source_hash("/nonexistent/flake", h1, &e), -1);
    assert_non_null(e);
    mvm_error_free(e);
}

static void test_last_lines(void **state) {
    (void)state;
    char out[256];
    const char *log = "building...\nerror: attribute 'nope' missing\n\n  at /src/flake.nix:3\n";
    build_last_lines(log, strlen(log), 2, out, sizeof(out));
    assert_string_equal(out, "error: attribute 'nope' missing |   at /src/flake.nix:3");
    build_last_lines("", 0, 3, out, sizeof(out));
    assert_string_equal(out, "");
    build_last_lines("one line\tno newline", 19, 3, out, sizeof(out));
    assert_string_equal(out, "one line no newline");
    /* long input: only its tail counts, output bounded */
    char big[10000];
    memset(big, 'x', sizeof(big));
    big[sizeof(big) - 6] = '\n';
    memcpy(big + sizeof(big) - 5, "last\n", 5);
    char small[16];
    build_last_lines(big, sizeof(big), 1, small, sizeof(small));
    assert_string_equal(small, "last");
    build_last_lines(big, sizeof(big), 2, small, sizeof(small));
    assert_true(strlen(small) < sizeof(small));
}

static void test_verify_extracted(void **state) {
    (void)state;
    _cleanup_free_ char *d = tmpdir();
    char p[512], list[600];
    snprintf(p, sizeof(p), "%s/rootfs", d);
    mkdir(p, 0755);
    put(d, "rootfs/hello", "hello\n");
    snprintf(list, sizeof(list), "%s/files.sha256", d);
    FILE *f = fopen(list, "w");
    /* sha256("hello\n") */
    fputs("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  ./rootfs/hello\n", f);
    fclose(f);
    mvm_error *e = NULL;
    assert_int_equal(build_verify_extracted(d, list, &e), 0);
    assert_null(e);

    put(d, "rootfs/hello", "hell"); /* truncated, as by a full disk */
    assert_int_equal(build_verify_extracted(d, list, &e), -1);
    assert_non_null(strstr(e->msg, "rootfs/hello"));
    mvm_error_free(e);
    e = NULL;

    snprintf(p, sizeof(p), "%s/rootfs/hello", d);
    unlink(p);
    assert_int_equal(build_verify_extracted(d, list, &e), -1);
    mvm_error_free(e);
    e = NULL;

    f = fopen(list, "w");
    fputs("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  ../../etc/passwd\n", f);
    fclose(f);
    assert_int_equal(build_verify_extracted(d, list, &e), -1);
    assert_non_null(strstr(e->msg, "escapes"));
    mvm_error_free(e);
    e = NULL;

    f = fopen(list, "w");
    fputs("garbage\n", f);
    fclose(f);
    assert_int_equal(build_verify_extracted(d, list, &e), -1);
    mvm_error_free(e);
    e = NULL;

    assert_int_equal(build_verify_extracted(d, "/nonexistent/list", &e), -1);
    mvm_error_free(e);
    mvm_rm_rf(d, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_hash),
        cmocka_unit_test(test_last_lines),
        cmocka_unit_test(test_verify_extracted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
