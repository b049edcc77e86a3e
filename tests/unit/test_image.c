/* Unit tests for the image subsystem: manifest, references, module order, cpio writer,
 * cache publication, hash-on-load verification, list and remove. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/image-internal.h"
#include "mvm/image.h"
#include "mvm/paths.h"

/* ---- helpers ---- */

static char *xstrdup(const char *s) {
    char *r = strdup(s);
    assert_non_null(r);
    return r;
}

static void sample_manifest(struct mvm_manifest *m) {
    memset(m, 0, sizeof(*m));
    m->schema = 1;
    m->name = xstrdup("default");
    m->created = xstrdup("2024-01-02T03:04:05Z");
    m->cmdline = xstrdup("console=ttyS0 quiet");
    m->source_kind = xstrdup("recipe");
    m->source_ref = xstrdup("default");
    m->kernel_version = xstrdup("6.1.0-57-cloud-amd64");
    m->n_artifacts = 2;
    m->artifacts = calloc(2, sizeof(*m->artifacts));
    assert_non_null(m->artifacts);
    m->artifacts[0] = (struct mvm_artifact){xstrdup("kernel"), xstrdup("vmlinux"),
                                            xstrdup("elf-vmlinux"),
                                            xstrdup("00112233445566778899aabbccddeeff"
                                                    "00112233445566778899aabbccddeeff"),
                                            1234};
    m->artifacts[1] = (struct mvm_artifact){xstrdup("rootfs"), xstrdup("rootfs.ext4"),
                                            xstrdup("ext4"),
                                            xstrdup("ffeeddccbbaa99887766554433221100"
                                                    "ffeeddccbbaa99887766554433221100"),
                                            67108864};
}

static char *sample_json(void) {
    struct mvm_manifest m;
    sample_manifest(&m);
    char *js = NULL;
    size_t len;
    mvm_error *err = NULL;
    assert_int_equal(mvm_manifest_to_json(&m, &js, &len, &err), 0);
    mvm_manifest_free(&m);
    return js;
}

/* Replaces the first occurrence of from with to in a malloc'd string. */
static char *replace(const char *s, const char *from, const char *to) {
    const char *p = strstr(s, from);
    assert_non_null(p);
    char *r = NULL;
    assert_true(asprintf(&r, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from)) >= 0);
    return r;
}

static void expect_parse_fail(const char *js, const char *needle) {
    struct mvm_manifest m;
    mvm_error *err = NULL;
    assert_int_equal(mvm_manifest_from_json(js, strlen(js), &m, &err), -1);
    assert_non_null(err);
    if (!strstr(err->msg, needle))
        fail_msg("error '%s' lacks '%s'", err->msg, needle);
    mvm_error_free(err);
}

/* ---- manifest ---- */

static void test_manifest_roundtrip(void **state) {
    (void)state;
    char *js = sample_json();
    size_t len = strlen(js);
    assert_true(len > 0 && js[len - 1] == '\n');
    /* keys are sorted: "artifacts" comes first */
    assert_non_null(strstr(js, "{\n  \"artifacts\""));
    struct mvm_manifest m;
    mvm_error *err = NULL;
    assert_int_equal(mvm_manifest_from_json(js, len, &m, &err), 0);
    assert_int_equal(m.schema, 1);
    assert_string_equal(m.name, "default");
    assert_string_equal(m.source_kind, "recipe");
    assert_string_equal(m.kernel_version, "6.1.0-57-cloud-amd64");
    assert_int_equal(m.n_artifacts, 2);
    const struct mvm_artifact *a = mvm_manifest_find(&m, "rootfs");
    assert_non_null(a);
    assert_string_equal(a->file, "rootfs.ext4");
    assert_int_equal(a->size, 67108864);
    assert_null(mvm_manifest_find(&m, "initrd"));
    char *js2 = NULL;
    size_t len2;
    assert_int_equal(mvm_manifest_to_json(&m, &js2, &len2, &err), 0);
    assert_int_equal(len, len2);
    assert_string_equal(js, js2); /* canonical: byte-identical */
    free(js2);
    free(js);
    mvm_manifest_free(&m);
}

static void test_manifest_rejects(void **state) {
    (void)state;
    char *js = sample_json();
    char *bad;

    bad = replace(js, "\"created\": \"2024-01-02T03:04:05Z\",", "");
    expect_parse_fail(bad, "missing field 'created'");
    free(bad);

    bad = replace(js, "00112233445566778899aabbccddeeff00", "0011223344556677889XYZbccddeeff00");
    expect_parse_fail(bad, "sha256");
    free(bad);

    bad = replace(js, "00112233445566778899aabbccddeeff00", "00112233445566778899AABBCCDDEEFF00");
    expect_parse_fail(bad, "sha256");
    free(bad);

    bad = replace(js, "00112233445566778899aabbccddeeff00", "0");
    expect_parse_fail(bad, "sha256");
    free(bad);

    bad = replace(js, "\"vmlinux\"", "\"../vmlinux\"");
    expect_parse_fail(bad, "invalid file name");
    free(bad);

    bad = replace(js, "\"vmlinux\"", "\"boot/vmlinux\"");
    expect_parse_fail(bad, "invalid file name");
    free(bad);

    bad = replace(js, "\"schema\": 1", "\"schema\": 2");
    expect_parse_fail(bad, "unsupported schema");
    free(bad);

    bad = replace(js, "\"schema\": 1", "\"schema\": \"1\"");
    expect_parse_fail(bad, "unsupported schema");
    free(bad);

    bad = replace(js, "\"schema\": 1", "\"schema\": 1, \"extra\": true");
    expect_parse_fail(bad, "unknown field 'extra'");
    free(bad);

    bad = replace(js, "\"size\": 1234", "\"size\": -1");
    expect_parse_fail(bad, "size");
    free(bad);

    bad = replace(js, "\"rootfs.ext4\"", "\"vmlinux\"");
    expect_parse_fail(bad, "duplicate artifact");
    free(bad);

    bad = replace(js, "\"kind\": \"recipe\"", "\"kind\": \"oci\"");
    expect_parse_fail(bad, "source kind");
    free(bad);

    expect_parse_fail("[]", "object");
    expect_parse_fail("{\"schema\": 1", "invalid JSON");
    free(js);
}

/* ---- references ---- */

static void expect_ref(const char *ref, bool ok) {
    mvm_error *err = NULL;
    int r = mvm_image_ref_validate(ref, &err);
    if (ok) {
        if (r != 0)
            fail_msg("'%s' rejected: %s", ref, err ? err->msg : "?");
    } else {
        if (r != -1)
            fail_msg("'%s' accepted", ref);
        assert_int_equal(err->code, MVM_EINVAL);
        mvm_error_free(err);
    }
}

/* ---- manifest provenance (flake / builder images) ---- */

#define HEX_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX_B "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static char *provenance_json(void) {
    struct mvm_manifest m;
    sample_manifest(&m);
    free(m.source_kind);
    free(m.source_ref);
    m.source_kind = xstrdup("builder");
    m.source_ref = xstrdup("nix-bin");
    m.source_lock_sha256 = xstrdup(HEX_A);
    m.source_profile = xstrdup("alt");
    m.source_nix_version = xstrdup("nix (Nix) 2.8.0");
    m.source_builder_digest = xstrdup(HEX_B);
    m.source_build_key = xstrdup(HEX_A);
    m.n_packages = 2;
    m.packages = calloc(2, sizeof(*m.packages));
    assert_non_null(m.packages);
    m.packages[0] = (struct mvm_package){xstrdup("nix-bin"), xstrdup("2.8.0-1.1+b1"),
                                         xstrdup(HEX_B)};
    m.packages[1] = (struct mvm_package){xstrdup("zlib1g"), xstrdup("1:1.2.13.dfsg-1"),
                                         xstrdup(HEX_A)};
    char *js = NULL;
    size_t len;
    mvm_error *err = NULL;
    assert_int_equal(mvm_manifest_to_json(&m, &js, &len, &err), 0);
    mvm_manifest_free(&m);
    assert_null(m.packages);
    return js;
}

static void test_manifest_provenance(void **state) {
    (void)state;
    /* without provenance nothing new is written */
    char *plain = sample_json();
    static const char *const keys[] = {"lock_sha256", "profile", "nix_version",
                                       "builder_digest", "build_key", "packages"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_null(strstr(plain, keys[i]));
    free(plain);

    char *js = provenance_json();
    size_t len = strlen(js);
    assert_non_null(strstr(js, "\"packages\": ["));
    assert_non_null(strstr(js, "\"kind\": \"builder\""));
    struct mvm_manifest m;
    mvm_error *err = NULL;
    assert_int_equal(mvm_manifest_from_json(js, len, &m, &err), 0);
    assert_string_equal(m.source_kind, "builder");
    assert_string_equal(m.source_lock_sha256, HEX_A);
    assert_string_equal(m.source_profile, "alt");
    assert_string_equal(m.source_nix_version, "nix (Nix) 2.8.0");
    assert_string_equal(m.source_builder_digest, HEX_B);
    assert_string_equal(m.source_build_key, HEX_A);
    assert_int_equal(m.n_packages, 2);
    assert_string_equal(m.packages[0].name, "nix-bin");
    assert_string_equal(m.packages[1].version, "1:1.2.13.dfsg-1");
    assert_string_equal(m.packages[1].sha256, HEX_A);
    char *js2 = NULL;
    size_t len2;
    assert_int_equal(mvm_manifest_to_json(&m, &js2, &len2, &err), 0);
    assert_int_equal(len, len2);
    assert_string_equal(js, js2);
    free(js2);
    mvm_manifest_free(&m);

    /* a subset of the optional fields round-trips too */
    char *part = replace(js, "\"profile\": \"alt\",", "");
    assert_int_equal(mvm_manifest_from_json(part, strlen(part), &m, &err), 0);
    assert_null(m.source_profile);
    assert_non_null(m.source_nix_version);
    assert_int_equal(mvm_manifest_to_json(&m, &js2, &len2, &err), 0);
    assert_null(strstr(js2, "profile"));
    free(js2);
    mvm_manifest_free(&m);
    free(part);
    free(js);
}

static void test_manifest_provenance_rejects(void **state) {
    (void)state;
    char *js = provenance_json();
    char *bad;

    bad = replace(js, "\"lock_sha256\": \"0123", "\"lock_sha256\": \"0G23");
    expect_parse_fail(bad, "source.lock_sha256 must be 64 lowercase hex");
    free(bad);

    bad = replace(js, "\"builder_digest\": \"aaaa", "\"builder_digest\": \"AAAA");
    expect_parse_fail(bad, "source.builder_digest");
    free(bad);

    bad = replace(js, "\"build_key\": \"0123456789", "\"build_key\": \"");
    expect_parse_fail(bad, "source.build_key");
    free(bad);

    bad = replace(js, "\"profile\": \"alt\"", "\"profile\": \"\"");
    expect_parse_fail(bad, "field 'profile' in source is empty");
    free(bad);

    bad = replace(js, "\"nix_version\": \"nix (Nix) 2.8.0\"", "\"nix_version\": 28");
    expect_parse_fail(bad, "field 'nix_version' in source must be a string");
    free(bad);

    bad = replace(js, "\"name\": \"nix-bin\"", "\"name\": \"\"");
    expect_parse_fail(bad, "field 'name' in source.packages[0] is empty");
    free(bad);

    bad = replace(js, "\"version\": \"1:1.2.13.dfsg-1\"", "\"version\": null");
    expect_parse_fail(bad, "field 'version' in source.packages[1] must be a string");
    free(bad);

    bad = replace(js, "\"name\": \"nix-bin\",", "");
    expect_parse_fail(bad, "missing field 'name' in source.packages[0]");
    free(bad);

    bad = replace(js, "\"name\": \"nix-bin\",", "\"arch\": \"amd64\", \"name\": \"nix-bin\",");
    expect_parse_fail(bad, "unknown field 'arch' in source.packages[0]");
    free(bad);

    bad = replace(js, "\"sha256\": \"aaaaaaaa", "\"sha256\": \"aaaaaaa");
    expect_parse_fail(bad, "source.packages[0] (nix-bin): sha256");
    free(bad);

    bad = replace(js, "\"profile\": \"alt\"", "\"profile\": \"alt\", \"extra\": 1");
    expect_parse_fail(bad, "unknown field 'extra' in source");
    free(bad);

    bad = replace(js, "\"kind\": \"builder\"", "\"kind\": \"nix\"");
    expect_parse_fail(bad, "unknown source kind 'nix'");
    free(bad);

    /* packages must be a non-empty array of objects */
    const char *p0 = strstr(js, "\"packages\": [");
    const char *p1 = strstr(p0, "]");
    char *head = NULL;
    assert_true(asprintf(&head, "%.*s\"packages\": []%s", (int)(p0 - js), js, p1 + 1) >= 0);
    expect_parse_fail(head, "source.packages must be a non-empty array");
    free(head);
    assert_true(asprintf(&head, "%.*s\"packages\": [\"x\"]%s", (int)(p0 - js), js, p1 + 1) >= 0);
    expect_parse_fail(head, "source.packages[0] must be an object");
    free(head);
    assert_true(asprintf(&head, "%.*s\"packages\": {}%s", (int)(p0 - js), js, p1 + 1) >= 0);
    expect_parse_fail(head, "source.packages must be a non-empty array");
    free(head);
    free(js);
}

static void test_ref_validate(void **state) {
    (void)state;
    char long64[65], long65[66];
    memset(long64, 'a', 64);
    long64[64] = '\0';
    memset(long65, 'a', 65);
    long65[65] = '\0';
    expect_ref("default", true);
    expect_ref("my-image_1.2", true);
    expect_ref("A", true);
    expect_ref(long64, true);
    expect_ref("sha256:0123456789ab", true);
    expect_ref("0123456789ab", true);
    expect_ref("sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", true);
    expect_ref("a/b", false);
    expect_ref("", false);
    expect_ref(long65, false);
    expect_ref("..", false);
    expect_ref(".hidden", false);
    expect_ref("-x", false);
    expect_ref("a b", false);
    expect_ref("sha256:0123", false);
    expect_ref("sha256:0123456789AB", false);
    expect_ref("sha256:", false);

    mvm_error *err = NULL;
    assert_int_equal(mvm_image_ref_validate("a/b", &err), -1);
    assert_non_null(strstr(err->msg, "invalid image name 'a/b'"));
    mvm_error_free(err);
}

/* ---- module order ---- */

static char *order_str(const struct image_module *mods, size_t n, const char *const *wanted,
                       size_t nw, mvm_error **err) {
    size_t *order = NULL, no = 0;
    if (image_modules_order(mods, n, wanted, nw, &order, &no, err) < 0)
        return NULL;
    char buf[512] = "";
    for (size_t i = 0; i < no; i++) {
        if (i)
            strcat(buf, " ");
        strcat(buf, mods[order[i]].name);
    }
    free(order);
    return xstrdup(buf);
}

static void test_modules_chain_diamond(void **state) {
    (void)state;
    mvm_error *err = NULL;
    const struct image_module chain[] = {
        {"a", "b"}, {"b", "c"}, {"c", ""}, {"unused", "a"}};
    const char *const w1[] = {"a"};
    char *s = order_str(chain, 4, w1, 1, &err);
    assert_non_null(s);
    assert_string_equal(s, "c b a");
    free(s);

    const struct image_module diamond[] = {{"top", "left,right"}, {"left", "base"},
                                           {"right", "base"}, {"base", NULL}};
    const char *const w2[] = {"top", "base"};
    s = order_str(diamond, 4, w2, 2, &err);
    assert_non_null(s);
    assert_string_equal(s, "base left right top");
    free(s);

    /* the real Debian layout */
    const struct image_module deb[] = {
        {"virtio_mmio", "virtio,virtio_ring"}, {"virtio", "virtio_ring"}, {"virtio_ring", ""},
        {"virtio_blk", "virtio,virtio_ring"},  {"dm_verity", "reed_solomon,dm-mod,dm-bufio"},
        {"dm_bufio", "dm-mod"},               {"dm_mod", ""},               {"reed_solomon", ""}};
    const char *const w3[] = {"virtio_mmio", "virtio_blk", "dm-verity"};
    s = order_str(deb, 8, w3, 3, &err);
    assert_non_null(s);
    assert_string_equal(s, "virtio_ring virtio virtio_mmio virtio_blk reed_solomon dm_mod "
                           "dm_bufio dm_verity");
    free(s);
    assert_true(image_modname_eq("dm-mod", "dm_mod"));
    assert_false(image_modname_eq("dm-mod", "dm_mo"));
}

static void test_modules_errors(void **state) {
    (void)state;
    mvm_error *err = NULL;
    const struct image_module missing[] = {{"a", "b,ghost"}, {"b", ""}};
    const char *const w[] = {"a"};
    assert_null(order_str(missing, 2, w, 1, &err));
    assert_non_null(strstr(err->msg, "'ghost' (needed by 'a') not found"));
    mvm_error_free(err);
    err = NULL;

    const char *const w_unknown[] = {"nope"};
    assert_null(order_str(missing, 2, w_unknown, 1, &err));
    assert_non_null(strstr(err->msg, "'nope' not found"));
    mvm_error_free(err);
    err = NULL;

    const struct image_module cycle[] = {{"a", "b"}, {"b", "c"}, {"c", "a"}};
    assert_null(order_str(cycle, 3, w, 1, &err));
    assert_non_null(strstr(err->msg, "cycle: a -> b -> c -> a"));
    mvm_error_free(err);
    err = NULL;

    const struct image_module self[] = {{"a", "a"}};
    assert_null(order_str(self, 1, w, 1, &err));
    assert_non_null(strstr(err->msg, "cycle"));
    mvm_error_free(err);
}

static void test_modinfo(void **state) {
    (void)state;
    static const char blob[] = "junk\0license=GPL\0depends=virtio,virtio_ring\0name=virtio_mmio"
                               "\0vermagic=6.1\0";
    char *d = image_modinfo_get(blob, sizeof(blob), "depends");
    assert_non_null(d);
    assert_string_equal(d, "virtio,virtio_ring");
    free(d);
    char *n = image_modinfo_get(blob, sizeof(blob), "name");
    assert_string_equal(n, "virtio_mmio");
    free(n);
    static const char nodeps[] = "x\0depends=\0name=vsock\0";
    d = image_modinfo_get(nodeps, sizeof(nodeps), "depends");
    assert_string_equal(d, "");
    free(d);
    /* "xdepends=" is not an entry */
    static const char tricky[] = "xdepends=a\0";
    assert_null(image_modinfo_get(tricky, sizeof(tricky), "depends"));
}

/* ---- cpio ---- */

static unsigned long hexfield(const char *h, int idx) {
    char buf[9];
    memcpy(buf, h + 6 + idx * 8, 8);
    buf[8] = '\0';
    return strtoul(buf, NULL, 16);
}

static void test_cpio_writer(void **state) {
    (void)state;
    char tmpl[] = "/tmp/mvm-test-cpio-XXXXXX";
    int src = mkstemp(tmpl);
    assert_true(src >= 0);
    assert_int_equal(write(src, "#!/bin/sh\n", 10), 10);
    close(src);
    int fd = memfd_create("cpio", MFD_CLOEXEC);
    assert_true(fd >= 0);
    struct image_cpio_entry e[] = {
        {.name = "lib/modules/load.order", .mode = S_IFREG | 0644, .data = "a.ko\n", .size = 5},
        {.name = "init", .mode = S_IFREG | 0755, .src_path = tmpl},
        {.name = "dev", .mode = S_IFDIR | 0755},
        {.name = "dev/console", .mode = S_IFCHR | 0600, .rmajor = 5, .rminor = 1},
        {.name = "lib", .mode = S_IFDIR | 0755},
        {.name = "lib/modules", .mode = S_IFDIR | 0755},
    };
    mvm_error *err = NULL;
    assert_int_equal(image_cpio_write(fd, e, 6, 0, &err), 0);
    unlink(tmpl);
    off_t end = lseek(fd, 0, SEEK_END);
    char *buf = malloc((size_t)end);
    assert_int_equal(pread(fd, buf, (size_t)end, 0), end);
    close(fd);

    static const char *const names[] = {"dev",  "dev/console", "init", "lib",
                                        "lib/modules", "lib/modules/load.order", "TRAILER!!!"};
    size_t off = 0;
    for (size_t i = 0; i < 7; i++) {
        assert_true(off + 110 <= (size_t)end);
        const char *h = buf + off;
        assert_memory_equal(h, "070701", 6);
        unsigned long ino = hexfield(h, 0), mode = hexfield(h, 1), uid = hexfield(h, 2),
                      mtime = hexfield(h, 5), fsize = hexfield(h, 6), rmaj = hexfield(h, 9),
                      rmin = hexfield(h, 10), namesize = hexfield(h, 11);
        assert_int_equal(uid, 0);
        assert_int_equal(mtime, 0);
        assert_int_equal(namesize, strlen(names[i]) + 1);
        assert_string_equal(h + 110, names[i]);
        assert_int_equal(ino, i < 6 ? i + 1 : 0);
        off += 110 + namesize;
        /* header + name are padded to a multiple of 4 with zeros */
        while (off % 4) {
            assert_int_equal(buf[off], 0);
            off++;
        }
        if (!strcmp(names[i], "init")) {
            assert_int_equal(mode, S_IFREG | 0755);
            assert_int_equal(fsize, 10);
            assert_memory_equal(buf + off, "#!/bin/sh\n", 10);
        } else if (!strcmp(names[i], "dev/console")) {
            assert_int_equal(mode, S_IFCHR | 0600);
            assert_int_equal(rmaj, 5);
            assert_int_equal(rmin, 1);
            assert_int_equal(fsize, 0);
        } else if (!strcmp(names[i], "lib/modules/load.order")) {
            assert_int_equal(fsize, 5);
            assert_memory_equal(buf + off, "a.ko\n", 5);
        } else if (i < 6) {
            assert_int_equal(mode & S_IFMT, S_IFDIR);
        }
        off += fsize;
        /* data is padded to 4 with zeros */
        while (off % 4) {
            assert_int_equal(buf[off], 0);
            off++;
        }
    }
    assert_int_equal(off, (size_t)end);
    free(buf);

    /* duplicate names are refused */
    fd = memfd_create("cpio2", MFD_CLOEXEC);
    struct image_cpio_entry dup[] = {{.name = "a", .mode = S_IFDIR | 0755},
                                     {.name = "a", .mode = S_IFDIR | 0755}};
    assert_int_equal(image_cpio_write(fd, dup, 2, 0, &err), -1);
    mvm_error_free(err);
    close(fd);
}

/* ---- cache: publish, resolve, verify, list, remove ---- */

static char *cache_dir;

static int cache_setup(void **state) {
    (void)state;
    char tmpl[] = "/tmp/mvm-test-cache-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    cache_dir = strdup(tmpl);
    setenv("MVM_CACHE_DIR", cache_dir, 1);
    return 0;
}

static int cache_teardown(void **state) {
    (void)state;
    mvm_error *err = NULL;
    mvm_rm_rf(cache_dir, &err);
    mvm_error_free(err);
    free(cache_dir);
    unsetenv("MVM_CACHE_DIR");
    return 0;
}

static void write_file(const char *dir, const char *name, const char *content) {
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) >= 0);
    mvm_error *err = NULL;
    assert_int_equal(mvm_write_file_atomic(p, content, strlen(content), 0644, &err), 0);
    free(p);
}

/* Builds a small fake image in <cache>/tmp and publishes it under tag; returns digest. */
static char *make_fake_image(const char *tag, const char *kernel_text) {
    mvm_error *err = NULL;
    char *cache = image_cache_prepare(&err);
    assert_non_null(cache);
    char *dir = NULL;
    assert_true(asprintf(&dir, "%s/tmp/build-XXXXXX", cache) >= 0);
    assert_non_null(mkdtemp(dir));
    write_file(dir, "vmlinux", kernel_text);
    write_file(dir, "rootfs.ext4", "root filesystem bytes");
    char *raw = NULL, *ext4 = NULL;
    assert_true(asprintf(&raw, "%s/rootfs.raw", dir) >= 0);
    assert_true(asprintf(&ext4, "%s/rootfs.ext4", dir) >= 0);
    assert_int_equal(link(ext4, raw), 0);
    struct mvm_manifest m = {.schema = 1};
    m.name = xstrdup(tag ? tag : "untagged");
    m.created = image_created_now();
    m.cmdline = xstrdup("console=ttyS0");
    m.source_kind = xstrdup("recipe");
    m.source_ref = xstrdup("test");
    m.kernel_version = xstrdup("0.0");
    m.artifacts = calloc(2, sizeof(*m.artifacts));
    assert_int_equal(image_artifact_fill(&m.artifacts[0], dir, "kernel", "vmlinux",
                                         "elf-vmlinux", &err), 0);
    assert_int_equal(image_artifact_fill(&m.artifacts[1], dir, "rootfs", "rootfs.ext4", "ext4",
                                         &err), 0);
    m.n_artifacts = 2;
    char *digest = NULL;
    assert_int_equal(image_publish(dir, &m, tag, &digest, &err), 0);
    assert_int_equal(strlen(digest), 64);
    assert_int_equal(access(dir, F_OK), -1); /* moved into place or dropped */
    mvm_manifest_free(&m);
    free(raw);
    free(ext4);
    free(dir);
    free(cache);
    return digest;
}

static char *img_file(const mvm_image *img, const char *name) {
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", img->dir, name) >= 0);
    return p;
}

static void expect_verify_fail(const mvm_image *img, const char *needle) {
    mvm_error *err = NULL;
    assert_int_equal(mvm_image_verify(img, &err), -1);
    assert_int_equal(err->code, MVM_EINTEGRITY);
    if (!strstr(err->msg, needle))
        fail_msg("error '%s' lacks '%s'", err->msg, needle);
    assert_non_null(strstr(err->msg, "refusing to boot"));
    mvm_error_free(err);
}

static void test_verify(void **state) {
    (void)state;
    char *digest = make_fake_image("verifyme", "kernel bytes v1");
    mvm_image *img = NULL;
    mvm_error *err = NULL;
    assert_int_equal(mvm_image_resolve("verifyme", &img, &err), 0);
    assert_string_equal(img->digest, digest);
    assert_int_equal(mvm_image_verify(img, &err), 0);
    char *kp = mvm_image_artifact_path(img, "kernel");
    assert_non_null(strstr(kp, "/vmlinux"));
    free(kp);
    assert_null(mvm_image_artifact_path(img, "initrd"));

    /* flipped byte, same size */
    char *rootfs = img_file(img, "rootfs.ext4");
    char *orig = NULL;
    size_t olen = 0;
    assert_int_equal(mvm_read_file(rootfs, 4096, &orig, &olen, &err), 0);
    assert_int_equal(chmod(rootfs, 0644), 0); /* artifacts are published read-only */
    char *tampered = strdup(orig);
    tampered[3] ^= 0x01;
    int fd = open(rootfs, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, tampered, olen, 0), (ssize_t)olen);
    close(fd);
    expect_verify_fail(img, "image verifyme: rootfs.ext4: SHA-256 mismatch (expected ");

    /* size change */
    fd = open(rootfs, O_WRONLY | O_APPEND | O_CLOEXEC);
    assert_int_equal(pwrite(fd, orig, olen, 0), (ssize_t)olen);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
    expect_verify_fail(img, "rootfs.ext4: size mismatch");

    /* restore: verifies again */
    fd = open(rootfs, O_WRONLY | O_TRUNC | O_CLOEXEC);
    assert_int_equal(write(fd, orig, olen), (ssize_t)olen);
    close(fd);
    assert_int_equal(mvm_image_verify(img, &err), 0);

    /* rootfs.raw must stay a hard link of rootfs.ext4 */
    char *raw = img_file(img, "rootfs.raw");
    assert_int_equal(unlink(raw), 0);
    write_file(img->dir, "rootfs.raw", orig);
    expect_verify_fail(img, "rootfs.raw");
    assert_int_equal(unlink(raw), 0);
    assert_int_equal(link(rootfs, raw), 0);
    assert_int_equal(mvm_image_verify(img, &err), 0);

    /* missing artifact */
    char *kern = img_file(img, "vmlinux");
    char *saved = NULL;
    assert_true(asprintf(&saved, "%s.saved", kern) >= 0);
    assert_int_equal(rename(kern, saved), 0);
    expect_verify_fail(img, "vmlinux: cannot open");
    assert_int_equal(rename(saved, kern), 0);

    /* edited manifest: digest no longer matches */
    char *mpath = img_file(img, "manifest.json");
    char *mbytes = NULL;
    size_t mlen = 0;
    assert_int_equal(mvm_read_file(mpath, 1 << 20, &mbytes, &mlen, &err), 0);
    chmod(mpath, 0644);
    char *edited = replace(mbytes, "console=ttyS0", "console=ttyS1");
    write_file(img->dir, "manifest.json", edited);
    expect_verify_fail(img, "manifest.json: SHA-256 mismatch");
    mvm_image *img2 = NULL;
    assert_int_equal(mvm_image_resolve("verifyme", &img2, &err), -1);
    assert_int_equal(err->code, MVM_EINTEGRITY);
    mvm_error_free(err);
    err = NULL;
    write_file(img->dir, "manifest.json", mbytes);
    assert_int_equal(mvm_image_verify(img, &err), 0);

    free(edited);
    free(mbytes);
    free(mpath);
    free(saved);
    free(kern);
    free(raw);
    free(tampered);
    free(orig);
    free(rootfs);
    free(digest);
    mvm_image_free(img);
}

static size_t count_entries(const char *sub) {
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", cache_dir, sub) >= 0);
    DIR *d = opendir(p);
    free(p);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void test_list_resolve_remove(void **state) {
    (void)state;
    mvm_error *err = NULL;
    mvm_image *img = NULL;
    /* a fresh cache */
    cache_teardown(state);
    cache_setup(state);

    assert_int_equal(mvm_image_resolve("nothing", &img, &err), -1);
    assert_int_equal(err->code, MVM_ENOTFOUND);
    assert_non_null(strstr(err->msg, "unknown image 'nothing'"));
    mvm_error_free(err);
    err = NULL;

    char *d1 = make_fake_image("one", "kernel A");
    char *d2 = make_fake_image("two", "kernel B");
    char *d3 = make_fake_image(NULL, "kernel C");

    /* a second tag for the first image: publish the identical manifest again */
    char *cache = image_cache_prepare(&err);
    char *tagp = NULL;
    assert_true(asprintf(&tagp, "%s/tags/alias", cache) >= 0);
    char line[80];
    snprintf(line, sizeof(line), "%s\n", d1);
    assert_int_equal(mvm_write_file_atomic(tagp, line, strlen(line), 0644, &err), 0);

    struct mvm_image_info *v = NULL;
    size_t n = 0;
    assert_int_equal(mvm_image_list(&v, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].tag, "alias");
    assert_string_equal(v[0].digest, d1);
    assert_string_equal(v[1].tag, "one");
    assert_string_equal(v[2].tag, "two");
    assert_null(v[3].tag);
    assert_string_equal(v[3].digest, d3);
    assert_string_equal(v[3].source, "recipe:test");
    assert_int_equal(v[1].size, strlen("kernel A") + strlen("root filesystem bytes"));
    mvm_image_info_free(v, n);

    /* by digest, by prefix */
    char ref[80];
    snprintf(ref, sizeof(ref), "sha256:%s", d2);
    assert_int_equal(mvm_image_resolve(ref, &img, &err), 0);
    assert_string_equal(img->digest, d2);
    mvm_image_free(img);
    snprintf(ref, sizeof(ref), "%.12s", d3);
    assert_int_equal(mvm_image_resolve(ref, &img, &err), 0);
    assert_string_equal(img->digest, d3);
    assert_int_equal(mvm_image_verify(img, &err), 0);
    mvm_image_free(img);

    /* removing one of two tags keeps the image */
    assert_int_equal(mvm_image_remove("one", &err), 0);
    assert_int_equal(mvm_image_resolve("one", &img, &err), -1);
    assert_int_equal(err->code, MVM_ENOTFOUND);
    mvm_error_free(err);
    err = NULL;
    assert_int_equal(mvm_image_resolve("alias", &img, &err), 0);
    mvm_image_free(img);
    assert_int_equal(count_entries("images"), 3);
    /* the last tag takes the image with it */
    assert_int_equal(mvm_image_remove("alias", &err), 0);
    assert_int_equal(count_entries("images"), 2);
    /* by digest: tags go too */
    snprintf(ref, sizeof(ref), "sha256:%.16s", d2);
    assert_int_equal(mvm_image_remove(ref, &err), 0);
    assert_int_equal(count_entries("images"), 1);
    assert_int_equal(count_entries("tags"), 0);
    assert_int_equal(mvm_image_remove("two", &err), -1);
    assert_int_equal(err->code, MVM_ENOTFOUND);
    mvm_error_free(err);
    err = NULL;
    assert_int_equal(mvm_image_remove("a/b", &err), -1);
    assert_int_equal(err->code, MVM_EINVAL);
    mvm_error_free(err);
    err = NULL;
    /* nothing half-removed is left behind */
    assert_int_equal(count_entries("tmp"), 0);

    free(tagp);
    free(cache);
    free(d1);
    free(d2);
    free(d3);
}

static void test_tag_atomic(void **state) {
    (void)state;
    mvm_error *err = NULL;
    char *a = make_fake_image("moving", "kernel one");
    char *b = make_fake_image("moving", "kernel two");
    assert_string_not_equal(a, b);
    char *p = NULL, *s = NULL;
    assert_true(asprintf(&p, "%s/tags/moving", cache_dir) >= 0);
    assert_int_equal(mvm_read_file(p, 256, &s, NULL, &err), 0);
    char expect[80];
    snprintf(expect, sizeof(expect), "%s\n", b);
    assert_string_equal(s, expect);
    /* no temporary files left next to the tag */
    DIR *d;
    char *tags = NULL;
    assert_true(asprintf(&tags, "%s/tags", cache_dir) >= 0);
    assert_non_null(d = opendir(tags));
    struct dirent *de;
    while ((de = readdir(d)))
        assert_null(strstr(de->d_name, ".tmp."));
    closedir(d);
    /* the older image is still there, untagged */
    char ref[80];
    snprintf(ref, sizeof(ref), "sha256:%s", a);
    mvm_image *img = NULL;
    assert_int_equal(mvm_image_resolve(ref, &img, &err), 0);
    mvm_image_free(img);
    /* an invalid tag never reaches the file system */
    assert_int_equal(image_tag_validate("../evil", &err), -1);
    mvm_error_free(err);
    free(tags);
    free(s);
    free(p);
    free(a);
    free(b);
}

static void test_paths(void **state) {
    (void)state;
    mvm_error *err = NULL;
    char *c = mvm_path_cache(&err);
    assert_non_null(c);
    assert_string_equal(c, cache_dir);
    free(c);
    char *deep = NULL;
    assert_true(asprintf(&deep, "%s/x/y/z", cache_dir) >= 0);
    assert_int_equal(mvm_mkdir_p(deep, 0700, &err), 0);
    assert_int_equal(mvm_mkdir_p(deep, 0700, &err), 0);
    write_file(deep, "f", "data");
    char *top = NULL;
    assert_true(asprintf(&top, "%s/x", cache_dir) >= 0);
    chmod(deep, 0500);
    assert_int_equal(mvm_rm_rf(top, &err), 0);
    assert_int_equal(access(top, F_OK), -1);
    assert_int_equal(mvm_rm_rf(top, &err), 0); /* ENOENT is fine */
    char *big = NULL, *out = NULL;
    assert_true(asprintf(&big, "%s/big", cache_dir) >= 0);
    assert_int_equal(mvm_write_file_atomic(big, "0123456789", 10, 0600, &err), 0);
    assert_int_equal(mvm_read_file(big, 5, &out, NULL, &err), -1);
    assert_int_equal(err->code, EFBIG);
    mvm_error_free(err);
    free(big);
    free(top);
    free(deep);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_roundtrip),
        cmocka_unit_test(test_manifest_rejects),
        cmocka_unit_test(test_manifest_provenance),
        cmocka_unit_test(test_manifest_provenance_rejects),
        cmocka_unit_test(test_ref_validate),
        cmocka_unit_test(test_modules_chain_diamond),
        cmocka_unit_test(test_modules_errors),
        cmocka_unit_test(test_modinfo),
        cmocka_unit_test(test_cpio_writer),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_list_resolve_remove),
        cmocka_unit_test(test_tag_atomic),
        cmocka_unit_test(test_paths),
    };
    return cmocka_run_group_tests(tests, cache_setup, cache_teardown);
}
