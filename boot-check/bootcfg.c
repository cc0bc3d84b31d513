/* bootcfg.c - parsers for grub.cfg, BLS entries and extlinux.conf (see
 * bootcfg.h); kept apart from discover.c so they can be fuzzed on their own. */
#include "bootcfg.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *bootcfg_skip_ws(char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Copies the next word (quotes stripped) into out; returns the rest. */
static char *disc_word(char *p, char *out, size_t size)
{
    size_t n = 0;
    p = bootcfg_skip_ws(p);
    char q = (*p == '\'' || *p == '"') ? *p++ : 0;
    while (*p && *p != '\n' && (q ? *p != q : (*p != ' ' && *p != '\t'))) {
        if (n + 1 < size)
            out[n++] = *p;
        p++;
    }
    if (q && *p == q)
        p++;
    out[n] = 0;
    return p;
}

/* Kernel arguments from a grub line: drop $variables grub would expand to
 * things we cannot know (vt_handoff, kernelopts handled by BLS). */
static void disc_args(const char *src, char *out, size_t size)
{
    char buf[2048], w[512];
    snprintf(buf, sizeof(buf), "%s", src);
    size_t n = 0;
    out[0] = 0;
    for (char *p = buf; *(p = bootcfg_skip_ws(p)) && *p != '\n';) {
        p = disc_word(p, w, sizeof(w));
        if (w[0] == '$' || !w[0])
            continue;
        n += (size_t)snprintf(out + n, n < size ? size - n : 0, "%s%s", n ? " " : "", w);
    }
}

/* grub.cfg: numbered top-level menuentries (a submenu counts as one entry
 * and "N>M" descends into it); `set default` by number or title. */
int bootcfg_grub(char *cfg, struct bootcfg_entry *e)
{
    char def[256] = "0", w[512];
    for (char *l = cfg; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char *p = bootcfg_skip_ws(l);
        if (!strncmp(p, "set default=", 12)) {
            disc_word(p + 12, def, sizeof(def));
            break;
        }
    }
    if (!strcmp(def, "saved") || !strncmp(def, "${", 2))
        snprintf(def, sizeof(def), "0");
    int want = isdigit((unsigned char)def[0]) ? atoi(def) : -1;
    const char *sub = strchr(def, '>');
    int want_sub = sub ? atoi(sub + 1) : -1;
    int idx = -1, depth = 0, sub_idx = -1, in_sub = 0;
    bool in_entry = false;
    for (char *l = cfg; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char *p = bootcfg_skip_ws(l);
        if (!strncmp(p, "submenu ", 8) && depth == 0) {
            idx++;
            in_sub = 1;
            sub_idx = -1;
        } else if (!strncmp(p, "menuentry ", 10)) {
            if (depth == 0)
                idx++;
            else if (in_sub)
                sub_idx++;
            disc_word(p + 10, w, sizeof(w));
            bool hit = depth == 0 ? (want >= 0 ? idx == want : !strcmp(w, def)) && want_sub < 0
                                  : in_sub && idx == want && sub_idx == want_sub;
            if (hit) {
                in_entry = true;
                snprintf(e->title, sizeof(e->title), "%.255s", w);
            }
        } else if (in_entry && (!strncmp(p, "linux", 5))) {
            p += strcspn(p, " \t\n");
            p = disc_word(p, e->linux_path, sizeof(e->linux_path));
            char *nl = strchr(p, '\n');
            if (nl)
                *nl = 0;
            disc_args(p, e->args, sizeof(e->args));
            if (nl)
                *nl = '\n';
        } else if (in_entry && !strncmp(p, "initrd", 6)) {
            p += strcspn(p, " \t\n");
            disc_word(p, e->initrd_path, sizeof(e->initrd_path));
        }
        if (strchr(p, '{') && (!strncmp(p, "menuentry", 9) || !strncmp(p, "submenu", 7)))
            depth++;
        else if (*p == '}' && depth > 0) {
            depth--;
            if (in_entry && e->linux_path[0])
                return 0;
            in_entry = false;
            if (depth == 0)
                in_sub = 0;
        }
    }
    return e->linux_path[0] ? 0 : -1;
}

/* extlinux.conf: "default LABEL", then "label X" blocks with kernel/linux,
 * initrd and append (an "initrd=" in append counts too). */
int bootcfg_extlinux(char *cfg, struct bootcfg_entry *e)
{
    char def[256] = "", cur[256] = "", key[32];
    for (char *l = cfg; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char *p = disc_word(l, key, sizeof(key));
        for (char *k = key; *k; k++)
            *k = (char)tolower((unsigned char)*k);
        char val[2048];
        char *nl = strchr(p, '\n');
        size_t vl = nl ? (size_t)(nl - p) : strlen(p);
        if (vl >= sizeof(val))
            vl = sizeof(val) - 1;
        memcpy(val, bootcfg_skip_ws(p), vl - (size_t)(bootcfg_skip_ws(p) - p));
        val[vl - (size_t)(bootcfg_skip_ws(p) - p)] = 0;
        if (!strcmp(key, "default") && !def[0])
            snprintf(def, sizeof(def), "%.255s", val);
        else if (!strcmp(key, "label")) {
            if (e->linux_path[0] && (!def[0] || !strcmp(cur, def)))
                return 0;
            snprintf(cur, sizeof(cur), "%.255s", val);
            e->linux_path[0] = e->initrd_path[0] = e->args[0] = 0;
        } else if (!strcmp(key, "kernel") || !strcmp(key, "linux"))
            disc_word(val, e->linux_path, sizeof(e->linux_path));
        else if (!strcmp(key, "initrd"))
            disc_word(val, e->initrd_path, sizeof(e->initrd_path));
        else if (!strcmp(key, "append"))
            snprintf(e->args, sizeof(e->args), "%s", val);
    }
    snprintf(e->title, sizeof(e->title), "%s", cur);
    return e->linux_path[0] && (!def[0] || !strcmp(cur, def)) ? 0 : -1;
}

/* BLS entry: "linux", "initrd", "options", "title" keys. */
int bootcfg_bls(char *cfg, struct bootcfg_entry *e)
{
    char key[32];
    for (char *l = cfg; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char *p = disc_word(l, key, sizeof(key));
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        if (!strcmp(key, "linux"))
            disc_word(p, e->linux_path, sizeof(e->linux_path));
        else if (!strcmp(key, "initrd") && !e->initrd_path[0])
            disc_word(p, e->initrd_path, sizeof(e->initrd_path));
        else if (!strcmp(key, "options"))
            disc_args(p, e->args, sizeof(e->args));
        else if (!strcmp(key, "title"))
            snprintf(e->title, sizeof(e->title), "%s", bootcfg_skip_ws(p));
        if (nl)
            *nl = '\n';
    }
    return e->linux_path[0] ? 0 : -1;
}

