/* options.c - "key=val,key=val" create options, parsed once by the core. */
#include "vd-driver.h"
#include "vd-internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

struct vd_kv {
    char *key, *val;
    bool used;
};

struct vd_kvlist {
    struct vd_kv *v;
    size_t n, cap;
};

void vd_kvlist_free(vd_kvlist *kv)
{
    if (!kv)
        return;
    for (size_t i = 0; i < kv->n; i++) {
        free(kv->v[i].key);
        free(kv->v[i].val);
    }
    free(kv->v);
    free(kv);
}

/* Parse "a=1,b=2".  A value may contain ",," for a literal comma (qemu-img
 * convention). */
int vd_kvlist_parse(const char *s, vd_kvlist **out, vd_error *err)
{
    vd_kvlist *kv = calloc(1, sizeof *kv);
    if (!kv)
        return -ENOMEM;
    const char *p = s ? s : "";
    while (*p) {
        size_t cap = strlen(p) + 1;
        char *item = malloc(cap);
        if (!item) {
            vd_kvlist_free(kv);
            return -ENOMEM;
        }
        size_t n = 0;
        while (*p) {
            if (*p == ',' && p[1] == ',') {
                item[n++] = ',';
                p += 2;
                continue;
            }
            if (*p == ',')
                break;
            item[n++] = *p++;
        }
        item[n] = 0;
        if (*p == ',')
            p++;
        if (!n) {
            free(item);
            continue;
        }
        char *eq = strchr(item, '=');
        if (!eq || eq == item) {
            int r = vd_set_error(err, -EINVAL, "option '%s': expected key=value", item);
            free(item);
            vd_kvlist_free(kv);
            return r;
        }
        *eq = 0;
        if (VD_ARRAY_RESERVE(kv->v, kv->cap, kv->n + 1) < 0) {
            free(item);
            vd_kvlist_free(kv);
            return vd_set_error(err, -ENOMEM, "options: out of memory");
        }
        kv->v[kv->n].key = strdup(item);
        kv->v[kv->n].val = strdup(eq + 1);
        kv->v[kv->n].used = false;
        kv->n++;
        free(item);
    }
    *out = kv;
    return 0;
}

/* The first option no driver asked for, or NULL. */
const char *vd_kvlist_unused(vd_kvlist *kv)
{
    for (size_t i = 0; kv && i < kv->n; i++)
        if (!kv->v[i].used)
            return kv->v[i].key;
    return NULL;
}

bool vd_kvlist_any(vd_kvlist *kv)
{
    return kv && kv->n;
}

/* The first key that `known` (name-terminated, may be NULL) does not list. */
const char *vd_kvlist_first_not_in(vd_kvlist *kv, const vd_opt_desc *known)
{
    for (size_t i = 0; kv && i < kv->n; i++) {
        const vd_opt_desc *o = known;
        while (o && o->name && strcmp(o->name, kv->v[i].key))
            o++;
        if (!o || !o->name)
            return kv->v[i].key;
    }
    return NULL;
}

const char *vd_opt_str(vd_kvlist *kv, const char *key)
{
    const char *r = NULL;
    for (size_t i = 0; kv && i < kv->n; i++)
        if (!strcmp(kv->v[i].key, key)) {
            kv->v[i].used = true;
            r = kv->v[i].val;   /* the last one wins, as in qemu-img */
        }
    return r;
}

int vd_parse_size(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 0: break;
    case 'b': case 'B': end++; break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    case 'p': case 'P': shift = 50; end++; break;
    case 'e': case 'E': shift = 60; end++; break;
    default: return -EINVAL;
    }
    if ((*end == 'i' || *end == 'I') && shift && (end[1] == 'B' || end[1] == 'b'))
        end += 2;
    else if (shift && (*end == 'B' || *end == 'b'))
        end++;
    if (*end)
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *out = (uint64_t)v << shift;
    return 0;
}

int vd_opt_size(vd_kvlist *kv, const char *key, uint64_t def, uint64_t *out, vd_error *err)
{
    const char *s = vd_opt_str(kv, key);
    if (!s) {
        *out = def;
        return 0;
    }
    if (vd_parse_size(s, out) < 0)
        return vd_set_error(err, -EINVAL, "option %s: '%s' is not a size", key, s);
    return 0;
}

int vd_opt_uint(vd_kvlist *kv, const char *key, uint64_t def, uint64_t *out, vd_error *err)
{
    const char *s = vd_opt_str(kv, key);
    if (!s) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-')
        return vd_set_error(err, -EINVAL, "option %s: '%s' is not a number", key, s);
    *out = v;
    return 0;
}

int vd_opt_bool(vd_kvlist *kv, const char *key, bool def, bool *out, vd_error *err)
{
    const char *s = vd_opt_str(kv, key);
    if (!s) {
        *out = def;
        return 0;
    }
    if (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "1"))
        *out = true;
    else if (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "0"))
        *out = false;
    else
        return vd_set_error(err, -EINVAL, "option %s: '%s' is not on/off", key, s);
    return 0;
}
