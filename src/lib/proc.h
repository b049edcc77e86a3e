/* Child processes: spawn with explicit fds, wait, capture. */
#ifndef MVM_PROC_H
#define MVM_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "mvm/error.h"

struct mvm_spawn_opts {
    int stdin_fd, stdout_fd, stderr_fd; /* -1 = /dev/null */
    bool pdeathsig;                     /* child gets SIGKILL when the parent dies */
    bool setsid;
    char *const *envp;                  /* NULL = inherit */
};
/* fork + execvp. The exec error is reported synchronously through a CLOEXEC pipe, so a
 * missing binary is an error here, not a silent exit 127. */
int mvm_spawn(char *const argv[], const struct mvm_spawn_opts *o, pid_t *pid, mvm_error **err);
/* Runs a command to completion (posix_spawnp, argv arrays only, never a shell). */
struct mvm_cmd {
    const char *const *argv;
    const char *const *env; /* extra NAME=VALUE entries added to environ; may be NULL */
    const char *cwd;        /* may be NULL */
    int in_fd;              /* -1: /dev/null */
    int out_fd;             /* -1: capture stdout into out/out_len */
    bool allow_fail;        /* a non-zero exit is reported in status, not as an error */
    /* results */
    int status;     /* exit code, or 128 + signal number */
    char *out;      /* captured stdout (NUL-terminated) */
    size_t out_len;
    char *err_tail; /* last non-empty line of stderr (may be NULL) */
};
int mvm_cmd_run(struct mvm_cmd *c, mvm_error **err);
/* a's stdout feeds b's stdin; both must succeed (unless allow_fail). */
int mvm_cmd_run_pipe(struct mvm_cmd *a, struct mvm_cmd *b, mvm_error **err);
void mvm_cmd_clear(struct mvm_cmd *c);
/* Finds an executable in PATH; returns malloc'd absolute path or NULL. */
char *mvm_which(const char *prog);
/* Describes a wait status: "exited with code 3" / "killed by signal 9 (Killed)". */
void mvm_describe_status(int status, char *buf, size_t len);
/* Does /proc/<pid>/cmdline contain needle? (guards against pid reuse before kill) */
bool mvm_pid_matches(pid_t pid, const char *needle);

#endif
