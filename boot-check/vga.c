/* vga.c - the guest's VGA text screen under qemu, for firmware boots.
 *
 * What a BIOS, a boot loader or a kernel without console=ttyS0 shows goes
 * to the screen, not the serial port: "Boot failed: not a bootable disk",
 * "grub rescue>", or a getty's "login:" on tty1.  In text mode the screen is
 * 80x25 character/attribute pairs at guest physical 0xb8000, so once a
 * second vdboot asks qemu's human monitor (a Unix socket) to `pmemsave`
 * the 32 KiB text window there to a file (Linux's vgacon scrolls by moving
 * the display start through it, so the visible rows wander), and feeds
 * every 80-column row that changed, as a line,
 * to a second console watcher: the same prompt regex and panic marks as the
 * serial console.  A guest that switches to a graphical framebuffer (UEFI's
 * GOP, a DRM driver) leaves text mode and is not seen here.
 * The built-in VMM's firmware boots read the same window straight from
 * guest RAM (vga_poll_cells: no VGA device is modelled, so the text a
 * guest writes there is plain memory). */
#include "vga.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define VGA_POLL_SECONDS 1.0
#define VGA_PROMPT "(qemu) "

void vga_init(struct vga_screen *v, const char *dir)
{
    memset(v, 0, sizeof(*v));
    v->mon_fd = -1;
    snprintf(v->mon_path, sizeof(v->mon_path), "%s/monitor.sock", dir);
    snprintf(v->dump_path, sizeof(v->dump_path), "%s/screen.bin", dir);
    v->next_poll = con_now() + VGA_POLL_SECONDS;
}

void vga_close(struct vga_screen *v)
{
    if (v->mon_fd >= 0)
        close(v->mon_fd);
    v->mon_fd = -1;
    if (v->dump_path[0])
        unlink(v->dump_path);
    if (v->mon_path[0])
        unlink(v->mon_path);   /* qemu, killed, leaves its socket behind */
}

/* Reads from the monitor until its prompt, or 2 s pass. */
static int vga_wait_prompt(struct vga_screen *v)
{
    char buf[512];
    size_t have = 0;
    double end = con_now() + 2.0;
    while (con_now() < end) {
        struct pollfd p = { v->mon_fd, POLLIN, 0 };
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t n = read(v->mon_fd, buf + have, sizeof(buf) - 1 - have);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = 0;
        if (strstr(buf, VGA_PROMPT))
            return 0;
        if (have > sizeof(buf) / 2) {   /* keep the tail, where the prompt comes */
            memmove(buf, buf + have - 16, 16);
            have = 16;
        }
    }
    return -1;
}

static int vga_connect(struct vga_screen *v)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(v->mon_path) >= sizeof(a.sun_path))
        return -1;
    memcpy(a.sun_path, v->mon_path, strlen(v->mon_path) + 1);
    v->mon_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (v->mon_fd < 0)
        return -1;
    if (connect(v->mon_fd, (struct sockaddr *)&a, sizeof(a)) < 0 || vga_wait_prompt(v) < 0) {
        close(v->mon_fd);
        v->mon_fd = -1;
        return -1;
    }
    return 0;
}

/* One row as text: the character bytes, trailing blanks dropped. */
static void vga_row(const uint8_t *cells, char *out)
{
    int n = 0;
    for (int i = 0; i < VGA_COLS; i++) {
        uint8_t ch = cells[2 * i];
        out[n++] = ch >= 0x20 && ch < 0x7f ? (char)ch : ' ';
    }
    while (n && out[n - 1] == ' ')
        n--;
    out[n] = 0;
}

static enum con_event vga_feed(struct vga_screen *v, const uint8_t *cells, struct console *screen);

enum con_event vga_poll(struct vga_screen *v, struct console *screen)
{
    double now = con_now();
    if (now < v->next_poll)
        return CON_NONE;
    v->next_poll = now + VGA_POLL_SECONDS;
    if (v->mon_fd < 0 && vga_connect(v) < 0)
        return CON_NONE;   /* qemu not listening yet: next second */
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "pmemsave 0x%x %d \"%s\"\n", VGA_TEXT_BASE, VGA_TEXT_BYTES,
             v->dump_path);
    if (send(v->mon_fd, cmd, strlen(cmd), MSG_NOSIGNAL) < 0 || vga_wait_prompt(v) < 0) {
        close(v->mon_fd);
        v->mon_fd = -1;
        return CON_NONE;
    }
    uint8_t cells[VGA_TEXT_BYTES];
    FILE *f = fopen(v->dump_path, "rb");
    size_t got = f ? fread(cells, 1, sizeof(cells), f) : 0;
    if (f)
        fclose(f);
    if (got != sizeof(cells))
        return CON_NONE;
    return vga_feed(v, cells, screen);
}

void vga_init_mem(struct vga_screen *v)
{
    memset(v, 0, sizeof(*v));
    v->mon_fd = -1;
    v->next_poll = con_now() + VGA_POLL_SECONDS;
}

enum con_event vga_poll_cells(struct vga_screen *v, const uint8_t *cells, struct console *screen)
{
    double now = con_now();
    if (now < v->next_poll)
        return CON_NONE;
    v->next_poll = now + VGA_POLL_SECONDS;
    return vga_feed(v, cells, screen);
}

/* Feeds each row that changed since the last look, as a line. */
static enum con_event vga_feed(struct vga_screen *v, const uint8_t *cells, struct console *screen)
{
    enum con_event ev = CON_NONE;
    for (int r = 0; r < VGA_ROWS && ev == CON_NONE; r++) {
        char row[VGA_COLS + 1];
        vga_row(cells + r * VGA_COLS * 2, row);
        if (!strcmp(row, v->rows[r]))
            continue;
        memcpy(v->rows[r], row, sizeof(row));
        if (!row[0])
            continue;
        v->seen_text = true;
        for (const char *p = row; *p && ev == CON_NONE; p++)
            ev = console_feed(screen, (uint8_t)*p);
        if (ev == CON_NONE)
            ev = console_feed(screen, '\n');
    }
    return ev;
}
