/* Unit tests for the flake.lock audit: pinned and unpinned inputs of every type, follows
 * resolution, nested input paths, cycles and malformed lock files. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mvm/build.h"
#include "mvm/error.h"

/* ---- helpers ---- */

#define NAR "\"narHash\": \"sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\""
#define REV "\"rev\": \"0123456789abcdef0123456789abcdef01234567\""

#define GITHUB_PINNED(repo)                                                                   \
    "{\"locked\": {\"lastModified\": 1700000000, " NAR ", \"owner\": \"o\", \"repo\": \"" repo \
    "\", " REV ", \"type\": \"github\"}, \"original\": {\"owner\": \"o\", \"repo\": \"" repo    \
    "\", \"type\": \"github\"}}"

/* A version 7 lock file with the given root inputs and extra nodes. */
#define LOCK(root_inputs, nodes)                                                              \
    "{\"nodes\": {\"root\": {\"inputs\": {" root_inputs "}}" nodes "}, \"root\": \"root\", "  \
    "\"version\": 7}"

struct result {
    int rc;
    struct mvm_lock_finding *f;
    size_t n;
    mvm_error *err;
};

static struct result audit(const char *js) {
    struct result r = {0};
    r.rc = mvm_flake_lock_audit(js, strlen(js), &r.f, &r.n, &r.err);
    return r;
}

static void result_free(struct result *r) {
    mvm_lock_findings_free(r->f, r->n);
    if (r->err)
        mvm_error_free(r->err);
}

static void expect_clean(const char *js) {
    struct result r = audit(js);
    if (r.err)
        fprintf(stderr, "unexpected error: %s\n", r.err->msg);
    for (size_t i = 0; i < r.n; i++)
        fprintf(stderr, "unexpected finding: %s: %s\n", r.f[i].input, r.f[i].problem);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.n, 0);
    assert_null(r.err);
    result_free(&r);
}

/* Exactly one finding, for input, whose problem contains needle. */
static void expect_one(const char *js, const char *input, const char *needle) {
    struct result r = audit(js);
    if (r.err)
        fprintf(stderr, "unexpected error: %s\n", r.err->msg);
    assert_int_equal(r.rc, 1);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.f[0].input, input);
    if (!strstr(r.f[0].problem, needle))
        fail_msg("problem '%s' lacks '%s'", r.f[0].problem, needle);
    assert_null(strchr(r.f[0].problem, '\n'));
    result_free(&r);
}

static void expect_error(const char *js, size_t len, const char *needle) {
    struct mvm_lock_finding *f = (void *)1;
    size_t n = 99;
    mvm_error *err = NULL;
    assert_int_equal(mvm_flake_lock_audit(js, len, &f, &n, &err), -1);
    assert_null(f);
    assert_int_equal(n, 0);
    assert_non_null(err);
    assert_int_equal(err->code, MVM_EINVAL);
    if (!strstr(err->msg, needle))
        fail_msg("error '%s' lacks '%s'", err->msg, needle);
    mvm_error_free(err);
}

/* ---- pinned and unpinned inputs ---- */

static void test_github_pinned(void **state) {
    (void)state;
    expect_clean(LOCK("\"nixpkgs\": \"nixpkgs\"", ", \"nixpkgs\": " GITHUB_PINNED("nixpkgs")));
}

static void test_github_branch_without_rev(void **state) {
    (void)state;
    expect_one(LOCK("\"nixpkgs\": \"nixpkgs\"",
                    ", \"nixpkgs\": {\"locked\": {" NAR ", \"owner\": \"NixOS\", \"repo\": "
                    "\"nixpkgs\", \"type\": \"github\"}, \"original\": {\"owner\": \"NixOS\", "
                    "\"ref\": \"main\", \"repo\": \"nixpkgs\", \"type\": \"github\"}}"),
               "nixpkgs", "follows branch 'main' without a pinned rev");
    /* no ref anywhere and no narHash either */
    expect_one(LOCK("\"src\": \"src\"",
                    ", \"src\": {\"locked\": {\"type\": \"git\", \"url\": \"https://x/y\"}}"),
               "src", "without a pinned rev; no narHash");
}

static void test_indirect(void **state) {
    (void)state;
    expect_one(LOCK("\"nixpkgs\": \"nixpkgs\"",
                    ", \"nixpkgs\": {\"locked\": {\"id\": \"nixpkgs\", \"type\": \"indirect\"}, "
                    "\"original\": {\"id\": \"nixpkgs\", \"type\": \"indirect\"}}"),
               "nixpkgs", "indirect (registry) reference 'flake:nixpkgs'");
}

static void test_missing_nar_hash(void **state) {
    (void)state;
    expect_one(LOCK("\"utils\": \"utils\"",
                    ", \"utils\": {\"locked\": {\"owner\": \"o\", \"repo\": \"u\", " REV
                    ", \"type\": \"github\"}, \"original\": {\"owner\": \"o\", \"repo\": \"u\", "
                    "\"type\": \"github\"}}"),
               "utils", "has no narHash");
    expect_one(LOCK("\"t\": \"t\"",
                    ", \"t\": {\"locked\": {\"type\": \"tarball\", \"url\": "
                    "\"https://example.org/a.tar.gz\"}}"),
               "t", "url 'https://example.org/a.tar.gz') has no narHash");
    expect_clean(LOCK("\"t\": \"t\"", ", \"t\": {\"locked\": {" NAR ", \"type\": \"file\", "
                                      "\"url\": \"https://example.org/a\"}}"));
}

static void test_unlocked_and_unknown_type(void **state) {
    (void)state;
    expect_one(LOCK("\"x\": \"x\"", ", \"x\": {\"original\": {\"type\": \"github\"}}"), "x",
               "unlocked input");
    expect_one(LOCK("\"x\": \"x\"", ", \"x\": {\"locked\": {" NAR ", \"type\": \"svn\"}}"), "x",
               "unknown input type 'svn'");
}

static void test_path_input(void **state) {
    (void)state;
    expect_one(LOCK("\"local\": \"local\"",
                    ", \"local\": {\"locked\": {\"path\": \"/home/u/src\", \"type\": \"path\"}, "
                    "\"original\": {\"path\": \"/home/u/src\", \"type\": \"path\"}}"),
               "local", "path input (local path '/home/u/src'): not reproducible");
    expect_clean(LOCK("\"local\": \"local\"",
                      ", \"local\": {\"locked\": {\"lastModified\": 1, " NAR
                      ", \"path\": \"/home/u/src\", \"type\": \"path\"}}"));
}

/* ---- graph walking ---- */

static void test_follows_resolved(void **state) {
    (void)state;
    /* microvm's nixpkgs follows the root's nixpkgs: audited once, under "nixpkgs" */
    const char *js = LOCK("\"microvm\": \"microvm\", \"nixpkgs\": \"nixpkgs\"",
                          ", \"microvm\": {\"inputs\": {\"nixpkgs\": [\"nixpkgs\"]}, "
                          "\"locked\": {" NAR ", " REV ", \"type\": \"github\"}}"
                          ", \"nixpkgs\": {\"locked\": {\"type\": \"indirect\", \"id\": \"n\"}}");
    expect_one(js, "nixpkgs", "indirect");
    /* a follows chain through another follows */
    expect_clean(LOCK("\"a\": \"a\", \"b\": [\"a\", \"c\"], \"d\": [\"b\"]",
                      ", \"a\": {\"inputs\": {\"c\": \"c\"}, \"locked\": {" NAR ", " REV
                      ", \"type\": \"git\"}}, \"c\": " GITHUB_PINNED("c")));
}

static void test_follows_dangling(void **state) {
    (void)state;
    expect_one(LOCK("\"microvm\": \"microvm\"",
                    ", \"microvm\": {\"inputs\": {\"nixpkgs\": [\"nixpkgs\"]}, "
                    "\"locked\": {" NAR ", " REV ", \"type\": \"github\"}}"),
               "microvm/nixpkgs", "follows 'nixpkgs', which does not resolve");
    expect_one(LOCK("\"a\": \"gone\"", ""), "a", "lock node 'gone', which does not exist");
}

static void test_nested_paths_sorted(void **state) {
    (void)state;
    const char *js = LOCK(
        "\"zz\": \"zz\", \"microvm\": \"microvm\"",
        ", \"microvm\": {\"inputs\": {\"nixpkgs\": \"nixpkgs_2\", \"utils\": \"utils\"}, "
        "\"locked\": {" NAR ", " REV ", \"type\": \"github\"}}"
        ", \"nixpkgs_2\": {\"locked\": {" NAR ", \"type\": \"github\", \"owner\": \"NixOS\"}, "
        "\"original\": {\"ref\": \"refs/heads/nixos-unstable\", \"type\": \"github\"}}"
        ", \"utils\": {\"inputs\": {\"systems\": \"systems\"}, \"locked\": {" NAR ", " REV
        ", \"type\": \"github\"}}"
        ", \"systems\": {\"locked\": {\"type\": \"path\", \"path\": \"/s\"}}"
        ", \"zz\": {\"locked\": {\"type\": \"indirect\", \"id\": \"zz\"}}");
    struct result r = audit(js);
    assert_null(r.err);
    assert_int_equal(r.rc, 3);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.f[0].input, "microvm/nixpkgs");
    assert_string_equal(r.f[0].problem, "follows branch 'nixos-unstable' without a pinned rev");
    assert_string_equal(r.f[1].input, "microvm/utils/systems");
    assert_string_equal(r.f[2].input, "zz");
    result_free(&r);
}

static void test_cycle(void **state) {
    (void)state;
    /* node cycle a -> b -> a (and back to the root): each node audited once */
    expect_one(LOCK("\"a\": \"a\"",
                    ", \"a\": {\"inputs\": {\"b\": \"b\"}, \"locked\": {" NAR ", " REV
                    ", \"type\": \"github\"}}, \"b\": {\"inputs\": {\"a\": \"a\", \"top\": "
                    "\"root\"}, \"locked\": {\"type\": \"indirect\", \"id\": \"b\"}}"),
               "a/b", "indirect");
    /* follows cycles: x follows y, y follows x; and a self-referencing follows */
    struct result r = audit(LOCK("\"x\": [\"y\"], \"y\": [\"x\"], \"z\": [\"z\", \"q\"]", ""));
    assert_null(r.err);
    assert_int_equal(r.rc, 3);
    assert_string_equal(r.f[0].input, "x");
    assert_non_null(strstr(r.f[0].problem, "cycle"));
    assert_string_equal(r.f[1].input, "y");
    assert_string_equal(r.f[2].input, "z");
    assert_non_null(strstr(r.f[2].problem, "follows 'z/q'"));
    result_free(&r);
}

/* ---- malformed lock files ---- */

static void test_malformed_json(void **state) {
    (void)state;
    const char *bad = "{\"nodes\": {\"root\": {}}, \"root\": \"root\", \"version\": 7";
    expect_error(bad, strlen(bad), "invalid JSON");
    expect_error("", 0, "invalid JSON");
    expect_error("[1, 2]", 6, "not an object");
    const char nul[] = "{\"version\": 7}\0xx";
    expect_error(nul, sizeof(nul) - 1, "invalid JSON");
    const char *no_nodes = "{\"root\": \"root\", \"version\": 7}";
    expect_error(no_nodes, strlen(no_nodes), "no 'nodes'");
    const char *bad_input = LOCK("\"a\": 5", "");
    expect_error(bad_input, strlen(bad_input), "neither a node name nor a follows path");
    const char *bad_node = LOCK("", ", \"a\": 1");
    expect_error(bad_node, strlen(bad_node), "node 'a' is not an object");
}

static void test_wrong_root(void **state) {
    (void)state;
    const char *js = "{\"nodes\": {\"root\": {}}, \"root\": \"main\", \"version\": 7}";
    expect_error(js, strlen(js), "root node 'main'");
    js = "{\"nodes\": {\"root\": {}}, \"version\": 7}";
    expect_error(js, strlen(js), "no 'root'");
}

static void test_version(void **state) {
    (void)state;
    const char *js = "{\"nodes\": {\"root\": {}}, \"root\": \"root\", \"version\": 99}";
    expect_error(js, strlen(js), "unsupported version 99");
    js = "{\"nodes\": {\"root\": {}}, \"root\": \"root\"}";
    expect_error(js, strlen(js), "version");
    expect_clean("{\"nodes\": {\"root\": {}}, \"root\": \"root\", \"version\": 5}");
    expect_clean("{\"nodes\": {\"root\": {}}, \"root\": \"root\", \"version\": 6}");
}

static void test_empty_nodes(void **state) {
    (void)state;
    const char *js = "{\"nodes\": {}, \"root\": \"root\", \"version\": 7}";
    expect_error(js, strlen(js), "root node 'root'");
    /* only the root, no inputs: nothing to report */
    expect_clean("{\"nodes\": {\"root\": {}}, \"root\": \"root\", \"version\": 7}");
}

static void test_too_large(void **state) {
    (void)state;
    expect_error("{}", (size_t)64 << 20, "too large");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_github_pinned),
        cmocka_unit_test(test_github_branch_without_rev),
        cmocka_unit_test(test_indirect),
        cmocka_unit_test(test_missing_nar_hash),
        cmocka_unit_test(test_unlocked_and_unknown_type),
        cmocka_unit_test(test_path_input),
        cmocka_unit_test(test_follows_resolved),
        cmocka_unit_test(test_follows_dangling),
        cmocka_unit_test(test_nested_paths_sorted),
        cmocka_unit_test(test_cycle),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_wrong_root),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_empty_nodes),
        cmocka_unit_test(test_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
