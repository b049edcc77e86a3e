/* mvmctl logs: print (and follow) a VM's console log. */
#include "cli.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "Usage: mvmctl logs [-f] [-n LINES] NAME\n"
    "\n"
    "Print a microVM's console output (kernel messages, init, anything the guest writes to\n"
    "its console). Works for stopped VMs too, until they are removed.\n"
    "\n"
    "Options:\n"
    "  -f, --follow      Keep printing new output until the VM stops (Ctrl-C to quit)\n"
    "  -n, --tail LINES  Only the last LINES lines ('all' for everything, the default)\n"
    "  -h, --help        Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl logs -n 20 -f web\n";

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static bool is_live(enum mvm_vm_state s) {
    return s == MVM_VM_STARTING || s == MVM_VM_RUNNING || s == MVM_VM_PAUSED ||
           s == MVM_VM_STOPPING;
}

/* Copies everything readable from fd to stdout. 0 ok, 1 stdout closed, -1 error. */
static int drain(int fd, const char *path) {
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            cli_fail("reading %s: %s", path, strerror(errno));
            return -1;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(STDOUT_FILENO, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EPIPE)
                    return 1;
                cli_fail("writing to stdout: %s", strerror(errno));
                return -1;
            }
            off += w;
        }
    }
}

int cmd_logs(int argc, char **argv) {
    static const struct option longopts[] = {
        {"follow", no_argument, NULL, 'f'},
        {"tail", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool follow = false;
    long tail = -1;
    _cleanup_error_ mvm_error *err = NULL;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("logs", argc, argv, "+:fn:h", longopts)) != -1) {
        switch (c) {
        case 'f': follow = true; break;
        case 'n':
            if (!strcmp(optarg, "all"))
                tail = -1;
            else if (cli_parse_int("line count", optarg, 0, LONG_MAX, &tail, &err) < 0)
                return cli_usage_error("logs", "%s", err->msg);
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind >= argc)
        return cli_usage_error("logs", "missing VM name");
    if (argc - optind > 1)
        return cli_usage_error("logs", "takes exactly one VM name");
    const char *name = argv[optind];

    struct mvm_vm_info info;
    memset(&info, 0, sizeof(info));
    if (mvm_vm_inspect(name, &info, &err) < 0)
        return cli_error(err);
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/console.log", info.state_dir) < 0) {
        path = NULL;
        mvm_vm_info_clear(&info);
        return cli_fail("out of memory");
    }
    bool live = is_live(info.state);
    mvm_vm_info_clear(&info);

    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT)
        return cli_fail("opening %s: %s", path, strerror(errno));
    if (fd >= 0) {
        off_t off = cli_tail_offset(fd, tail);
        if (off < 0 || lseek(fd, off, SEEK_SET) < 0)
            return cli_fail("reading %s: %s", path, strerror(errno));
        int r = drain(fd, path);
        if (r != 0)
            return r < 0 ? CLI_EXIT_FAIL : 0;
    }
    if (!follow || !live)
        return 0;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    const struct timespec tick = {0, 100 * 1000 * 1000};
    for (unsigned n = 1; !interrupted; n++) {
        nanosleep(&tick, NULL);
        if (interrupted)
            break;
        if (fd < 0) {
            fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0 && errno != ENOENT)
                return cli_fail("opening %s: %s", path, strerror(errno));
        }
        if (fd >= 0) {
            int r = drain(fd, path);
            if (r != 0)
                return r < 0 ? CLI_EXIT_FAIL : 0;
        }
        if (n % 5 == 0) {
            mvm_error *e = NULL;
            memset(&info, 0, sizeof(info));
            bool still = mvm_vm_inspect(name, &info, &e) == 0 && is_live(info.state);
            mvm_vm_info_clear(&info);
            mvm_error_freep(&e);
            if (!still) {
                /* the VM is gone: print what it wrote last, then stop */
                if (fd < 0)
                    fd = open(path, O_RDONLY | O_CLOEXEC);
                int r = fd >= 0 ? drain(fd, path) : 0;
                return r < 0 ? CLI_EXIT_FAIL : 0;
            }
        }
    }
    return 0;
}
