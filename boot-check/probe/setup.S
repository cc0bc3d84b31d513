/* setup.S - the real-mode part of the probe bzImage: boot sector stub, the
 * Linux setup header (Documentation/arch/x86/boot.rst, protocol 2.15) and
 * the 16-bit entry a BIOS-style loader (qemu -kernel) jumps to.
 *
 * vdboot itself never runs this code: it reads the header and enters the
 * 64-bit entry directly, as it does for Linux.  qemu's option ROM enters at
 * setup+0x200 in real mode, so the 16-bit path below switches to protected
 * mode and jumps to code32_start, exactly like Linux's setup does. */

#define SETUP_SECTS 4           /* setup = boot sector + 4 sectors */
#define BOOT_CS 0x10
#define BOOT_DS 0x18
#define LOADED_HIGH 0x01
#define XLF_KERNEL_64 0x01

    .section .setup, "ax"
    .code16
    .globl _setup_start
_setup_start:
    /* The boot sector: a BIOS booting the file directly gets a halt. */
    cli
1:  hlt
    jmp 1b

    .org 0x1f1
setup_sects:    .byte SETUP_SECTS
root_flags:     .word 0
syssize:        .long _probe_syssize      /* 16-byte paragraphs, from probe.ld */
ram_size:       .word 0
vid_mode:       .word 0xffff              /* "normal" */
root_dev:       .word 0
boot_flag:      .word 0xaa55

    /* 0x200: the real-mode entry point (a 2-byte jump over the header) */
    .globl _start16
_start16:
    .byte 0xeb, start_of_setup - 1f
1:
header:         .ascii "HdrS"
version:        .word 0x020f
realmode_swtch: .long 0
start_sys_seg:  .word 0x1000
kernel_version: .word probe_version_str - 0x200
type_of_loader: .byte 0
loadflags:      .byte LOADED_HIGH
setup_move_size: .word 0x8000
code32_start:   .long 0x100000
ramdisk_image:  .long 0
ramdisk_size:   .long 0
bootsect_kludge: .long 0
heap_end_ptr:   .word 0
ext_loader_ver: .byte 0
ext_loader_type: .byte 0
cmd_line_ptr:   .long 0
initrd_addr_max: .long 0x7fffffff
kernel_alignment: .long 0x200000
relocatable_kernel: .byte 0               /* linked at 0x100000, not movable */
min_alignment:  .byte 21
xloadflags:     .word XLF_KERNEL_64       /* has the 64-bit entry at +0x200 */
cmdline_size:   .long 2047
hardware_subarch: .long 0
hardware_subarch_data: .quad 0
payload_offset: .long 0
payload_length: .long 0
setup_data:     .quad 0
pref_address:   .quad 0x100000
init_size:      .long _probe_init_size    /* image + bss + page tables */
handover_offset: .long 0
kernel_info_offset: .long 0

start_of_setup:
    cli
    cld
    /* The loader enters with CS = DS + 0x20; make CS = DS so that the link
     * offsets (setup linked at 0) address this code. */
    pushw %ds
    pushw $2f
    lretw
2:
    /* %esi = linear address of the setup = struct boot_params */
    xorl %esi, %esi
    movw %ds, %si
    shll $4, %esi
    leal gdt(%esi), %eax
    movl %eax, gdt_desc + 2
    movl code32_start, %eax
    movl %eax, far32
    lgdtl gdt_desc
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    /* DS still holds its real-mode cached base here, so far32 is reachable */
    ljmpl *far32

    .balign 8
gdt:
    .quad 0
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x10: 32-bit flat code */
    .quad 0x00cf92000000ffff        /* 0x18: flat data */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long 0
far32:
    .long 0
    .word BOOT_CS

probe_version_str:
    .asciz "vdisk-probe 1 (vdboot probe kernel)"

    .org (SETUP_SECTS + 1) * 512
