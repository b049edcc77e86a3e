/* Child processes: spawn with explicit fds, wait, capture. */
#ifndef MVM_PROC_H
#define MVM_PROC_H

#include <stdbool.h>
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
/* Runs argv to completion; stdout captured into *out (if out != NULL, NUL-terminated),
 * stderr's last line goes into the error on failure. Returns 0 if it exited 0. */
int mvm_run(char *const argv[], char **out, size_t *outlen, mvm_error **err);
/* Finds an executable in PATH; returns malloc'd absolute path or NULL. */
char *mvm_which(const char *prog);
/* Describes a wait status: "exited with code 3" / "killed by signal 9 (Killed)". */
void mvm_describe_status(int status, char *buf, size_t len);
/* Does /proc/<pid>/cmdline contain needle? (guards against pid reuse before kill) */
bool mvm_pid_matches(pid_t pid, const char *needle);

#endif
