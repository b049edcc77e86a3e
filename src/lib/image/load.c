/* Loading an image from the cache by digest: the part of the image subsystem the per-VM
 * monitor needs. It must not pull in libcrypto (hashing lives in sha256.c), which keeps the
 * monitor small. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image-internal.h"
#include "mvm/paths.h"
#include "util.h"

void mvm_image_free(mvm_image *img) {
    if (!img)
        return;
    free(img->digest);
    free(img->dir);
    mvm_manifest_free(&img->manifest);
    free(img);
}

char *mvm_image_artifact_path(const mvm_image *img, const char *name) {
    const struct mvm_artifact *a = mvm_manifest_find(&img->manifest, name);
    char *p = NULL;
    if (!a || asprintf(&p, "%s/%s", img->dir, a->file) < 0)
        return NULL;
    return p;
}

int image_load_unchecked(const char *cache, const char *digest, mvm_image **out, mvm_error **err) {
    _cleanup_free_ char *dir = NULL, *mpath = NULL, *bytes = NULL;
    size_t len = 0;
    if (!image_is_hex(digest, MVM_DIGEST_HEX, MVM_DIGEST_HEX))
        return mvm_error_set(err, MVM_EINTEGRITY, "invalid image digest '%s'", digest);
    if (asprintf(&dir, "%s/images/%s", cache, digest) < 0 ||
        asprintf(&mpath, "%s/" IMAGE_MANIFEST_FILE, dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (access(dir, F_OK) < 0)
        return mvm_error_set(err, MVM_ENOTFOUND, "image sha256:%.12s is missing from the cache",
                             digest);
    if (mvm_read_file(mpath, IMAGE_MANIFEST_MAX, &bytes, &len, err) < 0)
        return -1;
    mvm_image *img = calloc(1, sizeof(*img));
    if (!img)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (mvm_manifest_from_json(bytes, len, &img->manifest, err) < 0) {
        free(img);
        return mvm_error_wrap(err, "image sha256:%.12s", digest);
    }
    img->digest = strdup(digest);
    img->dir = steal_pointer(&dir);
    if (!img->digest) {
        mvm_image_free(img);
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    *out = img;
    return 0;
}
