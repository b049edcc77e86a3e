/* mvmctl stop [-t SECONDS] NAME...: graceful stop, forced after the timeout. */
#include "cli.h"
#include "util.h"

#include <stdio.h>

static const char usage[] =
    "Usage: mvmctl stop [-t SECONDS] NAME...\n"
    "\n"
    "Stop microVMs: ask each guest to shut down, wait, then force it off. Prints each name\n"
    "once it has stopped. Stopping a VM that is not running is not an error.\n"
    "\n"
    "Options:\n"
    "  -t, --time DURATION   Grace period before forcing: seconds or e.g. 30s, 2m\n"
    "                        (default 10; 0 forces immediately)\n"
    "  -h, --help            Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl stop -t 30 web db\n";

int cmd_stop(int argc, char **argv) {
    static const struct option longopts[] = {
        {"time", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int timeout = 10;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("stop", argc, argv, "+:t:h", longopts)) != -1) {
        switch (c) {
        case 't': {
            _cleanup_error_ mvm_error *err = NULL;
            if (cli_parse_duration("timeout", optarg, &timeout, &err) < 0)
                return cli_usage_error("stop", "%s", err->msg);
            break;
        }
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind >= argc)
        return cli_usage_error("stop", "missing VM name");

    int rc = 0;
    for (int i = optind; i < argc; i++) {
        _cleanup_error_ mvm_error *err = NULL;
        bool was_running = false;
        if (mvm_vm_stop(argv[i], timeout, &was_running, &err) < 0) {
            rc = cli_error(err);
            continue;
        }
        printf("%s\n", argv[i]);
        fflush(stdout);
    }
    return rc;
}
