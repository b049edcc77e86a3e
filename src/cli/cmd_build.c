/* mvmctl build: the built-in default recipe, or a Nix flake built in a builder microVM. */
#include "cli.h"
#include "mvm/build.h"
#include "util.h"

#include <unistd.h>

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "Usage: mvmctl build [--name TAG] [--force] [-q]\n"
    "       mvmctl build --flake DIR [--profile NAME] [--name TAG] [--check] [--online]\n"
    "                    [--timeout D] [-q]\n"
    "\n"
    "Without --flake, build the built-in default image: a Debian cloud kernel with its virtio\n"
    "modules in a small initramfs, and an ext4 root filesystem holding busybox and the mvm\n"
    "guest agent. Downloads are cached and reused; no Nix and no root are needed.\n"
    "\n"
    "With --flake, build packages.x86_64-linux.<profile> of the flake in DIR inside a builder\n"
    "microVM that holds Nix (bootstrapped from Debian's nix-bin on first use; the host needs\n"
    "no Nix). The Nix log streams to stderr. The builder keeps a warm Nix store between builds;\n"
    "a flake whose inputs did not change is a cache hit. The flake contract is described in\n"
    "docs/flake-contract.md.\n"
    "\n"
    "The finished image is stored by digest and tagged. Prints '<tag> sha256:<digest>'.\n"
    "\n"
    "Options:\n"
    "      --name TAG      Tag for the image (default: 'default', or the flake directory's name)\n"
    "      --force         Rebuild even if the tag / the same inputs already have an image\n"
    "      --flake DIR     Build a Nix flake from a local directory\n"
    "      --profile NAME  Flake output packages.x86_64-linux.NAME (default: default)\n"
    "      --check         Build twice from scratch and report whether the artifacts are\n"
    "                      byte-identical (exit 1 if not)\n"
    "      --online        Give the builder a network (user-mode NAT); builds are offline\n"
    "                      otherwise and the builder VM has no network device at all\n"
    "      --timeout D     Give up on a flake build after D (default 30m; e.g. 90s, 10m)\n"
    "  -q, --quiet         No progress on stderr\n"
    "  -h, --help          Show this help\n"
    "\n"
    "Environment:\n"
    "  MVM_GUEST_DIR    Directory holding the mvm-init and mvm-agent binaries to use\n"
    "\n"
    "Examples:\n"
    "  mvmctl build && mvmctl run --rm default -- cat /etc/os-release\n"
    "  mvmctl build --flake ./examples/hello-app --name hello && mvmctl run --rm hello -- hello-mvm\n";

static int flake_build(const char *dir, const char *profile, const char *tag, bool force, bool quiet,
                       int timeout_s, bool online, bool rebuild, mvm_image **out, mvm_error **err) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return mvm_error_sys(err, "readlink /proc/self/exe");
    exe[n] = 0;
    struct mvm_flake_build_opts o = {
        .flake_dir = dir, .profile = profile, .tag = tag, .force = force, .timeout_s = timeout_s,
        .guest_dir = cli_guest_dir(), .monitor_exe = exe,
        .progress = quiet ? NULL : cli_progress, .log_fd = quiet ? -1 : 2, .nix_rebuild = rebuild,
        .online = online,
    };
    return mvm_flake_build(&o, out, err);
}

/* --check: two builds from scratch, artifact by artifact. */
static int check_reproducible(const mvm_image *a, const mvm_image *b) {
    int diff = 0;
    for (size_t i = 0; i < a->manifest.n_artifacts; i++) {
        const struct mvm_artifact *x = &a->manifest.artifacts[i];
        const struct mvm_artifact *y = mvm_manifest_find(&b->manifest, x->name);
        bool same = y && !strcmp(x->sha256, y->sha256) && x->size == y->size;
        printf("%-15s %-12s %s\n", x->name, same ? "identical" : "DIFFERS", x->file);
        diff += !same;
    }
    if (a->manifest.n_artifacts != b->manifest.n_artifacts) {
        printf("artifact lists differ\n");
        diff++;
    }
    printf("%s\n", diff ? "not reproducible" : "reproducible: all artifacts byte-identical");
    return diff ? 1 : 0;
}

int cli_build_default(const char *tag, bool force, bool quiet, mvm_image **out,
                      mvm_error **err) {
    struct mvm_build_opts o = {
        .tag = tag,
        .guest_dir = cli_guest_dir(),
        .progress = quiet ? NULL : cli_progress,
        .progress_ud = NULL,
        .force = force,
    };
    return mvm_image_build_default(&o, out, err);
}

int cmd_build(int argc, char **argv) {
    enum { OPT_NAME = 256, OPT_FORCE, OPT_FLAKE, OPT_PROFILE, OPT_CHECK, OPT_TIMEOUT, OPT_ONLINE };
    static const struct option longopts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"force", no_argument, NULL, OPT_FORCE},
        {"flake", required_argument, NULL, OPT_FLAKE},
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"check", no_argument, NULL, OPT_CHECK},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"online", no_argument, NULL, OPT_ONLINE},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *tag = NULL, *flake = NULL, *profile = NULL;
    bool force = false, quiet = false, check = false, online = false;
    int timeout_s = 1800;
    _cleanup_error_ mvm_error *err = NULL;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("build", argc, argv, "+:qh", longopts)) != -1) {
        switch (c) {
        case OPT_NAME: tag = optarg; break;
        case OPT_FORCE: force = true; break;
        case OPT_FLAKE: flake = optarg; break;
        case OPT_PROFILE: profile = optarg; break;
        case OPT_CHECK: check = true; break;
        case OPT_ONLINE: online = true; break;
        case OPT_TIMEOUT:
            if (cli_parse_duration("--timeout", optarg, &timeout_s, &err) < 0)
                return cli_usage_error("build", "%s", err->msg);
            break;
        case 'q': quiet = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind < argc)
        return cli_usage_error("build", "unexpected argument '%s'", argv[optind]);

    if (tag && mvm_image_ref_validate(tag, &err) < 0)
        return cli_usage_error("build", "%s", err->msg);
    if (!flake && (profile || check || online))
        return cli_usage_error("build", "%s needs --flake",
                               profile ? "--profile" : check ? "--check" : "--online");

    _cleanup_(mvm_image_freep) mvm_image *img = NULL;
    if (!flake) {
        if (!tag)
            tag = "default";
        if (cli_build_default(tag, force, quiet, &img, &err) < 0)
            return cli_error(err);
        printf("%s sha256:%s\n", tag, img->digest);
        return 0;
    }
    if (flake_build(flake, profile, tag, force || check, quiet, timeout_s, online, false, &img, &err) < 0)
        return cli_error(err);
    if (check) {
        _cleanup_(mvm_image_freep) mvm_image *again = NULL;
        if (!quiet)
            cli_progress(NULL, "check: building a second time (nix build --rebuild)");
        if (flake_build(flake, profile, tag, true, quiet, timeout_s, online, true, &again, &err) < 0)
            return cli_error(err);
        return check_reproducible(img, again);
    }
    /* the tag the library used: --name, else the flake directory's name */
    _cleanup_free_ char *abs = tag ? NULL : realpath(flake, NULL);
    const char *base = abs ? strrchr(abs, '/') : NULL;
    printf("%s sha256:%s\n", tag ? tag : base && base[1] ? base + 1 : img->manifest.name, img->digest);
    return 0;
}
