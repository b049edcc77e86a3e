/* mvmctl inspect NAME: one VM as JSON. */
#include "cli.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "Usage: mvmctl inspect NAME\n"
    "\n"
    "Print everything mvm knows about one microVM as a JSON object on stdout: name, state,\n"
    "image and digest, backend, security tier, accelerator, cpus, memory_mib, created and\n"
    "finished (unix seconds), monitor_pid, hypervisor_pid, exit_code, exit_reason, state_dir.\n"
    "\n"
    "Options:\n"
    "  -h, --help   Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl inspect web | jq -r .state\n";

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

json_t *cli_vm_info_json(const struct mvm_vm_info *i) {
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "name", str_or_null(i->name));
    json_object_set_new(o, "state", json_string(mvm_vm_state_name(i->state)));
    json_object_set_new(o, "image", str_or_null(i->image));
    json_object_set_new(o, "digest", str_or_null(i->digest));
    json_object_set_new(o, "backend", str_or_null(i->backend));
    json_object_set_new(o, "tier", str_or_null(i->tier));
    json_object_set_new(o, "accel", str_or_null(i->accel));
    json_object_set_new(o, "cpus", json_integer(i->cpus));
    json_object_set_new(o, "memory_mib", json_integer(i->mem_mib));
    json_object_set_new(o, "created", json_integer(i->created));
    json_object_set_new(o, "finished", i->finished ? json_integer(i->finished) : json_null());
    json_object_set_new(o, "monitor_pid", i->monitor_pid > 0 ? json_integer(i->monitor_pid)
                                                              : json_null());
    json_object_set_new(o, "hypervisor_pid", i->hypervisor_pid > 0
                                                 ? json_integer(i->hypervisor_pid)
                                                 : json_null());
    json_object_set_new(o, "exit_code", i->exit_code >= 0 ? json_integer(i->exit_code)
                                                          : json_null());
    json_object_set_new(o, "exit_reason", str_or_null(i->exit_reason));
    json_object_set_new(o, "state_dir", str_or_null(i->state_dir));
    return o;
}

int cmd_inspect(int argc, char **argv) {
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("inspect", argc, argv, "+:h", longopts)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind >= argc)
        return cli_usage_error("inspect", "missing VM name");
    if (argc - optind > 1)
        return cli_usage_error("inspect", "takes exactly one VM name");

    _cleanup_error_ mvm_error *err = NULL;
    struct mvm_vm_info info;
    memset(&info, 0, sizeof(info));
    if (mvm_vm_inspect(argv[optind], &info, &err) < 0)
        return cli_error(err);
    json_t *j = cli_vm_info_json(&info);
    mvm_vm_info_clear(&info);
    return cli_print_json(j);
}
