/* mvmctl rmi: remove image tags (and the images no tag references any more). */
#include "cli.h"
#include "util.h"

#include <stdio.h>

static const char usage[] =
    "Usage: mvmctl rmi IMAGE...\n"
    "\n"
    "Remove images from the cache. IMAGE is a tag, sha256:<digest> or a unique digest prefix.\n"
    "Removing a tag deletes the image only when no other tag refers to it; removing by digest\n"
    "deletes the image and every tag that names it. VMs already running keep their disks.\n"
    "\n"
    "Options:\n"
    "  -h, --help   Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl rmi myimage\n";

int cmd_rmi(int argc, char **argv) {
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("rmi", argc, argv, "+:h", longopts)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind >= argc)
        return cli_usage_error("rmi", "missing IMAGE");
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        _cleanup_error_ mvm_error *err = NULL;
        if (mvm_image_remove(argv[i], &err) < 0) {
            rc = cli_error(err);
            continue;
        }
        printf("%s\n", argv[i]);
    }
    return rc;
}
