/* vga.h - the VGA text screen of a firmware boot's guest: read through
 * qemu's monitor (tcg.c), or from guest RAM by the built-in VMM. */
#ifndef VDBOOT_VGA_H
#define VDBOOT_VGA_H

#include <stdbool.h>
#include <stdint.h>

#include "console.h"

/* The whole 32 KiB text window, not just the 25 rows at its start: Linux's
 * vgacon scrolls by moving the display start within it. */
#define VGA_ROWS 204
#define VGA_COLS 80
#define VGA_TEXT_BASE 0xb8000
#define VGA_TEXT_BYTES (VGA_ROWS * VGA_COLS * 2)

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
/* The built-in VMM: no monitor, the caller hands a copy of the
 * VGA_TEXT_BYTES at VGA_TEXT_BASE; the same once-a-second feeding. */
void vga_init_mem(struct vga_screen *v);
enum con_event vga_poll_cells(struct vga_screen *v, const uint8_t *cells, struct console *screen);

#endif
