/* mvm-monitor: the per-VM supervisor process (see src/lib/vm/monitor.c). A separate small
 * executable: it links only what the monitor needs (no libcrypto), so that each running VM
 * costs little memory. Started by `mvmctl run`, never by hand:
 *   mvm-monitor STATE_DIR READY_FD */
#include "mvm/vm.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mvm-monitor STATE_DIR READY_FD (started by mvmctl run)\n");
        return 2;
    }
    return mvm_monitor_main(argv[1], atoi(argv[2])) == 0 ? 0 : 1;
}
