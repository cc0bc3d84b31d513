/* formats.c - the format names users type: canonical names, aliases,
 * file name extensions and what each format can do.
 *
 * There is one table, the driver registry (formats/drivers.c): every row
 * here is read from a driver's .name, .aliases, .extensions and
 * capabilities, so a new driver shows up in `-O` lists, extension guessing
 * and help texts without a second list to keep in step.
 */
#include "vd-driver.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define VD_MAX_FORMATS 32

static vd_format_desc vd_format_table[VD_MAX_FORMATS];
static const char *vd_format_name_list[VD_MAX_FORMATS + 1];
static size_t vd_format_count;
static pthread_once_t vd_format_once = PTHREAD_ONCE_INIT;

static void vd_format_build(void)
{
    size_t n = 0;
    for (size_t i = 0; vd_drivers[i] && n < VD_MAX_FORMATS; i++, n++) {
        const struct vd_driver *d = vd_drivers[i];
        vd_format_table[n] = (vd_format_desc){
            .name = d->name,
            .description = d->description,
            .aliases = d->aliases,
            .extensions = d->extensions,
            .can_create = d->create && d->can_write != VD_CAN_NONE,
            .can_write = d->can_write != VD_CAN_NONE,
            .can_probe = d->probe != NULL,
        };
        vd_format_name_list[n] = d->name;
    }
    vd_format_name_list[n] = NULL;
    vd_format_count = n;
}

const vd_format_desc *vd_formats(size_t *n)
{
    pthread_once(&vd_format_once, vd_format_build);
    if (n)
        *n = vd_format_count;
    return vd_format_table;
}

const vd_format_desc *vd_format_lookup(const char *name)
{
    size_t n;
    const vd_format_desc *t = vd_formats(&n);
    if (!name)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(t[i].name, name))
            return &t[i];
        for (const char *const *a = t[i].aliases; a && *a; a++)
            if (!strcmp(*a, name))
                return &t[i];
    }
    return NULL;
}

const struct vd_driver *vd_find_driver(const char *name)
{
    const vd_format_desc *f = vd_format_lookup(name);
    if (!f)
        return NULL;
    for (size_t i = 0; vd_drivers[i]; i++)
        if (vd_drivers[i]->name == f->name)
            return vd_drivers[i];
    return NULL;
}

const char *const *vd_format_names(void)
{
    vd_formats(NULL);
    return vd_format_name_list;
}

const char *vd_format_from_extension(const char *path)
{
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    /* "dir/.hidden" and "name." have no extension */
    if (!dot || (slash && dot < slash) || dot == path || (slash && dot == slash + 1) ||
        !dot[1])
        return NULL;
    dot++;
    size_t n;
    const vd_format_desc *t = vd_formats(&n);
    for (size_t i = 0; i < n; i++)
        for (const char *const *e = t[i].extensions; e && *e; e++)
            if (!strcasecmp(dot, *e))
                return t[i].name;
    return NULL;
}

bool vd_format_can_create(const char *format)
{
    const vd_format_desc *f = vd_format_lookup(format);
    return f && f->can_create;
}
