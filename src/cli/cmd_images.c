/* mvmctl images: list the image cache. */
#include "cli.h"
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "Usage: mvmctl images [-q | --json]\n"
    "\n"
    "List the images in the local cache: tag, digest (SHA-256 of the manifest), total size,\n"
    "age and source (recipe or flake).\n"
    "\n"
    "Options:\n"
    "  -q, --quiet   Print only references (the tag, or the short digest when untagged)\n"
    "      --json    Print a JSON array with tag, digest, size (bytes), created, source\n"
    "  -h, --help    Show this help\n"
    "\n"
    "Example:\n"
    "  mvmctl images\n";

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

int cmd_images(int argc, char **argv) {
    enum { OPT_JSON = 256 };
    static const struct option longopts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool quiet = false, json = false;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("images", argc, argv, "+:qh", longopts)) != -1) {
        switch (c) {
        case 'q': quiet = true; break;
        case OPT_JSON: json = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind < argc)
        return cli_usage_error("images", "unexpected argument '%s'", argv[optind]);
    if (quiet && json)
        return cli_usage_error("images", "-q and --json cannot be combined");

    _cleanup_error_ mvm_error *err = NULL;
    struct mvm_image_info *v = NULL;
    size_t n = 0;
    if (mvm_image_list(&v, &n, &err) < 0)
        return cli_error(err);

    int rc = 0;
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++) {
            json_t *o = json_object();
            json_object_set_new(o, "tag", str_or_null(v[i].tag));
            json_object_set_new(o, "digest", str_or_null(v[i].digest));
            json_object_set_new(o, "size", json_integer((json_int_t)v[i].size));
            json_object_set_new(o, "created", str_or_null(v[i].created));
            json_object_set_new(o, "source", str_or_null(v[i].source));
            json_array_append_new(arr, o);
        }
        rc = cli_print_json(arr);
    } else if (quiet) {
        for (size_t i = 0; i < n; i++)
            printf("%.*s\n", v[i].tag ? (int)strlen(v[i].tag) : 12,
                   v[i].tag ? v[i].tag : v[i].digest ? v[i].digest : "");
    } else {
        static const char *const hdr[] = {"TAG", "DIGEST", "SIZE", "CREATED", "SOURCE"};
        struct cli_table t;
        long long now = (long long)time(NULL);
        if (cli_table_init(&t, ARRAY_SIZE(hdr), hdr) < 0) {
            mvm_image_info_free(v, n);
            return cli_fail("out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            char digest[16], size[32], created[64];
            snprintf(digest, sizeof(digest), "%.12s", v[i].digest ? v[i].digest : "");
            cli_human_size(v[i].size, size, sizeof(size));
            cli_human_ago(cli_parse_rfc3339(v[i].created), now, created, sizeof(created));
            const char *row[] = {v[i].tag ? v[i].tag : "<none>", digest, size, created,
                                 v[i].source};
            if (cli_table_add(&t, row) < 0) {
                rc = cli_fail("out of memory");
                break;
            }
        }
        if (!rc)
            cli_table_print(&t, stdout);
        cli_table_clear(&t);
    }
    mvm_image_info_free(v, n);
    return rc;
}
