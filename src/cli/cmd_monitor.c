/* mvmctl __monitor STATE_DIR READY_FD: the per-VM monitor (mvmctl re-executes itself). */
#include "cli.h"

#include <stdlib.h>

int cmd_monitor(int argc, char **argv) {
    if (argc != 3)
        return cli_fail("__monitor is internal: it takes STATE_DIR READY_FD");
    return mvm_monitor_main(argv[1], atoi(argv[2])) == 0 ? 0 : 1;
}
