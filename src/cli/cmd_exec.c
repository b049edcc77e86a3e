/* mvmctl exec: run a command in a running VM. */
#include "cli.h"
#include "util.h"

#include <stdio.h>
#include <unistd.h>

static const char usage[] =
    "Usage: mvmctl exec [-i] [-t] [-e KEY=VALUE]... [-w DIR] NAME [--] COMMAND [ARG...]\n"
    "\n"
    "Run a command inside a running microVM and exit with its status (126/127 when it\n"
    "cannot be executed, 128+N when killed by signal N, 125 when mvm itself fails).\n"
    "Signals sent to mvmctl are forwarded to the command.\n"
    "\n"
    "Options:\n"
    "  -i, --interactive        Forward stdin to the command\n"
    "  -t, --tty                Allocate a terminal in the guest (stdin must be a terminal)\n"
    "  -e, --env KEY=VALUE      Set an environment variable; a bare KEY copies mvmctl's value\n"
    "  -w, --workdir DIR        Working directory inside the guest\n"
    "  -h, --help               Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl exec -it web /bin/sh\n"
    "  mvmctl exec -e DEBUG=1 web -- ls -l /\n";

int cmd_exec(int argc, char **argv) {
    static const struct option longopts[] = {
        {"interactive", no_argument, NULL, 'i'},
        {"tty", no_argument, NULL, 't'},
        {"env", required_argument, NULL, 'e'},
        {"workdir", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool interactive = false, tty = false;
    const char *workdir = NULL;
    struct cli_strv env = {0};
    _cleanup_error_ mvm_error *err = NULL;
    int rc = CLI_EXIT_FAIL;
    int c;

    cli_getopt_reset();
    while ((c = cli_getopt("exec", argc, argv, "+:ite:w:h", longopts)) != -1) {
        switch (c) {
        case 'i': interactive = true; break;
        case 't': tty = true; break;
        case 'w': workdir = optarg; break;
        case 'e': {
            char *kv = NULL;
            if (cli_parse_env(optarg, &kv, &err) < 0) {
                rc = cli_usage_error("exec", "%s", err->msg);
                goto out;
            }
            if (kv && cli_strv_push(&env, kv) < 0) {
                rc = cli_fail("out of memory");
                goto out;
            }
            break;
        }
        case 'h':
            fputs(usage, stdout);
            rc = 0;
            goto out;
        default: goto out;
        }
    }
    if (optind >= argc) {
        rc = cli_usage_error("exec", "missing VM name");
        goto out;
    }
    const char *name = argv[optind];
    int ncmd;
    char **cmd = cli_command_after(argc, argv, optind, &ncmd);
    if (ncmd == 0) {
        rc = cli_usage_error("exec", "missing command to run in '%s'", name);
        goto out;
    }
    if (tty && !isatty(STDIN_FILENO)) {
        rc = cli_fail("the input device is not a TTY");
        goto out;
    }

    struct mvm_exec_opts o = {
        .argv = cmd,
        .env = env.v,
        .cwd = workdir,
        .interactive = interactive,
        .tty = tty,
        .in_fd = STDIN_FILENO,
        .out_fd = STDOUT_FILENO,
        .err_fd = STDERR_FILENO,
    };
    int st = mvm_exec(name, &o, &err);
    rc = st < 0 ? cli_error(err) : st;
out:
    cli_strv_clear(&env);
    return rc;
}
