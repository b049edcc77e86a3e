/* mvmctl rmi: remove image tags (and the images no tag references any more). */
#include "cli.h"
#include "util.h"

#include <stdio.h>

static const char usage[] =
    "Usage: mvmctl rmi IMAGE...\n"
    "       mvmctl rmi --prune\n"
    "\n"
    "Remove images from the cache. IMAGE is a tag, sha256:<digest> or a unique digest prefix.\n"
    "Removing a tag deletes the image only when no other tag refers to it; removing by digest\n"
    "deletes the image and every tag that names it. An image a VM was booted from stays\n"
    "until that VM is removed (its disk is an overlay of the image).\n"
    "\n"
    "Options:\n"
    "      --prune  Remove every untagged image that no VM uses\n"
    "  -h, --help   Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl rmi myimage\n";

int cmd_rmi(int argc, char **argv) {
    enum { OPT_PRUNE = 256 };
    static const struct option longopts[] = {
        {"prune", no_argument, NULL, OPT_PRUNE},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    bool prune = false;
    cli_getopt_reset();
    while ((c = cli_getopt("rmi", argc, argv, "+:h", longopts)) != -1) {
        switch (c) {
        case OPT_PRUNE: prune = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (prune) {
        if (optind < argc)
            return cli_usage_error("rmi", "--prune takes no IMAGE");
        _cleanup_error_ mvm_error *err = NULL;
        size_t n;
        uint64_t bytes;
        if (mvm_image_prune(&n, &bytes, &err) < 0)
            return cli_error(err);
        char size[32];
        cli_human_size(bytes, size, sizeof(size));
        printf("removed %zu untagged image%s (%s)\n", n, n == 1 ? "" : "s", size);
        return 0;
    }
    if (optind >= argc)
        return cli_usage_error("rmi", "missing IMAGE");
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        _cleanup_error_ mvm_error *err = NULL;
        if (mvm_image_remove_unused(argv[i], &err) < 0) {
            rc = cli_error(err);
            continue;
        }
        printf("%s\n", argv[i]);
    }
    return rc;
}
