/* mvmctl audit-flake: report flake.lock inputs that are not pinned to exact content. */
#include <stddef.h>

#include "cli.h"
#include "mvm/build.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char usage[] =
    "Usage: mvmctl audit-flake [--json] DIR\n"
    "\n"
    "Check that every input in DIR/flake.lock is pinned: locked to a revision and a narHash,\n"
    "so that a build sees exactly the same sources every time. Reported as unpinned: inputs\n"
    "without a 'locked' entry, indirect (registry) references, branch-only refs without a\n"
    "rev, inputs without a narHash, local paths without a narHash, and unknown input types.\n"
    "A flake without flake.lock passes only when flake.nix declares no inputs.\n"
    "\n"
    "Options:\n"
    "      --json    Print a JSON object: flake, inputs (count), unpinned (a list of\n"
    "                {input, problem}), ok\n"
    "  -h, --help    Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl audit-flake ./myvm && mvmctl build --flake ./myvm\n"
    "\n"
    "Exit status: 0 when every input is pinned, 1 when some input is not (or flake.lock is\n"
    "missing although the flake has inputs), 125 on other errors.\n";

#define FLAKE_FILE_MAX ((off_t)16 << 20)

/* Reads name under dirfd whole (at most FLAKE_FILE_MAX bytes). Returns 0, or -1 with errno
 * set (ENOENT when the file does not exist, EFBIG when it is too large). */
static int read_small_file(int dirfd, const char *name, char **out, size_t *len) {
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        return -1;
    }
    if (st.st_size > FLAKE_FILE_MAX) {
        errno = EFBIG;
        return -1;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > (size_t)FLAKE_FILE_MAX) {
                free(buf);
                errno = EFBIG;
                return -1;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static bool is_ident_char(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '\'' || c == '-';
}

/* Cheap textual check: does flake.nix mention `inputs` followed by '=' or '.' outside
 * comments and strings? (`inputs = {...}`, `inputs.nixpkgs.url = ...`) */
static bool flake_nix_has_inputs(const char *s, size_t len) {
    static const char word[] = "inputs";
    const size_t wl = sizeof(word) - 1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '#') {
            while (i < len && s[i] != '\n')
                i++;
        } else if (c == '/' && i + 1 < len && s[i + 1] == '*') {
            for (i += 2; i + 1 < len && !(s[i] == '*' && s[i + 1] == '/'); i++)
                ;
            i++;
        } else if (c == '"') {
            for (i++; i < len && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
        } else if (c == '\'' && i + 1 < len && s[i + 1] == '\'' &&
                   (i == 0 || !is_ident_char(s[i - 1]))) {
            for (i += 2; i + 1 < len && !(s[i] == '\'' && s[i + 1] == '\''); i++)
                ;
            i++;
        } else if (c == 'i' && (i == 0 || !is_ident_char(s[i - 1])) && len - i >= wl &&
                   !memcmp(s + i, word, wl) && (i + wl == len || !is_ident_char(s[i + wl]))) {
            size_t j = i + wl;
            while (j < len && isspace((unsigned char)s[j]))
                j++;
            if (j < len && (s[j] == '=' || s[j] == '.'))
                return true;
            i = j - 1;
        }
    }
    return false;
}

/* Lock nodes other than the root: the number of inputs the audit looked at. */
static size_t count_lock_inputs(const char *js, size_t len) {
    json_t *doc = json_loadb(js, len, 0, NULL);
    size_t n = json_object_size(json_object_get(doc, "nodes"));
    json_decref(doc);
    return n ? n - 1 : 0;
}

static int report(const char *dir, size_t inputs, const struct mvm_lock_finding *f, size_t n,
                  bool json, const char *note) {
    if (inputs < n)
        inputs = n;
    if (json) {
        json_t *o = json_object(), *arr = json_array();
        if (!o || !arr) {
            json_decref(o);
            json_decref(arr);
            return cli_fail("out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "input", json_string(f[i].input));
            json_object_set_new(e, "problem", json_string(f[i].problem));
            json_array_append_new(arr, e);
        }
        json_object_set_new(o, "flake", json_string(dir));
        json_object_set_new(o, "inputs", json_integer((json_int_t)inputs));
        json_object_set_new(o, "unpinned", arr);
        json_object_set_new(o, "ok", json_boolean(n == 0));
        int rc = cli_print_json(o);
        return rc ? rc : n ? 1 : 0;
    }
    for (size_t i = 0; i < n; i++)
        printf("UNPINNED  %s: %s\n", f[i].input, f[i].problem);
    if (note)
        printf("%s\n", note);
    else if (n)
        printf("%zu of %zu inputs unpinned\n", n, inputs);
    else
        printf("all %zu inputs pinned (rev + narHash)\n", inputs);
    if (fflush(stdout) == EOF)
        return cli_fail("writing to stdout: %s", strerror(errno));
    return n ? 1 : 0;
}

int cmd_audit_flake(int argc, char **argv) {
    enum { OPT_JSON = 256 };
    static const struct option longopts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = false;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("audit-flake", argc, argv, "+:h", longopts)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind >= argc)
        return cli_usage_error("audit-flake", "missing flake directory");
    if (optind + 1 < argc)
        return cli_usage_error("audit-flake", "unexpected argument '%s'", argv[optind + 1]);
    const char *dir = argv[optind];

    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return cli_fail("flake directory '%s': %s", dir, strerror(errno));

    _cleanup_free_ char *nix = NULL;
    size_t nix_len = 0;
    if (read_small_file(dfd, "flake.nix", &nix, &nix_len) < 0)
        return errno == ENOENT ? cli_fail("no flake.nix in '%s'", dir)
                               : cli_fail("%s/flake.nix: %s", dir, strerror(errno));

    _cleanup_free_ char *lock = NULL;
    size_t lock_len = 0;
    if (read_small_file(dfd, "flake.lock", &lock, &lock_len) < 0) {
        if (errno != ENOENT)
            return cli_fail("%s/flake.lock: %s", dir, strerror(errno));
        if (flake_nix_has_inputs(nix, nix_len)) {
            cli_fail("%s: flake.lock missing: run nix flake lock", dir);
            return 1;
        }
        return report(dir, 0, NULL, 0, json, "no flake.lock: the flake has no locked inputs");
    }

    _cleanup_error_ mvm_error *err = NULL;
    struct mvm_lock_finding *f = NULL;
    size_t n = 0;
    if (mvm_flake_lock_audit(lock, lock_len, &f, &n, &err) < 0) {
        mvm_error_wrap(&err, "%s", dir);
        return cli_error(err);
    }
    int rc = report(dir, count_lock_inputs(lock, lock_len), f, n, json, NULL);
    mvm_lock_findings_free(f, n);
    return rc;
}
