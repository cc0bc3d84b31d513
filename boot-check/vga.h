/* vga.h - the VGA text screen of a qemu guest, read through its monitor
 * (tcg.c, firmware boots). */
#ifndef VDBOOT_VGA_H
#define VDBOOT_VGA_H

#include <stdbool.h>

#include "console.h"

/* The whole 32 KiB text window, not just the 25 rows at its start: Linux's
 * vgacon scrolls by moving the display start within it. */
#define VGA_ROWS 204
#define VGA_COLS 80

struct vga_screen {
    int mon_fd;                /* qemu's human monitor, once it listens */
    char mon_path[256], dump_path[256];
    char rows[VGA_ROWS][VGA_COLS + 1];   /* the screen as last fed */
    double next_poll;
    bool seen_text;            /* anything ever on the screen */
};

/* Paths in `dir`: qemu gets -monitor unix:<mon_path>,server=on,wait=off. */
void vga_init(struct vga_screen *v, const char *dir);
/* At most once a second: dump the screen and feed changed rows to
 * `screen`; returns its event. */
enum con_event vga_poll(struct vga_screen *v, struct console *screen);
void vga_close(struct vga_screen *v);

#endif
