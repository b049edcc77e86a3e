/* mvmctl run: boot a VM from an image, then run a command in it or leave it running. */
#include "cli.h"
#include "util.h"
#include "mvm/backend.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "Usage: mvmctl run [OPTIONS] IMAGE [--] [COMMAND [ARG...]]\n"
    "\n"
    "Boot a microVM from IMAGE on the best hypervisor this host offers (see mvmctl doctor),\n"
    "run COMMAND in it (default /bin/sh), stop it and exit with the command's status.\n"
    "With -d the VM is left running in the background and its name is printed; use\n"
    "mvmctl exec to run commands in it and mvmctl stop to stop it.\n"
    "IMAGE is a tag, sha256:<digest> or a digest prefix of at least 12 hex digits; the\n"
    "'default' image is built on first use.\n"
    "\n"
    "Options:\n"
    "      --name NAME            Name of the VM (default: generated)\n"
    "  -d, --detach               Leave the VM running in the background; print its name\n"
    "      --rm                   Remove the VM when the command ends (or if boot fails)\n"
    "  -i, --interactive          Forward stdin to the command\n"
    "  -t, --tty                  Allocate a terminal in the guest (stdin must be a terminal)\n"
    "      --cpus N               Virtual CPUs (default 1)\n"
    "  -m, --memory SIZE          Guest memory: MiB, or with a unit: 512M, 1G (default 256M)\n"
    "  -e, --env KEY=VALUE        Environment variable for the command; a bare KEY copies\n"
    "                             mvmctl's value (repeatable)\n"
    "  -w, --workdir DIR          Working directory of the command inside the guest\n"
    "      --accel auto|kvm|tcg   Accelerator (default auto: KVM when it is usable, else TCG)\n"
    "      --hypervisor NAME      Force a backend (qemu, firecracker, libkrun, docker)\n"
    "      --boot-timeout SECS    Give up if the guest agent is not ready in time (default 120)\n"
    "  -q, --quiet                No progress or banner on stderr\n"
    "  -h, --help                 Show this help\n"
    "\n"
    "Exit status: the command's status (126/127 if it cannot be run, 128+N if killed by\n"
    "signal N), or 125 if mvm fails.\n"
    "\n"
    "Examples:\n"
    "  mvmctl run --rm -it default\n"
    "  mvmctl run --rm -m 1G --cpus 2 default -- uname -a\n"
    "  mvmctl run -d --name web default && mvmctl exec web ps\n";

static volatile sig_atomic_t got_signal;

static void on_signal(int sig) { got_signal = sig; }

/* The first SIGINT/SIGTERM/SIGHUP is recorded so that the VM is still stopped (and removed);
 * a second one gets the default action. */
static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* Stops the VM and removes it when asked. Errors are printed; returns 0 or CLI_EXIT_FAIL. */
static int finish(const char *name, bool rm) {
    int rc = 0;
    _cleanup_error_ mvm_error *err = NULL;
    bool was_running = false;
    if (mvm_vm_stop(name, 10, &was_running, &err) < 0) {
        rc = cli_error(err);
        mvm_error_free(err);
        err = NULL;
    }
    if (rm && mvm_vm_rm(name, true, &err) < 0)
        rc = cli_error(err);
    return rc;
}

static int ensure_default_image(bool quiet, mvm_error **err) {
    _cleanup_(mvm_image_freep) mvm_image *img = NULL;
    _cleanup_error_ mvm_error *e = NULL;
    if (mvm_image_resolve("default", &img, &e) == 0)
        return 0;
    if (e->code != MVM_ENOTFOUND) {
        *err = steal_pointer(&e);
        return -1;
    }
    if (!quiet)
        cli_progress(NULL, "image 'default' is not built yet: building it now");
    if (cli_build_default("default", false, quiet, &img, err) < 0)
        return mvm_error_wrap(err, "building the default image");
    return 0;
}

static void banner(const char *name) {
    struct mvm_vm_info info;
    memset(&info, 0, sizeof(info));
    mvm_error *err = NULL;
    if (mvm_vm_inspect(name, &info, &err) == 0)
        fprintf(stderr, "mvm: %s running on %s/%s (security tier: %s)\n", name,
                info.backend ? info.backend : "?", info.accel ? info.accel : "?",
                info.tier ? info.tier : "?");
    else
        fprintf(stderr, "mvm: %s running\n", name);
    mvm_vm_info_clear(&info);
    mvm_error_freep(&err);
}

int cmd_run(int argc, char **argv) {
    enum { OPT_NAME = 256, OPT_RM, OPT_CPUS, OPT_ACCEL, OPT_HYPERVISOR, OPT_BOOT_TIMEOUT };
    static const struct option longopts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"detach", no_argument, NULL, 'd'},
        {"rm", no_argument, NULL, OPT_RM},
        {"interactive", no_argument, NULL, 'i'},
        {"tty", no_argument, NULL, 't'},
        {"cpus", required_argument, NULL, OPT_CPUS},
        {"memory", required_argument, NULL, 'm'},
        {"env", required_argument, NULL, 'e'},
        {"workdir", required_argument, NULL, 'w'},
        {"accel", required_argument, NULL, OPT_ACCEL},
        {"hypervisor", required_argument, NULL, OPT_HYPERVISOR},
        {"boot-timeout", required_argument, NULL, OPT_BOOT_TIMEOUT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct mvm_run_opts ro = {
        .cpus = 1,
        .mem_mib = 256,
        .accel = MVM_ACCEL_AUTO,
        .boot_timeout_s = 120,
    };
    bool detach = false, rm = false, interactive = false, tty = false, quiet = false;
    const char *workdir = NULL;
    struct cli_strv env = {0};
    _cleanup_error_ mvm_error *err = NULL;
    _cleanup_free_ char *name = NULL;
    int rc = CLI_EXIT_FAIL;
    long l;
    int c;

    cli_getopt_reset();
    while ((c = cli_getopt("run", argc, argv, "+:ditm:e:w:qh", longopts)) != -1) {
        switch (c) {
        case OPT_NAME: ro.name = optarg; break;
        case 'd': detach = true; break;
        case OPT_RM: rm = true; break;
        case 'i': interactive = true; break;
        case 't': tty = true; break;
        case 'q': quiet = true; break;
        case 'w': workdir = optarg; break;
        case OPT_HYPERVISOR: ro.hypervisor = optarg; break;
        case OPT_CPUS:
            if (cli_parse_int("CPU count", optarg, 1, 1024, &l, &err) < 0)
                goto usage_err;
            ro.cpus = (int)l;
            break;
        case 'm':
            if (cli_parse_mem_mib(optarg, &ro.mem_mib, &err) < 0)
                goto usage_err;
            break;
        case OPT_ACCEL:
            if (mvm_accel_parse(optarg, &ro.accel, &err) < 0)
                goto usage_err;
            break;
        case OPT_BOOT_TIMEOUT:
            if (cli_parse_duration("boot timeout", optarg, &ro.boot_timeout_s, &err) < 0)
                goto usage_err;
            if (ro.boot_timeout_s == 0) {
                rc = cli_usage_error("run", "the boot timeout must be at least one second");
                goto out;
            }
            break;
        case 'e': {
            char *kv = NULL;
            if (cli_parse_env(optarg, &kv, &err) < 0)
                goto usage_err;
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
        rc = cli_usage_error("run", "missing IMAGE");
        goto out;
    }
    ro.image = argv[optind];
    int ncmd;
    char **cmd = cli_command_after(argc, argv, optind, &ncmd);

    if (detach && ncmd) {
        rc = cli_usage_error("run", "run -d takes no command; start it with run -d, "
                                    "then use exec");
        goto out;
    }
    if (detach && rm) {
        rc = cli_usage_error("run", "--rm cannot be combined with -d; remove the VM with "
                                    "mvmctl rm");
        goto out;
    }
    if (detach && (interactive || tty || env.n || workdir)) {
        rc = cli_usage_error("run", "-i, -t, -e and -w apply to a command: with -d, pass "
                                    "them to mvmctl exec");
        goto out;
    }
    if (tty && !isatty(STDIN_FILENO)) {
        rc = cli_fail("the input device is not a TTY");
        goto out;
    }
    if (ro.name && mvm_name_validate("VM", ro.name, &err) < 0)
        goto usage_err;
    if (mvm_image_ref_validate(ro.image, &err) < 0)
        goto usage_err;

    char exe[PATH_MAX];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (el < 0) {
        mvm_error_sys(&err, "cannot find mvmctl's own executable (/proc/self/exe)");
        rc = cli_error(err);
        goto out;
    }
    exe[el] = '\0';
    ro.monitor_exe = exe;

    if (!strcmp(ro.image, "default") && ensure_default_image(quiet, &err) < 0) {
        rc = cli_error(err);
        goto out;
    }

    catch_signals();
    if (mvm_vm_run(&ro, &name, &err) < 0) {
        rc = cli_error(err);
        if (rm && name) {
            mvm_error_freep(&err);
            err = NULL;
            if (mvm_vm_rm(name, true, &err) < 0)
                cli_error(err);
        }
        goto out;
    }
    if (got_signal) {
        finish(name, rm);
        rc = 128 + got_signal;
        goto out;
    }
    if (!quiet)
        banner(name);

    if (detach) {
        printf("%s\n", name);
        rc = 0;
        goto out;
    }

    static char sh[] = "/bin/sh";
    char *default_cmd[] = {sh, NULL};
    struct mvm_exec_opts eo = {
        .argv = ncmd ? cmd : default_cmd,
        .env = env.v,
        .cwd = workdir,
        .interactive = interactive,
        .tty = tty,
        .in_fd = STDIN_FILENO,
        .out_fd = STDOUT_FILENO,
        .err_fd = STDERR_FILENO,
    };
    int st = mvm_exec(name, &eo, &err);
    if (st < 0)
        rc = cli_error(err);
    else
        rc = st;
    finish(name, rm);
    goto out;

usage_err:
    rc = cli_usage_error("run", "%s", err->msg);
out:
    cli_strv_clear(&env);
    return rc;
}
