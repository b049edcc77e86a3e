/* mvmctl ls: list VMs as a table, names or JSON. */
#include "cli.h"
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "Usage: mvmctl ls [-a] [-q | --json]\n"
    "\n"
    "List microVMs. Without -a only live ones (starting, running, paused, stopping).\n"
    "States come from the VMs' monitors' locks, so a VM whose monitor was killed shows as\n"
    "'dead (monitor gone)'.\n"
    "\n"
    "Options:\n"
    "  -a, --all     Also list exited and dead VMs\n"
    "  -q, --quiet   Print only the names\n"
    "      --json    Print a JSON array with every field (see mvmctl inspect)\n"
    "  -h, --help    Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl ls -a\n"
    "  mvmctl rm -f $(mvmctl ls -aq)\n";

static bool is_live(enum mvm_vm_state s) {
    return s == MVM_VM_STARTING || s == MVM_VM_RUNNING || s == MVM_VM_PAUSED ||
           s == MVM_VM_STOPPING;
}

static void state_text(const struct mvm_vm_info *i, char *buf, size_t len) {
    if (i->state == MVM_VM_EXITED) {
        if (i->exit_code >= 0)
            snprintf(buf, len, "exited (%d)", i->exit_code);
        else if (i->exit_reason && *i->exit_reason)
            snprintf(buf, len, "exited: %s", i->exit_reason);
        else
            snprintf(buf, len, "exited");
    } else if (i->state == MVM_VM_DEAD) {
        snprintf(buf, len, "dead (monitor gone)");
    } else {
        snprintf(buf, len, "%s", mvm_vm_state_name(i->state));
    }
}

int cmd_ls(int argc, char **argv) {
    enum { OPT_JSON = 256 };
    static const struct option longopts[] = {
        {"all", no_argument, NULL, 'a'},
        {"quiet", no_argument, NULL, 'q'},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool all = false, quiet = false, json = false;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("ls", argc, argv, "+:aqh", longopts)) != -1) {
        switch (c) {
        case 'a': all = true; break;
        case 'q': quiet = true; break;
        case OPT_JSON: json = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind < argc)
        return cli_usage_error("ls", "unexpected argument '%s'", argv[optind]);
    if (quiet && json)
        return cli_usage_error("ls", "-q and --json cannot be combined");

    _cleanup_error_ mvm_error *err = NULL;
    struct mvm_vm_info *v = NULL;
    size_t n = 0;
    if (mvm_vm_list(&v, &n, &err) < 0)
        return cli_error(err);

    int rc = 0;
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
            if (all || is_live(v[i].state))
                json_array_append_new(arr, cli_vm_info_json(&v[i]));
        rc = cli_print_json(arr);
    } else if (quiet) {
        for (size_t i = 0; i < n; i++)
            if (all || is_live(v[i].state))
                printf("%s\n", v[i].name);
    } else {
        static const char *const hdr[] = {"NAME", "STATE", "IMAGE", "BACKEND", "TIER",
                                          "CPUS", "MEMORY", "CREATED"};
        struct cli_table t;
        long long now = (long long)time(NULL);
        if (cli_table_init(&t, ARRAY_SIZE(hdr), hdr) < 0) {
            mvm_vm_list_free(v, n);
            return cli_fail("out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            if (!all && !is_live(v[i].state))
                continue;
            char state[160], cpus[16], mem[32], created[64];
            state_text(&v[i], state, sizeof(state));
            snprintf(cpus, sizeof(cpus), "%d", v[i].cpus);
            snprintf(mem, sizeof(mem), "%d MiB", v[i].mem_mib);
            cli_human_ago(v[i].created, now, created, sizeof(created));
            const char *row[] = {v[i].name, state, v[i].image, v[i].backend, v[i].tier,
                                 cpus, mem, created};
            if (cli_table_add(&t, row) < 0) {
                rc = cli_fail("out of memory");
                break;
            }
        }
        if (!rc)
            cli_table_print(&t, stdout);
        cli_table_clear(&t);
    }
    mvm_vm_list_free(v, n);
    return rc;
}
