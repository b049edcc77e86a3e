/* mvmctl build: build the built-in default image recipe. */
#include "cli.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "Usage: mvmctl build [--name TAG] [--force] [-q]\n"
    "\n"
    "Build the built-in default image: a Debian cloud kernel with its virtio modules in a\n"
    "small initramfs, and an ext4 root filesystem holding busybox and the mvm guest agent.\n"
    "Downloads are cached and reused; no Nix and no root are needed. The finished image is\n"
    "stored by digest and tagged. Prints '<tag> sha256:<digest>' on stdout.\n"
    "\n"
    "Options:\n"
    "      --name TAG   Tag for the image (default: default)\n"
    "      --force      Rebuild even if TAG already names an image\n"
    "  -q, --quiet      No progress on stderr\n"
    "  -h, --help       Show this help\n"
    "\n"
    "Environment:\n"
    "  MVM_GUEST_DIR    Directory holding the mvm-init and mvm-agent binaries to use\n"
    "\n"
    "Example:\n"
    "  mvmctl build && mvmctl run --rm default -- cat /etc/os-release\n";

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
    enum { OPT_NAME = 256, OPT_FORCE };
    static const struct option longopts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"force", no_argument, NULL, OPT_FORCE},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *tag = "default";
    bool force = false, quiet = false;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("build", argc, argv, "+:qh", longopts)) != -1) {
        switch (c) {
        case OPT_NAME: tag = optarg; break;
        case OPT_FORCE: force = true; break;
        case 'q': quiet = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind < argc)
        return cli_usage_error("build", "unexpected argument '%s'", argv[optind]);

    _cleanup_error_ mvm_error *err = NULL;
    if (mvm_name_validate("image", tag, &err) < 0)
        return cli_usage_error("build", "%s", err->msg);

    _cleanup_(mvm_image_freep) mvm_image *img = NULL;
    if (cli_build_default(tag, force, quiet, &img, &err) < 0)
        return cli_error(err);
    printf("%s sha256:%s\n", tag, img->digest);
    return 0;
}
