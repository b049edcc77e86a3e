/* mvmctl: shared helpers for the command implementations (parsing and printing only). */
#ifndef MVM_CLI_H
#define MVM_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <getopt.h>
#include <jansson.h>

#include "mvm/error.h"
#include "mvm/image.h"
#include "mvm/vm.h"

/* Exit status for mvm's own failures and for usage errors (as docker does). */
#define CLI_EXIT_FAIL 125

typedef int (*cli_cmd_fn)(int argc, char **argv);

/* One verb: argv[0] is the verb's name. Each returns the process exit status. */
int cmd_run(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_images(int argc, char **argv);
int cmd_build(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_audit_flake(int argc, char **argv);
int cmd_builder(int argc, char **argv);
int cmd_rmi(int argc, char **argv);

/* ---- errors and progress ---- */

/* "mvmctl: <msg>" on stderr; returns CLI_EXIT_FAIL. Frees nothing. */
int cli_error(const mvm_error *e);
/* "mvmctl: <formatted>" on stderr; returns CLI_EXIT_FAIL. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "mvmctl <cmd>: <formatted> (see mvmctl <cmd> --help)" on stderr; returns CLI_EXIT_FAIL. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "mvm: <formatted>" on stderr; usable as an mvm_progress_fn (ud ignored). */
void cli_progress(void *ud, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* getopt_long for a verb. optstring must start with "+:" (stop at the first operand, report
 * missing arguments). Returns the option character, -1 at the end of options, or '?' after
 * printing a one-line usage error for an unknown option or a missing argument. Call
 * cli_getopt_reset() before the first call. */
void cli_getopt_reset(void);
int cli_getopt(const char *cmd, int argc, char **argv, const char *optstring,
               const struct option *longopts);

/* ---- value parsing (return 0, or -1 with MVM_EINVAL and a message naming `what`) ---- */

/* Decimal integer in [min, max]. */
int cli_parse_int(const char *what, const char *s, long min, long max, long *out, mvm_error **err);
/* Memory size in MiB: "512" (MiB), "512M", "512MiB", "1G", "1.5G", "1GiB", "2048K". The
 * result must be a whole number of MiB in [1, 1048576]. */
int cli_parse_mem_mib(const char *s, int *out, mvm_error **err);
/* Duration in whole seconds: "10", "10s", "2m", "1h", "1m30s"; 0 is allowed. */
int cli_parse_duration(const char *what, const char *s, int *out, mvm_error **err);
/* -e argument: "K=V" is taken as is; a bare "K" takes K's value from mvmctl's environment
 * (and is skipped, *out = NULL, when unset). The key must be non-empty and contain no
 * whitespace. *out is malloc'd "K=V". */
int cli_parse_env(const char *arg, char **out, mvm_error **err);

/* ---- string vectors ---- */

struct cli_strv {
    char **v; /* NULL-terminated once non-empty */
    size_t n;
};
/* Appends (takes ownership of s); returns -1 on allocation failure. */
int cli_strv_push(struct cli_strv *sv, char *s);
void cli_strv_clear(struct cli_strv *sv);

/* The command after the operand at argv[at]: skips one "--" right after it. Returns a
 * pointer into argv (NULL-terminated like argv) and sets *n to its length (0 = none). */
char **cli_command_after(int argc, char **argv, int at, int *n);

/* ---- human output ---- */

/* "0 B", "512 B", "1.5 KiB", "12.3 MiB", "1.2 GiB". */
void cli_human_size(uint64_t bytes, char *buf, size_t len);
/* "3 minutes ago" for then relative to now; "just now" under one second. */
void cli_human_ago(long long then, long long now, char *buf, size_t len);
/* RFC 3339 UTC ("2024-01-02T03:04:05Z", optional fraction) to unix seconds; -1 if invalid. */
long long cli_parse_rfc3339(const char *s);

/* An aligned text table: columns separated by three spaces, last column unpadded. */
struct cli_table {
    size_t ncols, nrows;
    char **cells; /* nrows * ncols, row-major, malloc'd */
};
int cli_table_init(struct cli_table *t, size_t ncols, const char *const *header);
/* Adds a row of ncols strings (copied; NULL prints as empty). */
int cli_table_add(struct cli_table *t, const char *const *row);
void cli_table_print(const struct cli_table *t, FILE *f);
void cli_table_clear(struct cli_table *t);

/* Writes j to stdout, 2-space indent, trailing newline; steals the reference. Returns 0 or
 * CLI_EXIT_FAIL. */
int cli_print_json(json_t *j);

/* ---- files ---- */

/* Offset at which the last n lines of the file start (n < 0: the whole file, 0). A final
 * line without a newline counts as a line. Returns -1 with errno on read errors. */
off_t cli_tail_offset(int fd, long n);

/* Directory with the guest binaries (mvm-init, mvm-agent): $MVM_GUEST_DIR if set, else the
 * build tree's guest dir when it holds mvm-init, else the installed libexec dir. */
const char *cli_guest_dir(void);

/* ---- shared between verbs (implemented in cmd_*.c) ---- */

/* JSON object with every mvm_vm_info field (cmd_inspect.c). */
json_t *cli_vm_info_json(const struct mvm_vm_info *i);
/* Builds the default recipe under `tag`, progress to stderr unless quiet (cmd_build.c). */
int cli_build_default(const char *tag, bool force, bool quiet, mvm_image **out, mvm_error **err);

#endif
