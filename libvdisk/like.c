/* like.c - vd_create_options_like(): the create options that make a new
 * image "like" an existing one (its layout, its identity).
 *
 * A driver reports its header through `details` (vd_get_format_details)
 * and takes its layout through `create_opts`; most details that matter for
 * the layout carry the name of the create option that sets them (qcow2
 * compat, cluster_size, refcount_bits; vhd/vhdx subformat; vdi uuid), with
 * '-' where the option has '_'.  The few that are named otherwise are
 * mapped here, so that no caller has to read the create-help text. */
#include "vd-driver.h"

#include <errno.h>
#include <stdio.h>

struct like_ctx {
    const struct vd_driver *drv;   /* the format to create */
    unsigned what;
    char *out;
    size_t n, len;
    bool overflow;
    char uuid[64];                 /* the image's "uuid" detail, if any */
};

static bool like_has_option(const struct vd_driver *d, const char *key)
{
    for (const vd_opt_desc *o = d->create_opts; o && o->name; o++)
        if (!strcmp(o->name, key))
            return true;
    return false;
}

/* Append "key=val" when the target format takes `key`.  Values with a
 * comma are left out: they would need qemu's ",," escaping. */
static void like_add(struct like_ctx *c, const char *key, const char *val)
{
    if (!like_has_option(c->drv, key) || strchr(val, ','))
        return;
    char pat[96];
    snprintf(pat, sizeof pat, "%s=", key);
    for (const char *p = c->out; (p = strstr(p, pat)); p++)
        if (p == c->out || p[-1] == ',')
            return;                 /* already there */
    int w = snprintf(c->out + c->len, c->n - c->len, "%s%s=%s", c->len ? "," : "", key, val);
    if (w > 0 && (size_t)w < c->n - c->len)
        c->len += (size_t)w;
    else {
        c->out[c->len] = 0;
        c->overflow = true;
    }
}

static void like_detail(void *ctx, const char *key, const char *val)
{
    struct like_ctx *c = ctx;
    char k[64];
    snprintf(k, sizeof k, "%s", key);
    for (char *p = k; *p; p++)
        if (*p == '-')
            *p = '_';
    if (!strcmp(k, "uuid"))
        snprintf(c->uuid, sizeof c->uuid, "%s", val);
    if (!(c->what & VD_LIKE_LAYOUT))
        return;
    if (!strcmp(k, "create_type"))                           /* vmdk */
        like_add(c, "subformat", val);
    else if (!strcmp(k, "type") && !strcmp(val, "static"))   /* vdi */
        like_add(c, "static", "on");
    else if (strcmp(k, "preallocation") && strcmp(k, "backing_file") &&
             strcmp(k, "backing_fmt"))
        like_add(c, k, val);
}

int vd_create_options_like(vd_image *img, const char *format, unsigned what, char *buf,
                           size_t len, vd_error *err)
{
    const char *fmt = format ? format : img->drv->name;
    struct like_ctx c = { .drv = vd_find_driver(fmt), .what = what, .out = buf, .n = len };
    if (!len)
        return vd_set_error(err, -EINVAL, "vd_create_options_like: empty buffer");
    buf[0] = 0;
    if (!c.drv)
        return vd_set_error(err, -EINVAL, "unknown format '%s'", fmt);
    if ((what & VD_LIKE_LAYOUT) && c.drv != img->drv)
        return vd_set_error(err, -EINVAL, "%s: the layout of a %s image does not apply to "
                            "format %s", img->path, img->drv->name, fmt);
    vd_get_format_details(img, like_detail, &c);
    if ((what & VD_LIKE_LAYOUT) && img->cluster_size) {
        char v[32];
        snprintf(v, sizeof v, "%u", img->cluster_size);
        like_add(&c, "cluster_size", v);
    }
    if (what & VD_LIKE_UUID) {
        if (!c.uuid[0])
            return vd_set_error(err, -ENOTSUP, "%s (%s) has no image UUID", img->path,
                                img->drv->name);
        if (!like_has_option(c.drv, "uuid"))
            return vd_set_error(err, -ENOTSUP, "format %s cannot store an image UUID", fmt);
        like_add(&c, "uuid", c.uuid);
    }
    if (c.overflow)
        return vd_set_error(err, -ENAMETOOLONG, "%s: create options longer than %zu bytes",
                            img->path, len);
    return 0;
}
