/* mvmctl rm [-f] NAME...: remove VMs' state. */
#include "cli.h"
#include "util.h"

#include <stdio.h>

static const char usage[] =
    "Usage: mvmctl rm [-f] NAME...\n"
    "\n"
    "Remove microVMs that are no longer running (their state directory, console log and\n"
    "writable disk layer). Prints each name once removed.\n"
    "\n"
    "Options:\n"
    "  -f, --force   Also remove running VMs (they are killed first)\n"
    "  -h, --help    Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl rm -f web\n";

int cmd_rm(int argc, char **argv) {
    static const struct option longopts[] = {
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool force = false;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("rm", argc, argv, "+:fh", longopts)) != -1) {
        switch (c) {
        case 'f': force = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind >= argc)
        return cli_usage_error("rm", "missing VM name");

    int rc = 0;
    for (int i = optind; i < argc; i++) {
        _cleanup_error_ mvm_error *err = NULL;
        if (mvm_vm_rm(argv[i], force, &err) < 0) {
            rc = cli_error(err);
            continue;
        }
        printf("%s\n", argv[i]);
        fflush(stdout);
    }
    return rc;
}
