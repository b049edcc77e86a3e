/* SHA-256 of files and buffers (OpenSSL EVP), streamed in 1 MiB chunks. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "image-internal.h"
#include "util.h"

#define HASH_CHUNK (1024 * 1024)

static void to_hex(const unsigned char *md, unsigned len, char *hex) {
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < len; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[2 * len] = '\0';
}


void image_sha256_buf(const void *data, size_t len, char hex[MVM_DIGEST_HEX + 1]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
        /* cannot happen with a working libcrypto; make it never match anything */
        memset(hex, 'x', MVM_DIGEST_HEX);
        hex[MVM_DIGEST_HEX] = '\0';
        return;
    }
    to_hex(md, mdlen, hex);
}

int image_sha256_fd(int fd, char hex[MVM_DIGEST_HEX + 1], uint64_t *size_out, mvm_error **err) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    _cleanup_free_ unsigned char *buf = malloc(HASH_CHUNK);
    if (!ctx || !buf) {
        EVP_MD_CTX_free(ctx);
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    int rc = -1;
    uint64_t total = 0;
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        mvm_error_set(err, EIO, "SHA-256 initialisation failed");
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf, HASH_CHUNK);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            mvm_error_sys(err, "read failed");
            goto out;
        }
        if (r == 0)
            break;
        if (!EVP_DigestUpdate(ctx, buf, (size_t)r)) {
            mvm_error_set(err, EIO, "SHA-256 update failed");
            goto out;
        }
        total += (uint64_t)r;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 32) {
        mvm_error_set(err, EIO, "SHA-256 finalisation failed");
        goto out;
    }
    to_hex(md, mdlen, hex);
    if (size_out)
        *size_out = total;
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

int image_sha256_file(const char *path, char hex[MVM_DIGEST_HEX + 1], uint64_t *size_out,
                      mvm_error **err) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mvm_error_sys(err, "cannot open %s", path);
    if (image_sha256_fd(fd, hex, size_out, err) < 0)
        return mvm_error_wrap(err, "%s", path);
    return 0;
}

int image_artifact_fill(struct mvm_artifact *art, const char *dir, const char *name,
                        const char *file, const char *format, mvm_error **err) {
    memset(art, 0, sizeof(*art));
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, file) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    char hex[MVM_DIGEST_HEX + 1];
    uint64_t size;
    if (image_sha256_file(path, hex, &size, err) < 0)
        return -1;
    art->name = strdup(name);
    art->file = strdup(file);
    art->format = strdup(format);
    art->sha256 = strdup(hex);
    art->size = size;
    if (!art->name || !art->file || !art->format || !art->sha256) {
        free(art->name);
        free(art->file);
        free(art->format);
        free(art->sha256);
        memset(art, 0, sizeof(*art));
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    return 0;
}
