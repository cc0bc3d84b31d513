/* ovf-parse.c - read an OVF 1.x / 2.x descriptor into struct ovf_appliance.
 *
 * libxml2 parses with network access off and without entity substitution or
 * DTD loading, so a hostile descriptor cannot read local files or explode
 * entities.  Elements are matched by local name so that OVF 1 and OVF 2
 * namespaces (and the rasd/sasd/epasd item flavours) read the same way. */
#include "ovf.h"

#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int ovf_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ovf_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static bool ovf_is(const xmlNode *n, const char *local)
{
    return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, local);
}

static xmlNode *ovf_child(const xmlNode *n, const char *local)
{
    for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (ovf_is(c, local))
            return c;
    return NULL;
}

/* Text of a child element, malloc'd, or NULL. */
static char *ovf_child_text(const xmlNode *n, const char *local)
{
    xmlNode *c = ovf_child(n, local);
    if (!c)
        return NULL;
    xmlChar *t = xmlNodeGetContent(c);
    char *r = t ? strdup((const char *)t) : NULL;
    xmlFree(t);
    return r;
}

/* Attribute by local name, any namespace (ovf:href and href alike). */
static char *ovf_attr(const xmlNode *n, const char *local)
{
    for (xmlAttr *a = n->properties; a; a = a->next)
        if (!strcmp((const char *)a->name, local)) {
            xmlChar *v = xmlNodeListGetString(n->doc, a->children, 1);
            char *r = v ? strdup((const char *)v) : strdup("");
            xmlFree(v);
            return r;
        }
    return NULL;
}

static uint64_t ovf_u64(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

/* A decimal count with nothing else (no sign, no overflow); false otherwise. */
static bool ovf_strict_u64(const char *s, uint64_t *v)
{
    uint64_t r = 0;
    while (s && (*s == ' ' || *s == '\t'))
        s++;
    if (!s || *s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++)
        if (__builtin_mul_overflow(r, 10, &r) || __builtin_add_overflow(r, (uint64_t)(*s - '0'), &r))
            return false;
    while (*s == ' ' || *s == '\t')
        s++;
    *v = r;
    return *s == 0;
}

/* "byte * 2^30", "GigaBytes", "MB", "byte" -> multiplier; 0 if unknown. */
static uint64_t ovf_units(const char *u)
{
    if (!u || !*u)
        return 1;
    const char *p = strstr(u, "2^");
    if (p) {
        unsigned e = (unsigned)strtoul(p + 2, NULL, 10);
        uint64_t base = strstr(u, "* 1024") ? 1024 : 1;
        return e < 63 ? (1ull << e) * base : 0;
    }
    if ((p = strstr(u, "10^"))) {
        unsigned e = (unsigned)strtoul(p + 3, NULL, 10);
        uint64_t r = 1;
        for (unsigned i = 0; i < e && r; i++)
            r = r > UINT64_MAX / 10 ? 0 : r * 10;
        return r;
    }
    if (!strcasecmp(u, "byte") || !strcasecmp(u, "bytes"))
        return 1;
    if (!strncasecmp(u, "kilo", 4) || !strcasecmp(u, "KB"))
        return 1ull << 10;
    if (!strncasecmp(u, "mega", 4) || !strcasecmp(u, "MB"))
        return 1ull << 20;
    if (!strncasecmp(u, "giga", 4) || !strcasecmp(u, "GB"))
        return 1ull << 30;
    if (!strncasecmp(u, "tera", 4) || !strcasecmp(u, "TB"))
        return 1ull << 40;
    return 0;
}

#define OVF_PUSH(arr, n, item) do {                                        \
        if ((n) >= OVF_MAX_ITEMS) return -1;                               \
        void *nv_ = realloc((arr), ((n) + 1) * sizeof *(arr));             \
        if (!nv_) return -1;                                               \
        (arr) = nv_;                                                       \
        (arr)[(n)++] = (item);                                             \
    } while (0)

static int ovf_read_references(const xmlNode *refs, struct ovf_appliance *a)
{
    for (xmlNode *c = refs->children; c; c = c->next) {
        if (!ovf_is(c, "File"))
            continue;
        char *size = ovf_attr(c, "size"), *chunk = ovf_attr(c, "chunkSize");
        struct ovf_file f = {
            .id = ovf_attr(c, "id"), .href = ovf_attr(c, "href"),
            .size = ovf_u64(size), .compression = ovf_attr(c, "compression"),
            .chunk_size = ovf_u64(chunk),
        };
        free(size);
        free(chunk);
        if (f.compression && (!*f.compression || !strcmp(f.compression, "identity"))) {
            free(f.compression);
            f.compression = NULL;
        }
        OVF_PUSH(a->files, a->n_files, f);
    }
    return 0;
}

static int ovf_read_disks(const xmlNode *sec, struct ovf_appliance *a)
{
    for (xmlNode *c = sec->children; c; c = c->next) {
        if (!ovf_is(c, "Disk"))
            continue;
        char *cap = ovf_attr(c, "capacity"), *units = ovf_attr(c, "capacityAllocationUnits");
        char *pop = ovf_attr(c, "populatedSize");
        uint64_t mul = ovf_units(units), capv = 0, bytes = 0;
        bool is_ref = cap && !strncmp(cap, "${", 2) && strchr(cap, '}');
        char why[512] = "";
        if (!mul)
            snprintf(why, sizeof why, "ovf:capacityAllocationUnits '%.100s' is not a unit "
                     "ovatool knows", units);
        else if (!is_ref && !ovf_strict_u64(cap, &capv))
            snprintf(why, sizeof why, "ovf:capacity '%.100s' is not a whole number",
                     cap ? cap : "(missing)");
        else if (!is_ref && (__builtin_mul_overflow(capv, mul, &bytes) || bytes > OVF_MAX_CAPACITY))
            snprintf(why, sizeof why, "ovf:capacity %s x %llu bytes is beyond the 1 EiB "
                     "limit (a mistake, not a disk)", cap, (unsigned long long)mul);
        struct ovf_disk d = {
            .id = ovf_attr(c, "diskId"), .file_ref = ovf_attr(c, "fileRef"),
            .capacity = why[0] ? 0 : bytes, .populated = ovf_u64(pop),
            .format = ovf_attr(c, "format"), .address = -1, .capacity_unit = mul,
            .capacity_error = why[0] ? strdup(why) : NULL,
            .capacity_units = units ? strdup(units) : NULL,
        };
        if (is_ref)
            d.capacity_ref = strndup(cap + 2, (size_t)(strchr(cap, '}') - cap - 2));
        free(cap); free(units); free(pop);
        OVF_PUSH(a->disks, a->n_disks, d);
    }
    return 0;
}

/* The disk a HostResource names: "ovf:/disk/ID", "/disk/ID" or "ovf:/file/ID". */
static struct ovf_disk *ovf_disk_for_resource(struct ovf_appliance *a, const char *res)
{
    if (!res)
        return NULL;
    const char *slash = strrchr(res, '/');
    const char *id = slash ? slash + 1 : res;
    for (size_t i = 0; i < a->n_disks; i++)
        if (a->disks[i].id && !strcmp(a->disks[i].id, id))
            return &a->disks[i];
    return NULL;
}

static int ovf_read_item(const xmlNode *it, struct ovf_appliance *a)
{
    char *type_s = ovf_child_text(it, "ResourceType");
    int type = type_s ? atoi(type_s) : 0;
    free(type_s);
    struct ovf_item rec = { .type = type, .subtype = ovf_child_text(it, "ResourceSubType"),
                            .name = ovf_child_text(it, "ElementName") };
    if (a->n_items >= OVF_MAX_ITEMS) {
        free(rec.subtype);
        free(rec.name);
        return -1;
    }
    OVF_PUSH(a->items, a->n_items, rec);
    char *qty = ovf_child_text(it, "VirtualQuantity");
    switch (type) {
    case 3:
        a->cpus = (unsigned)ovf_u64(qty);
        a->has_cpus = qty != NULL;
        break;
    case 4: {
        char *units = ovf_child_text(it, "AllocationUnits");
        uint64_t mul = ovf_units(units ? units : "byte * 2^20");
        free(units);
        uint64_t bytes;
        if (qty && mul && !__builtin_mul_overflow(ovf_u64(qty), mul, &bytes)) {
            a->memory_mib = bytes >> 20;
            a->has_memory = true;
        }
        break;
    }
    case 5: case 6: case 20: {
        struct ovf_controller c = { .instance_id = ovf_child_text(it, "InstanceID"),
                                    .resource_type = type,
                                    .subtype = ovf_child_text(it, "ResourceSubType") };
        free(qty);
        OVF_PUSH(a->ctrls, a->n_ctrls, c);
        return 0;
    }
    case 10: {
        struct ovf_nic n = { .network = ovf_child_text(it, "Connection"),
                             .model = ovf_child_text(it, "ResourceSubType") };
        free(qty);
        OVF_PUSH(a->nics, a->n_nics, n);
        return 0;
    }
    case 15: case 16: case 17: {      /* CD, DVD, disk drive */
        char *res = ovf_child_text(it, "HostResource");
        struct ovf_disk *d = ovf_disk_for_resource(a, res);
        free(res);
        if (d) {
            d->attached = true;
            d->cdrom = type != 17;
            free(d->parent);
            d->parent = ovf_child_text(it, "Parent");
            char *addr = ovf_child_text(it, "AddressOnParent");
            d->address = addr ? atoi(addr) : -1;
            free(addr);
        }
        break;
    }
    default:
        break;
    }
    free(qty);
    return 0;
}

/* Does an element with an ovf:configuration list apply to the chosen
 * deployment option?  Elements without the attribute apply to all. */
static bool ovf_in_config(const xmlNode *n, const struct ovf_appliance *a)
{
    char *cfg = ovf_attr(n, "configuration");
    if (!cfg)
        return true;
    bool in = false;
    for (char *save = NULL, *t = strtok_r(cfg, " ", &save); t && a->configuration;
         t = strtok_r(NULL, " ", &save))
        in = in || !strcmp(t, a->configuration);
    free(cfg);
    return in || !a->configuration;
}

static int ovf_read_hardware(const xmlNode *hw, struct ovf_appliance *a)
{
    for (xmlNode *c = hw->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || !ovf_in_config(c, a))
            continue;
        const char *n = (const char *)c->name;
        size_t l = strlen(n);
        if (l >= 4 && !strcmp(n + l - 4, "Item") && ovf_read_item(c, a) < 0)
            return -1;
        if (!strcmp(n, "System") && !a->system_type)
            a->system_type = ovf_child_text(c, "VirtualSystemType");
        /* VirtualBox puts EFI in vbox:Machine; VMware in vmw:Config (the
         * first one counts: a repeated one must not replace it). */
        if (!strcmp(n, "Config") && !a->firmware) {
            char *key = ovf_attr(c, "key"), *val = ovf_attr(c, "value");
            if (key && val && !strcmp(key, "firmware") && !strcmp(val, "efi")) {
                a->firmware = strdup("efi");
                a->firmware_src = 1;
            }
            free(key);
            free(val);
        }
    }
    return 0;
}

static void ovf_read_vbox_machine(const xmlNode *m, struct ovf_appliance *a)
{
    a->flavor = a->flavor ? a->flavor : strdup("virtualbox");
    a->has_vbox_machine = true;
    for (xmlNode *c = m->children; c; c = c->next) {
        if (ovf_is(c, "Hardware")) {
            xmlNode *fw = ovf_child(c, "Firmware");
            char *t = fw ? ovf_attr(fw, "type") : NULL;
            if (t && !strncasecmp(t, "EFI", 3) && !a->firmware) {
                a->firmware = strdup("efi");
                a->firmware_src = 2;
            }
            free(t);
        }
    }
}

/* First value wins (a VirtualSystemCollection holds several systems). */
static void ovf_keep(char **dst, char *v)
{
    if (*dst)
        free(v);
    else
        *dst = v;
}

static int ovf_read_system(const xmlNode *vs, struct ovf_appliance *a)
{
    ovf_keep(&a->name, ovf_child_text(vs, "Name"));
    ovf_keep(&a->name, ovf_attr(vs, "id"));
    for (xmlNode *c = vs->children; c; c = c->next) {
        if (ovf_is(c, "OperatingSystemSection")) {
            ovf_keep(&a->os_id, ovf_attr(c, "id"));
            ovf_keep(&a->os_desc, ovf_child_text(c, "Description"));
            ovf_keep(&a->os_type, ovf_child_text(c, "OSType"));
            ovf_keep(&a->os_type, ovf_attr(c, "osType"));
        } else if (ovf_is(c, "VirtualHardwareSection")) {
            if (ovf_read_hardware(c, a) < 0)
                return -1;
        } else if (ovf_is(c, "ProductSection")) {
            ovf_keep(&a->product, ovf_child_text(c, "Product"));
            ovf_keep(&a->vendor, ovf_child_text(c, "Vendor"));
            ovf_keep(&a->product_version, ovf_child_text(c, "Version"));
        } else if (ovf_is(c, "EulaSection")) {
            a->has_eula = true;
        } else if (ovf_is(c, "Machine")) {
            ovf_read_vbox_machine(c, a);
        }
    }
    return 0;
}

/* Disk capacities given as "${key}": the value of the ProductSection
 * property `key` (of the chosen configuration), in the disk's units. */
static void ovf_resolve_capacities(const xmlNode *vs, struct ovf_appliance *a)
{
    for (size_t i = 0; i < a->n_disks; i++) {
        struct ovf_disk *d = &a->disks[i];
        if (!d->capacity_ref || d->capacity)
            continue;
        for (xmlNode *p = vs->children; p; p = p->next) {
            if (!ovf_is(p, "ProductSection"))
                continue;
            for (xmlNode *q = p->children; q; q = q->next) {
                if (!ovf_is(q, "Property") || !ovf_in_config(q, a))
                    continue;
                char *key = ovf_attr(q, "key"), *val = ovf_attr(q, "value");
                uint64_t bytes;
                uint64_t v;
                if (key && val && !strcmp(key, d->capacity_ref) && d->capacity_unit) {
                    if (ovf_strict_u64(val, &v) &&
                        !__builtin_mul_overflow(v, d->capacity_unit, &bytes) &&
                        bytes <= OVF_MAX_CAPACITY) {
                        d->capacity = bytes;
                    } else if (!d->capacity_error) {
                        char why[300];
                        snprintf(why, sizeof why, "property %.64s = '%.64s' is not a capacity "
                                 "ovatool accepts (a whole number, at most 1 EiB)", key, val);
                        d->capacity_error = strdup(why);
                    }
                }
                free(key);
                free(val);
            }
        }
    }
}

static int ovf_read_envelope(const xmlNode *env, struct ovf_appliance *a)
{
    const char *ns = env->ns ? (const char *)env->ns->href : "";
    a->version = strstr(ns, "envelope/2") ? 2 : 1;
    for (xmlNs *n = env->nsDef; n; n = n->next) {
        const char *h = (const char *)n->href;
        if (strstr(h, "virtualbox.org") && !a->flavor)
            a->flavor = strdup("virtualbox");
        else if (strstr(h, "vmware.com/schema/ovf") && !a->flavor)
            a->flavor = strdup("vmware");
    }
    /* Sections first (disks before the hardware items that name them). */
    for (xmlNode *c = env->children; c; c = c->next) {
        if (ovf_is(c, "DeploymentOptionSection"))
            for (xmlNode *o = c->children; o; o = o->next) {
                if (!ovf_is(o, "Configuration"))
                    continue;
                char *def = ovf_attr(o, "default");
                if (!a->configuration || (def && !strcmp(def, "true"))) {
                    free(a->configuration);
                    a->configuration = ovf_attr(o, "id");
                }
                free(def);
            }
        if (ovf_is(c, "References") && ovf_read_references(c, a) < 0)
            return -1;
        if (ovf_is(c, "DiskSection") && ovf_read_disks(c, a) < 0)
            return -1;
        if (ovf_is(c, "NetworkSection"))
            for (xmlNode *n = c->children; n; n = n->next)
                if (ovf_is(n, "Network")) {
                    char *nm = ovf_attr(n, "name");
                    if (nm)
                        OVF_PUSH(a->networks, a->n_networks, nm);
                }
    }
    for (xmlNode *c = env->children; c; c = c->next) {
        if (ovf_is(c, "VirtualSystem") && ovf_read_system(c, a) < 0)
            return -1;
        if (ovf_is(c, "VirtualSystemCollection")) {
            ovf_keep(&a->name, ovf_attr(c, "id"));
            for (xmlNode *v = c->children; v; v = v->next)
                if (ovf_is(v, "VirtualSystem") && ovf_read_system(v, a) < 0)
                    return -1;
        }
    }
    if (!a->flavor)
        a->flavor = strdup("ovf");
    for (xmlNode *c = env->children; c; c = c->next) {
        if (ovf_is(c, "VirtualSystem"))
            ovf_resolve_capacities(c, a);
        if (ovf_is(c, "VirtualSystemCollection"))
            for (xmlNode *v = c->children; v; v = v->next)
                if (ovf_is(v, "VirtualSystem"))
                    ovf_resolve_capacities(v, a);
    }
    return 0;
}

int ovf_parse(const char *buf, size_t len, const char *name, struct ovf_appliance *a,
              char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    if (len > OVF_MAX_DESCRIPTOR)
        return ovf_fail(err, errlen, "%s: descriptor of %zu bytes is larger than the %u MiB limit",
                        name, len, OVF_MAX_DESCRIPTOR >> 20);
    /* No OVF declares a DTD or entities; one that does is crafted (entity
     * expansion, external files) and is not parsed at all. */
    const char *dt = memmem(buf, len, "<!DOCTYPE", 9);
    if (dt) {
        int line = 1;
        for (const char *p = buf; p < dt; p++)
            line += *p == '\n';
        return ovf_fail(err, errlen, "%s: line %d: the descriptor has a DOCTYPE; OVF "
                        "descriptors declare no DTD or entities: refused", name, line);
    }
    xmlDoc *doc = xmlReadMemory(buf, (int)len, name, NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc) {
        const xmlError *e = xmlGetLastError();
        char msg[256] = "";
        if (e && e->message) {
            snprintf(msg, sizeof msg, ": %s", e->message);
            msg[strcspn(msg, "\r\n")] = 0;
        }
        return ovf_fail(err, errlen, "%s: not well-formed XML%s (line %d)", name, msg,
                        e ? e->line : 0);
    }
    xmlNode *root = xmlDocGetRootElement(doc);
    int r = 0;
    if (doc->intSubset || doc->extSubset) {
        r = ovf_fail(err, errlen, "%s: the descriptor has a DOCTYPE; OVF descriptors declare "
                     "no DTD or entities: refused", name);
    } else if (!ovf_is(root, "Envelope")) {
        r = ovf_fail(err, errlen, "%s: root element is <%s>, not an OVF <Envelope>", name,
                     root ? (const char *)root->name : "(none)");
    } else if (ovf_read_envelope(root, a) < 0) {
        r = ovf_fail(err, errlen, "%s: descriptor too large or out of memory (more than %d items)",
                     name, OVF_MAX_ITEMS);
    } else {
        /* strip trailing newlines from messages above; validate references */
        for (size_t i = 0; i < a->n_disks && !r; i++) {
            if (a->disks[i].file_ref && !ovf_find_file(a, a->disks[i].file_ref))
                r = ovf_fail(err, errlen, "%s: disk %s names file '%s' that References does not list",
                             name, a->disks[i].id ? a->disks[i].id : "?", a->disks[i].file_ref);
        }
        for (size_t i = 0; i < a->n_files && !r; i++)
            if (!a->files[i].href)
                r = ovf_fail(err, errlen, "%s: File %s has no ovf:href", name,
                             a->files[i].id ? a->files[i].id : "?");
    }
    xmlFreeDoc(doc);
    if (r)
        ovf_free(a);
    return r;
}

const struct ovf_file *ovf_find_file(const struct ovf_appliance *a, const char *id)
{
    for (size_t i = 0; i < a->n_files; i++)
        if (a->files[i].id && !strcmp(a->files[i].id, id))
            return &a->files[i];
    return NULL;
}

bool ovf_href_is_plain(const char *h)
{
    return h && *h && !strchr(h, '/') && !strchr(h, '\\') && strcmp(h, "..") && strcmp(h, ".");
}

bool ovf_disk_is_cdrom(const struct ovf_disk *d)
{
    /* ECMA-119 is ISO 9660: VirtualBox names an attached ISO that way. */
    return d->cdrom || (d->format && strstr(d->format, "Ecma-119"));
}

bool ovf_disk_in_use(const struct ovf_appliance *a, const struct ovf_disk *d)
{
    if (d->attached)
        return true;
    for (size_t i = 0; i < a->n_disks; i++)
        if (a->disks[i].attached)
            return false;
    return true;
}

const struct ovf_controller *ovf_find_ctrl(const struct ovf_appliance *a, const char *id)
{
    for (size_t i = 0; id && i < a->n_ctrls; i++)
        if (a->ctrls[i].instance_id && !strcmp(a->ctrls[i].instance_id, id))
            return &a->ctrls[i];
    return NULL;
}

void ovf_free(struct ovf_appliance *a)
{
    free(a->name); free(a->os_id); free(a->os_desc); free(a->os_type); free(a->flavor);
    free(a->product); free(a->vendor); free(a->product_version); free(a->firmware);
    free(a->configuration);
    for (size_t i = 0; i < a->n_files; i++) {
        free(a->files[i].id); free(a->files[i].href); free(a->files[i].compression);
    }
    for (size_t i = 0; i < a->n_disks; i++) {
        free(a->disks[i].id); free(a->disks[i].file_ref); free(a->disks[i].format);
        free(a->disks[i].parent); free(a->disks[i].capacity_ref);
        free(a->disks[i].capacity_error); free(a->disks[i].capacity_units);
    }
    for (size_t i = 0; i < a->n_ctrls; i++) {
        free(a->ctrls[i].instance_id); free(a->ctrls[i].subtype);
    }
    for (size_t i = 0; i < a->n_nics; i++) {
        free(a->nics[i].network); free(a->nics[i].model);
    }
    for (size_t i = 0; i < a->n_networks; i++)
        free(a->networks[i]);
    for (size_t i = 0; i < a->n_items; i++) {
        free(a->items[i].subtype); free(a->items[i].name);
    }
    free(a->items); free(a->system_type);
    free(a->files); free(a->disks); free(a->ctrls); free(a->nics); free(a->networks);
    memset(a, 0, sizeof *a);
}
