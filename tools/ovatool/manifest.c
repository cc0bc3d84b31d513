/* manifest.c - OVF manifests (.mf) and certificates (.cert): parsing,
 * streaming digests, signature and chain checks, signing.  OpenSSL does the
 * cryptography. */
#include "ovf.h"

#include <ctype.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MF_MAX_ENTRIES 4096

static const EVP_MD *digest_md(enum ovf_digest alg)
{
    switch (alg) {
    case OVF_SHA1: return EVP_sha1();
    case OVF_SHA512: return EVP_sha512();
    default: return EVP_sha256();
    }
}

const char *digest_name(enum ovf_digest alg)
{
    return alg == OVF_SHA1 ? "SHA1" : alg == OVF_SHA512 ? "SHA512" : "SHA256";
}

static size_t digest_hexlen(enum ovf_digest alg)
{
    return alg == OVF_SHA1 ? 40 : alg == OVF_SHA512 ? 128 : 64;
}

struct digest_ctx {
    EVP_MD_CTX *md;
};

struct digest_ctx *digest_new(enum ovf_digest alg)
{
    struct digest_ctx *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    d->md = EVP_MD_CTX_new();
    if (!d->md || !EVP_DigestInit_ex(d->md, digest_md(alg), NULL)) {
        EVP_MD_CTX_free(d->md);
        free(d);
        return NULL;
    }
    return d;
}

void digest_update(struct digest_ctx *d, const void *buf, size_t len)
{
    EVP_DigestUpdate(d->md, buf, len);
}

void digest_final_hex(struct digest_ctx *d, char hex[129])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(d->md, md, &n);
    for (unsigned i = 0; i < n; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
    hex[2 * n] = 0;
    EVP_MD_CTX_free(d->md);
    free(d);
}

/* Parse one manifest line; 0 ok, -1 malformed. */
static int mf_line(const char *line, struct mf_entry *e)
{
    const char *p = line;
    if (!strncasecmp(p, "SHA1", 4) && p[4] != '2' && p[4] != '5') {
        e->alg = OVF_SHA1; p += 4;
    } else if (!strncasecmp(p, "SHA256", 6)) {
        e->alg = OVF_SHA256; p += 6;
    } else if (!strncasecmp(p, "SHA512", 6)) {
        e->alg = OVF_SHA512; p += 6;
    } else {
        return -1;
    }
    while (*p == ' ')
        p++;
    if (*p++ != '(')
        return -1;
    const char *close = strstr(p, ")");
    /* the file name runs to the last ")" before "=" */
    const char *eq = strchr(p, '=');
    if (!close || !eq)
        return -1;
    for (const char *q = close; q && q < eq; q = strstr(q + 1, ")"))
        close = q;
    if (close > eq)
        return -1;
    e->file = strndup(p, (size_t)(close - p));
    p = eq + 1;
    while (*p == ' ')
        p++;
    size_t n = 0;
    while (isxdigit((unsigned char)p[n]) && n < 128) {
        e->hex[n] = (char)tolower((unsigned char)p[n]);
        n++;
    }
    e->hex[n] = 0;
    while (p[n] == ' ' || p[n] == '\r')
        n++;
    if (p[n] || n == 0 || strlen(e->hex) != digest_hexlen(e->alg)) {
        free(e->file);
        e->file = NULL;
        return -1;
    }
    return 0;
}

int mf_parse(const char *buf, size_t len, const char *name, struct manifest *m,
             char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    size_t lineno = 0;
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        lineno++;
        char *line = strndup(p, l);
        p += l + (nl ? 1 : 0);
        if (!line)
            return -1;
        size_t ll = strlen(line);
        while (ll && (line[ll - 1] == '\r' || line[ll - 1] == ' '))
            line[--ll] = 0;
        if (!ll) {
            free(line);
            continue;
        }
        struct mf_entry e = { 0 };
        int r = mf_line(line, &e);
        free(line);
        if (r < 0 || m->n >= MF_MAX_ENTRIES) {
            snprintf(err, errlen, "%s: line %zu: expected 'SHA256(file)= hex' (SHA1, SHA256 or SHA512)",
                     name, lineno);
            mf_free(m);
            return -1;
        }
        struct mf_entry *nv = realloc(m->v, (m->n + 1) * sizeof *nv);
        if (!nv) {
            free(e.file);
            mf_free(m);
            return -1;
        }
        m->v = nv;
        m->v[m->n++] = e;
    }
    return 0;
}

void mf_free(struct manifest *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->v[i].file);
    free(m->v);
    memset(m, 0, sizeof *m);
}

const struct mf_entry *mf_find(const struct manifest *m, const char *file)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->v[i].file, file))
            return &m->v[i];
    return NULL;
}

static int hex_to_bin(const char *hex, size_t hexlen, unsigned char *out, size_t max)
{
    if (hexlen % 2 || hexlen / 2 > max)
        return -1;
    for (size_t i = 0; i < hexlen / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    return (int)(hexlen / 2);
}

static void cert_detail(struct cert_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void cert_detail(struct cert_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->detail, sizeof res->detail, fmt, ap);
    va_end(ap);
}

/* Check the certificate chain of `leaf` (+ extra certs) against `cafile`. */
static void cert_check_chain(X509 *leaf, STACK_OF(X509) *extra, const char *cafile,
                             struct cert_result *res)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    res->chain_checked = true;
    if (store && ctx && X509_STORE_load_file(store, cafile) == 1 &&
        X509_STORE_CTX_init(ctx, store, leaf, extra) == 1) {
        res->chain_trusted = X509_verify_cert(ctx) == 1;
        if (!res->chain_trusted)
            cert_detail(res, "certificate chain not trusted: %s",
                        X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    } else {
        cert_detail(res, "cannot load CA file %s", cafile);
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
}

int cert_verify(const char *cert, size_t cert_len, const char *mf, size_t mf_len,
                const char *mf_name, const char *cafile, struct cert_result *res)
{
    memset(res, 0, sizeof *res);
    res->present = true;
    struct mf_entry sig = { 0 };
    const char *nl = memchr(cert, '\n', cert_len);
    char *first = strndup(cert, nl ? (size_t)(nl - cert) : cert_len);
    /* The signature line has the manifest's shape, but a longer hex value. */
    const char *eq = first ? strchr(first, '=') : NULL;
    char *open = first ? strchr(first, '(') : NULL;
    if (!eq || !open) {
        cert_detail(res, "first line is not 'SHA256(%s)= signature'", mf_name);
        free(first);
        return -1;
    }
    sig.alg = !strncasecmp(first, "SHA1", 4) && first[4] == '(' ? OVF_SHA1
              : !strncasecmp(first, "SHA512", 6) ? OVF_SHA512 : OVF_SHA256;
    const char *hex = eq + 1;
    while (*hex == ' ')
        hex++;
    size_t hexlen = strspn(hex, "0123456789abcdefABCDEF");
    unsigned char sigbin[1024];
    int siglen = hex_to_bin(hex, hexlen, sigbin, sizeof sigbin);
    free(first);
    if (siglen <= 0) {
        cert_detail(res, "signature is not hexadecimal or longer than 8192 bits");
        return -1;
    }
    BIO *bio = BIO_new_mem_buf(cert, (int)cert_len);
    X509 *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    STACK_OF(X509) *extra = sk_X509_new_null();
    X509 *more;
    while ((more = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
        sk_X509_push(extra, more);
    ERR_clear_error();
    BIO_free(bio);
    if (!leaf) {
        cert_detail(res, "no PEM certificate found");
        sk_X509_pop_free(extra, X509_free);
        return -1;
    }
    X509_NAME_oneline(X509_get_subject_name(leaf), res->signer, sizeof res->signer);
    EVP_PKEY *pk = X509_get_pubkey(leaf);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (pk && md && EVP_DigestVerifyInit(md, NULL, digest_md(sig.alg), NULL, pk) == 1 &&
        EVP_DigestVerify(md, sigbin, (size_t)siglen, (const unsigned char *)mf, mf_len) == 1)
        res->signature_ok = true;
    else
        cert_detail(res, "signature over %s does not verify with the certificate's key", mf_name);
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    if (cafile)
        cert_check_chain(leaf, extra, cafile, res);
    X509_free(leaf);
    sk_X509_pop_free(extra, X509_free);
    return 0;
}

static char *read_small_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = 0;
    *len = n;
    return buf;
}

char *cert_sign(const char *mf, size_t mf_len, const char *mf_name, enum ovf_digest alg,
                const char *keyfile, const char *certfile, char *err, size_t errlen)
{
    FILE *kf = fopen(keyfile, "r");
    EVP_PKEY *pk = kf ? PEM_read_PrivateKey(kf, NULL, NULL, NULL) : NULL;
    if (kf)
        fclose(kf);
    if (!pk) {
        snprintf(err, errlen, "%s: cannot read a PEM private key", keyfile);
        return NULL;
    }
    size_t certlen;
    char *certpem = read_small_file(certfile, &certlen);
    if (!certpem || !strstr(certpem, "-----BEGIN CERTIFICATE-----")) {
        snprintf(err, errlen, "%s: cannot read a PEM certificate", certfile);
        EVP_PKEY_free(pk);
        free(certpem);
        return NULL;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    char *out = NULL;
    if (md && EVP_DigestSignInit(md, NULL, digest_md(alg), NULL, pk) == 1 &&
        EVP_DigestSign(md, sig, &siglen, (const unsigned char *)mf, mf_len) == 1) {
        size_t cap = strlen(mf_name) + 2 * siglen + certlen + 64;
        out = malloc(cap);
        if (out) {
            int n = snprintf(out, cap, "%s(%s)= ", digest_name(alg), mf_name);
            for (size_t i = 0; i < siglen; i++)
                n += snprintf(out + n, cap - (size_t)n, "%02x", sig[i]);
            snprintf(out + n, cap - (size_t)n, "\n%s", certpem);
        }
    } else {
        snprintf(err, errlen, "%s: signing the manifest failed", keyfile);
    }
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    free(certpem);
    return out;
}
