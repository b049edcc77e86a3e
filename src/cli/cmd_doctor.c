/* mvmctl doctor: explain what this host offers and what mvm will choose. */
#include "cli.h"
#include "util.h"
#include "mvm/backend.h"
#include "mvm/paths.h"
#include "proc.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "Usage: mvmctl doctor [--json]\n"
    "\n"
    "Explain this host: each hypervisor backend in ladder order with its security tier and\n"
    "why it is (not) available, which one 'mvmctl run' will pick, whether KVM is usable and\n"
    "which accelerator '--accel auto' will use, qemu-img, the guest binaries, mvm's\n"
    "directories and whether the default image is built.\n"
    "Exits 0 when at least one backend is available, else 125.\n"
    "\n"
    "Options:\n"
    "      --json    Print the findings as one JSON object\n"
    "  -h, --help    Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl doctor\n";

/* Why each backend sits where it does in the ladder. */
static const struct {
    const char *name, *why;
} ladder_notes[] = {
    {"firecracker", "first when KVM is usable: the smallest device model, jailer, seccomp and "
                    "dm-verity (strict tier); needs KVM and the firecracker binary"},
    {"libkrun", "next: a library VMM with a small device model (standard tier); needs KVM and "
                "libkrun.so.1"},
    {"qemu", "after Firecracker and libkrun, before Docker: QEMU microvm runs on every Linux "
             "host, with KVM or with TCG emulation, but its device model is larger (standard "
             "tier)"},
    {"docker", "last resort: a container, not a VM, so there is no VM boundary (fallback "
               "tier)"},
};

static const char *ladder_note(const char *name) {
    for (size_t i = 0; i < ARRAY_SIZE(ladder_notes); i++)
        if (!strcmp(ladder_notes[i].name, name))
            return ladder_notes[i].why;
    return NULL;
}

static bool file_present(const char *dir, const char *file) {
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, file) < 0) {
        p = NULL;
        return false;
    }
    return access(p, R_OK) == 0;
}

static void line(bool ok, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void line(bool ok, const char *what, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  %-8s %-15s ", ok ? "ok" : "missing", what);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

int cmd_doctor(int argc, char **argv) {
    enum { OPT_JSON = 256 };
    static const struct option longopts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = false;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("doctor", argc, argv, "+:h", longopts)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind < argc)
        return cli_usage_error("doctor", "unexpected argument '%s'", argv[optind]);

    /* Gather everything first, then print. */
    size_t nb = 0;
    const struct mvm_backend_ops *const *bs = mvm_backends(&nb);
    struct mvm_probe *probes = calloc(nb ? nb : 1, sizeof(*probes));
    if (!probes)
        return cli_fail("out of memory");
    bool any = false;
    for (size_t i = 0; i < nb; i++) {
        bs[i]->probe(&probes[i]);
        any |= probes[i].available;
    }

    _cleanup_error_ mvm_error *sel_err = NULL;
    const struct mvm_backend_ops *sel = mvm_backend_select(NULL, &sel_err);

    char kvm_why[256] = "";
    bool kvm = mvm_kvm_usable(kvm_why, sizeof(kvm_why));
    enum mvm_accel accel = MVM_ACCEL_TCG;
    _cleanup_error_ mvm_error *accel_err = NULL;
    char resolve_why[256] = "";
    bool accel_ok = mvm_accel_resolve(MVM_ACCEL_AUTO, &accel, resolve_why, sizeof(resolve_why),
                                      &accel_err) == 0;
    char accel_why[512];
    if (!accel_ok)
        snprintf(accel_why, sizeof(accel_why), "%s", accel_err->msg);
    else if (accel == MVM_ACCEL_KVM)
        snprintf(accel_why, sizeof(accel_why), "KVM is usable, so guests run at native speed");
    else if (kvm)
        snprintf(accel_why, sizeof(accel_why),
                 "/dev/kvm passes the test but QEMU cannot use it (%s), so QEMU emulates the "
                 "CPU with TCG: slower, but it boots anywhere", resolve_why);
    else
        snprintf(accel_why, sizeof(accel_why),
                 "KVM is not usable (%s), so QEMU emulates the CPU with TCG: slower, but it "
                 "boots anywhere", kvm_why);

    _cleanup_free_ char *qemu_img = mvm_which("qemu-img");
    const char *gdir = cli_guest_dir();
    bool g_init = file_present(gdir, "mvm-init"), g_agent = file_present(gdir, "mvm-agent");

    _cleanup_error_ mvm_error *cache_err = NULL, *run_err = NULL, *img_err = NULL;
    _cleanup_free_ char *cache = mvm_path_cache(&cache_err);
    _cleanup_free_ char *runtime = mvm_path_runtime(&run_err);
    _cleanup_(mvm_image_freep) mvm_image *img = NULL;
    bool have_default = mvm_image_resolve("default", &img, &img_err) == 0;

    int rc = any ? 0 : CLI_EXIT_FAIL;
    if (json) {
        json_t *o = json_object();
        json_t *arr = json_array();
        for (size_t i = 0; i < nb; i++) {
            json_t *b = json_object();
            json_object_set_new(b, "name", json_string(bs[i]->name));
            json_object_set_new(b, "tier", json_string(bs[i]->tier));
            json_object_set_new(b, "rank", json_integer((json_int_t)i + 1));
            json_object_set_new(b, "available", json_boolean(probes[i].available));
            json_object_set_new(b, "reason", json_string(probes[i].reason));
            json_object_set_new(b, "ladder_note", str_or_null(ladder_note(bs[i]->name)));
            json_array_append_new(arr, b);
        }
        json_object_set_new(o, "backends", arr);
        if (sel) {
            json_t *s = json_object();
            json_object_set_new(s, "name", json_string(sel->name));
            json_object_set_new(s, "tier", json_string(sel->tier));
            json_object_set_new(o, "selected", s);
        } else {
            json_object_set_new(o, "selected", json_null());
            json_object_set_new(o, "selected_error", str_or_null(sel_err ? sel_err->msg : NULL));
        }
        json_t *k = json_object();
        json_object_set_new(k, "usable", json_boolean(kvm));
        json_object_set_new(k, "reason", json_string(kvm_why));
        json_object_set_new(o, "kvm", k);
        json_t *a = json_object();
        json_object_set_new(a, "accel", accel_ok ? json_string(mvm_accel_name(accel))
                                                 : json_null());
        json_object_set_new(a, "reason", json_string(accel_why));
        json_object_set_new(o, "accel_auto", a);
        json_object_set_new(o, "qemu_img", str_or_null(qemu_img));
        json_t *g = json_object();
        json_object_set_new(g, "dir", json_string(gdir));
        json_object_set_new(g, "mvm_init", json_boolean(g_init));
        json_object_set_new(g, "mvm_agent", json_boolean(g_agent));
        json_object_set_new(o, "guest", g);
        json_object_set_new(o, "cache_dir", str_or_null(cache));
        json_object_set_new(o, "runtime_dir", str_or_null(runtime));
        json_t *d = json_object();
        json_object_set_new(d, "built", json_boolean(have_default));
        json_object_set_new(d, "digest", str_or_null(have_default ? img->digest : NULL));
        if (!have_default)
            json_object_set_new(d, "error", str_or_null(img_err ? img_err->msg : NULL));
        json_object_set_new(o, "default_image", d);
        json_object_set_new(o, "ok", json_boolean(any));
        if (cli_print_json(o) != 0)
            rc = CLI_EXIT_FAIL;
        free(probes);
        return rc;
    }

    printf("Backends, in ladder order (the first available one is used):\n");
    for (size_t i = 0; i < nb; i++)
        printf("  %-8s %zu. %-12s tier %-9s %s\n", probes[i].available ? "ok" : "missing",
               i + 1, bs[i]->name, bs[i]->tier, probes[i].reason);
    if (sel)
        printf("  => mvmctl run uses %s (security tier: %s)%s\n", sel->name, sel->tier,
               !strcmp(sel->tier, "fallback") ? " -- no VM isolation!" : "");
    else
        printf("  => no backend is available: %s\n", sel_err ? sel_err->msg : "unknown");

    printf("\nWhy this order:\n");
    for (size_t i = 0; i < nb; i++) {
        const char *n = ladder_note(bs[i]->name);
        if (n)
            printf("  %-12s %s\n", bs[i]->name, n);
    }

    printf("\nHost:\n");
    line(kvm, "KVM", "%s", kvm ? (kvm_why[0] ? kvm_why : "usable") : kvm_why);
    line(accel_ok, "--accel auto", "%s%s%s", accel_ok ? mvm_accel_name(accel) : "",
         accel_ok ? ": " : "", accel_why);
    line(qemu_img != NULL, "qemu-img", "%s",
         qemu_img ? qemu_img : "not in PATH (QEMU needs it for each VM's copy-on-write disk "
                               "layer; install qemu-utils)");
    line(g_init && g_agent, "guest binaries", "%s%s", gdir,
         g_init && g_agent ? " (mvm-init, mvm-agent)"
                           : ": mvm-init/mvm-agent not found (set MVM_GUEST_DIR or build mvm)");
    line(cache != NULL, "cache dir", "%s", cache ? cache : cache_err->msg);
    line(runtime != NULL, "runtime dir", "%s", runtime ? runtime : run_err->msg);
    if (have_default)
        line(true, "default image", "sha256:%.12s", img->digest);
    else if (img_err && img_err->code == MVM_ENOTFOUND)
        line(false, "default image", "not built yet: run mvmctl build (or mvmctl run default "
                                     "builds it on first use)");
    else
        line(false, "default image", "%s", img_err ? img_err->msg : "unknown error");

    free(probes);
    return rc;
}
