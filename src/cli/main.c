/* mvmctl: command dispatch. */
#include "cli.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#ifndef MVM_VERSION
#define MVM_VERSION "unknown"
#endif

static const struct {
    const char *name;
    cli_cmd_fn fn;
    const char *summary;
} commands[] = {
    {"run", cmd_run, "Boot a microVM from an image and run a command in it"},
    {"exec", cmd_exec, "Run a command in a running microVM"},
    {"ls", cmd_ls, "List microVMs"},
    {"inspect", cmd_inspect, "Show one microVM's details as JSON"},
    {"logs", cmd_logs, "Print a microVM's console output"},
    {"stop", cmd_stop, "Stop running microVMs"},
    {"rm", cmd_rm, "Remove microVMs"},
    {"images", cmd_images, "List cached images"},
    {"rmi", cmd_rmi, "Remove images"},
    {"build", cmd_build, "Build the default image, or an image from a Nix flake"},
    {"builder", cmd_builder, "Show, rebuild or remove the Nix builder image"},
    {"doctor", cmd_doctor, "Explain what this host can run and why"},
    {"audit-flake", cmd_audit_flake, "Report flake.lock inputs that are not pinned"},
};

static void usage(FILE *f) {
    fprintf(f,
            "Usage: mvmctl [--help] [--version] COMMAND [OPTIONS] [ARGS...]\n"
            "\n"
            "Manage microVMs: build images, boot them on the best hypervisor this host offers,\n"
            "run commands in them.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f,
            "\n"
            "Run 'mvmctl COMMAND --help' for a command's options.\n"
            "\n"
            "Example:\n"
            "  mvmctl build && mvmctl run --rm default -- uname -a\n"
            "\n"
            "Exit status: the command's own status for run/exec, 0 on success, 125 when mvm\n"
            "itself fails or the command line is wrong.\n");
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);

    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_FAIL;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "--help") || !strcmp(verb, "-h") || !strcmp(verb, "help")) {
        if (!strcmp(verb, "help") && argc > 2) {
            /* "mvmctl help run" is "mvmctl run --help" */
            for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
                if (!strcmp(commands[i].name, argv[2])) {
                    char *hargv[] = {argv[2], (char *)"--help", NULL};
                    return commands[i].fn(2, hargv);
                }
            return cli_fail("unknown command '%s' (see mvmctl --help)", argv[2]);
        }
        usage(stdout);
        return 0;
    }
    if (!strcmp(verb, "--version") || !strcmp(verb, "-v")) {
        printf("mvmctl %s\n", MVM_VERSION);
        return 0;
    }
    if (verb[0] == '-')
        return cli_fail("unknown option '%s' (see mvmctl --help)", verb);
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        if (!strcmp(commands[i].name, verb))
            return commands[i].fn(argc - 1, argv + 1);
    return cli_fail("unknown command '%s' (see mvmctl --help)", verb);
}
