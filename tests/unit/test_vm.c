/* Unit tests: VM names, accelerator parsing, ladder, QEMU command-line generation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "backend/backend-internal.h"
#include "mvm/vm.h"
#include "util.h"

static void test_names(void **state) {
    (void)state;
    const char *good[] = {"a", "web-1", "db_2.test", "A0", "x234567890123456789012345678901234567890123456789012345678901234"};
    const char *bad[] = {"", "a/b", "../x", "..", ".hidden", "-x", "a b", "a\nb", "é",
                         "x2345678901234567890123456789012345678901234567890123456789012345"};
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        mvm_error *e = NULL;
        assert_int_equal(mvm_name_validate("VM", good[i], &e), 0);
        assert_null(e);
    }
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        mvm_error *e = NULL;
        assert_int_equal(mvm_name_validate("VM", bad[i], &e), -1);
        assert_non_null(e);
        assert_int_equal(e->code, MVM_EINVAL);
        assert_null(strchr(e->msg, '\n'));
        mvm_error_free(e);
    }
    mvm_error *e = NULL;
    assert_int_equal(mvm_name_validate("VM", NULL, &e), -1);
    mvm_error_free(e);
}

static void test_accel_parse(void **state) {
    (void)state;
    enum mvm_accel a;
    mvm_error *e = NULL;
    assert_int_equal(mvm_accel_parse("tcg", &a, &e), 0);
    assert_int_equal(a, MVM_ACCEL_TCG);
    assert_int_equal(mvm_accel_parse("kvm", &a, &e), 0);
    assert_int_equal(a, MVM_ACCEL_KVM);
    assert_int_equal(mvm_accel_parse("auto", &a, &e), 0);
    assert_int_equal(a, MVM_ACCEL_AUTO);
    assert_int_equal(mvm_accel_parse("hvf", &a, &e), -1);
    assert_non_null(strstr(e->msg, "hvf"));
    mvm_error_free(e);
    assert_string_equal(mvm_accel_name(MVM_ACCEL_TCG), "tcg");
    e = NULL;
    assert_int_equal(mvm_accel_resolve(MVM_ACCEL_TCG, &a, NULL, 0, &e), 0);
    assert_int_equal(a, MVM_ACCEL_TCG);
}

static void test_ladder_unknown(void **state) {
    (void)state;
    mvm_error *e = NULL;
    assert_null(mvm_backend_select("bhyve", &e));
    assert_non_null(e);
    assert_non_null(strstr(e->msg, "unknown hypervisor 'bhyve'"));
    assert_non_null(strstr(e->msg, "qemu"));
    mvm_error_free(e);
    size_t n;
    const struct mvm_backend_ops *const *all = mvm_backends(&n);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(all[i]->probe);
        assert_non_null(all[i]->tier);
        assert_ptr_equal(mvm_backend_by_name(all[i]->name), all[i]);
    }
}

static void test_ladder_qemu_missing(void **state) {
    (void)state;
    setenv("MVM_QEMU", "/nonexistent/qemu-system-x86_64", 1);
    mvm_error *e = NULL;
    assert_null(mvm_backend_select("qemu", &e));
    assert_int_equal(e->code, MVM_EUNAVAIL);
    assert_non_null(strstr(e->msg, "not available"));
    mvm_error_free(e);
    unsetenv("MVM_QEMU");
}

static mvm_image *fake_image(void) {
    mvm_image *img = calloc(1, sizeof(*img));
    img->dir = strdup("/cache/images/abc");
    img->digest = strdup("abc");
    img->manifest.cmdline = strdup("console=ttyS0 quiet");
    img->manifest.n_artifacts = 2;
    img->manifest.artifacts = calloc(2, sizeof(struct mvm_artifact));
    img->manifest.artifacts[0] = (struct mvm_artifact){.name = strdup("kernel"), .file = strdup("vmlinux"),
                                                       .format = strdup("elf-vmlinux"), .sha256 = strdup("00")};
    img->manifest.artifacts[1] = (struct mvm_artifact){.name = strdup("initrd"), .file = strdup("initrd.img"),
                                                       .format = strdup("cpio-newc"), .sha256 = strdup("00")};
    return img;
}

static bool argv_has_pair(char **v, const char *opt, const char *val) {
    for (size_t i = 0; v[i] && v[i + 1]; i++)
        if (!strcmp(v[i], opt) && !strcmp(v[i + 1], val))
            return true;
    return false;
}

static void test_qemu_argv_tcg(void **state) {
    (void)state;
    mvm_image *img = fake_image();
    struct mvm_vm_spec s = {.name = "web", .state_dir = "/run/mvm/vms/web", .image = img, .cpus = 2,
                            .mem_mib = 512, .accel = MVM_ACCEL_TCG};
    mvm_error *e = NULL;
    char **v = qemu_build_argv(&s, "/usr/bin/qemu-system-x86_64", &e);
    assert_non_null(v);
    assert_string_equal(v[0], "/usr/bin/qemu-system-x86_64");
    assert_true(argv_has_pair(v, "-accel", "tcg"));
    assert_true(argv_has_pair(v, "-cpu", "max"));
    assert_true(argv_has_pair(v, "-smp", "2"));
    assert_true(argv_has_pair(v, "-m", "512"));
    assert_true(argv_has_pair(v, "-kernel", "/cache/images/abc/vmlinux"));
    assert_true(argv_has_pair(v, "-initrd", "/cache/images/abc/initrd.img"));
    assert_true(argv_has_pair(v, "-M", "microvm,x-option-roms=off,rtc=off,isa-serial=on"));
    assert_true(argv_has_pair(v, "-device", "virtserialport,chardev=agent,name=org.mvm.agent.0"));
    assert_true(argv_has_pair(v, "-qmp", "unix:/run/mvm/vms/web/qmp.sock,server=on,wait=off"));
    assert_true(argv_has_pair(v, "-drive",
                              "id=root,file=/run/mvm/vms/web/rootfs.qcow2,format=qcow2,if=none,discard=unmap"));
    bool nodefaults = false, sandbox = false;
    const char *append = NULL;
    for (size_t i = 0; v[i]; i++) {
        nodefaults |= !strcmp(v[i], "-nodefaults");
        sandbox |= !strcmp(v[i], "-sandbox");
        if (!strcmp(v[i], "-append"))
            append = v[i + 1];
    }
    assert_true(nodefaults);
    assert_true(sandbox);
    assert_non_null(append);
    /* TCG needs the TSC hint or boots hang calibrating against the PIT */
    assert_non_null(strstr(append, "tsc_early_khz=2000000 tsc=reliable"));
    assert_non_null(strstr(append, "console=ttyS0 quiet"));
    assert_non_null(strstr(append, "mvm.hostname=web"));
    strvfreep(&v);
    mvm_image_free(img);
}

static void test_qemu_argv_kvm_and_escaping(void **state) {
    (void)state;
    mvm_image *img = fake_image();
    struct mvm_vm_spec s = {.name = "k", .state_dir = "/tmp/a,b/k", .image = img, .cpus = 1,
                            .mem_mib = 256, .accel = MVM_ACCEL_KVM, .extra_cmdline = "mvm.debug"};
    mvm_error *e = NULL;
    char **v = qemu_build_argv(&s, "qemu", &e);
    assert_non_null(v);
    assert_true(argv_has_pair(v, "-accel", "kvm"));
    assert_true(argv_has_pair(v, "-cpu", "host"));
    /* a comma in a path must not start a new QEMU sub-option */
    assert_true(argv_has_pair(v, "-chardev", "file,id=console,path=/tmp/a,,b/k/console.log"));
    for (size_t i = 0; v[i]; i++)
        if (!strcmp(v[i], "-append")) {
            assert_null(strstr(v[i + 1], "tsc_early_khz"));
            assert_non_null(strstr(v[i + 1], "mvm.debug"));
        }
    /* no network device unless asked for */
    for (size_t i = 0; v[i]; i++)
        assert_null(strstr(v[i], "netdev"));
    strvfreep(&v);
    struct mvm_disk disks[] = {{.path = "/c/store.ext4"}, {.path = "/c/src.ext4", .readonly = true}};
    s.disks = disks;
    s.n_disks = 2;
    s.net_user = true;
    v = qemu_build_argv(&s, "qemu", &e);
    assert_non_null(v);
    assert_true(argv_has_pair(v, "-drive", "id=disk0,file=/c/store.ext4,format=raw,if=none,readonly=off"));
    assert_true(argv_has_pair(v, "-drive", "id=disk1,file=/c/src.ext4,format=raw,if=none,readonly=on"));
    assert_true(argv_has_pair(v, "-device", "virtio-blk-device,drive=disk1"));
    assert_true(argv_has_pair(v, "-netdev", "user,id=net0"));
    assert_true(argv_has_pair(v, "-device", "virtio-net-device,netdev=net0"));
    strvfreep(&v);
    s.accel = MVM_ACCEL_AUTO;
    assert_null(qemu_build_argv(&s, "qemu", &e));
    mvm_error_free(e);
    mvm_image_free(img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_accel_parse),
        cmocka_unit_test(test_ladder_unknown),
        cmocka_unit_test(test_ladder_qemu_missing),
        cmocka_unit_test(test_qemu_argv_tcg),
        cmocka_unit_test(test_qemu_argv_kvm_and_escaping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
