/* Process-wide log (the monitor logs to <state>/monitor.log; the CLI to stderr when
 * MVM_DEBUG is set). */
#ifndef MVM_LOG_H
#define MVM_LOG_H

enum mvm_log_level { MVM_LOG_DEBUG, MVM_LOG_INFO, MVM_LOG_WARN, MVM_LOG_ERROR };
/* fd is dup'ed; -1 keeps stderr. */
void mvm_log_set_fd(int fd);
void mvm_log_set_level(enum mvm_log_level l);
void mvm_log(enum mvm_log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) mvm_log(MVM_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) mvm_log(MVM_LOG_INFO, __VA_ARGS__)
#define log_warn(...) mvm_log(MVM_LOG_WARN, __VA_ARGS__)
#define log_error(...) mvm_log(MVM_LOG_ERROR, __VA_ARGS__)

#endif
