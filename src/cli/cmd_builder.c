/* mvmctl builder: the Nix builder image and its store cache. */
#include "cli.h"
#include "mvm/build.h"
#include "mvm/paths.h"
#include "util.h"

#include <string.h>
#include <sys/stat.h>

static const char usage[] =
    "Usage: mvmctl builder status [--json]\n"
    "       mvmctl builder rebuild [-q]\n"
    "       mvmctl builder rm\n"
    "\n"
    "The builder is the microVM image in which `mvmctl build --flake` runs Nix. It is\n"
    "assembled from Debian's nix-bin package and its dependencies (downloaded and unpacked,\n"
    "never installed on the host) and cached by digest; its store cache disk keeps the Nix\n"
    "store warm between builds.\n"
    "\n"
    "  status    Show the builder image, the packages it was made from and the store cache\n"
    "  rebuild   Assemble the builder image again (downloads are reused)\n"
    "  rm        Remove the builder image and its store cache\n"
    "\n"
    "Example:\n"
    "  mvmctl builder status\n";

static int status(bool json) {
    _cleanup_error_ mvm_error *err = NULL;
    _cleanup_(mvm_image_freep) mvm_image *img = NULL;
    bool have = mvm_image_resolve(MVM_BUILDER_TAG, &img, &err) == 0;
    if (!have && err->code != MVM_ENOTFOUND)
        return cli_error(err);
    _cleanup_free_ char *cache = mvm_path_cache(NULL);
    _cleanup_free_ char *store = NULL;
    struct stat st;
    bool have_store = false;
    if (cache && asprintf(&store, "%s/builder/store.ext4", cache) >= 0)
        have_store = stat(store, &st) == 0;
    const char *nixv = NULL;
    for (size_t i = 0; have && i < img->manifest.n_packages; i++)
        if (!strcmp(img->manifest.packages[i].name, "nix-bin"))
            nixv = img->manifest.packages[i].version;
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "built", json_boolean(have));
        if (have) {
            json_object_set_new(o, "digest", json_string(img->digest));
            json_object_set_new(o, "created", json_string(img->manifest.created));
            json_object_set_new(o, "nix_bin_version", nixv ? json_string(nixv) : json_null());
            json_t *pk = json_array();
            for (size_t i = 0; i < img->manifest.n_packages; i++)
                json_array_append_new(pk, json_pack("{s:s, s:s, s:s}", "name",
                                                    img->manifest.packages[i].name, "version",
                                                    img->manifest.packages[i].version, "sha256",
                                                    img->manifest.packages[i].sha256));
            json_object_set_new(o, "packages", pk);
        }
        json_t *s = json_object();
        json_object_set_new(s, "path", store ? json_string(store) : json_null());
        json_object_set_new(s, "present", json_boolean(have_store));
        if (have_store)
            json_object_set_new(s, "used_bytes", json_integer((json_int_t)st.st_blocks * 512));
        json_object_set_new(o, "store", s);
        return cli_print_json(o);
    }
    if (!have) {
        printf("builder image: not built (mvmctl build --flake builds it on first use, or: "
               "mvmctl builder rebuild)\n");
    } else {
        printf("builder image: sha256:%s\n", img->digest);
        printf("created:       %s\n", img->manifest.created);
        printf("nix-bin:       %s (from Debian, %zu packages)\n", nixv ? nixv : "?",
               img->manifest.n_packages);
    }
    if (have_store) {
        char used[32];
        cli_human_size((uint64_t)st.st_blocks * 512, used, sizeof(used));
        printf("store cache:   %s (%s used)\n", store, used);
    } else {
        printf("store cache:   none yet\n");
    }
    return 0;
}

int cmd_builder(int argc, char **argv) {
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = false, quiet = false;
    int c;
    cli_getopt_reset();
    while ((c = cli_getopt("builder", argc, argv, "+:qh", longopts)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'q': quiet = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind >= argc)
        return cli_usage_error("builder", "missing subcommand (status, rebuild or rm)");
    const char *sub = argv[optind++];
    /* options may also follow the subcommand */
    while ((c = cli_getopt("builder", argc, argv, "+:qh", longopts)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'q': quiet = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return CLI_EXIT_FAIL;
        }
    }
    if (optind < argc)
        return cli_usage_error("builder", "unexpected argument '%s'", argv[optind]);
    _cleanup_error_ mvm_error *err = NULL;
    if (!strcmp(sub, "status"))
        return status(json);
    if (!strcmp(sub, "rebuild")) {
        struct mvm_build_opts o = {.guest_dir = cli_guest_dir(), .force = true,
                                   .progress = quiet ? NULL : cli_progress};
        _cleanup_(mvm_image_freep) mvm_image *img = NULL;
        if (mvm_builder_ensure(&o, &img, &err) < 0)
            return cli_error(err);
        printf("%s sha256:%s\n", MVM_BUILDER_TAG, img->digest);
        return 0;
    }
    if (!strcmp(sub, "rm")) {
        if (mvm_builder_remove(&err) < 0)
            return cli_error(err);
        printf("%s\n", MVM_BUILDER_TAG);
        return 0;
    }
    return cli_usage_error("builder", "unknown subcommand '%s' (status, rebuild or rm)", sub);
}
