/* head.S - the protected-mode entries of the probe kernel, loaded at
 * 0x100000 like Linux's.
 *
 *  +0x000  startup_32: 32-bit entry (code32_start), CS=0x10 flat, %esi =
 *          boot_params.  Builds an identity map of the low 4 GiB, enables
 *          long mode and falls into the 64-bit entry.
 *  +0x200  startup_64: 64-bit entry (boot protocol, XLF_KERNEL_64): paging
 *          on with an identity map, %rsi = boot_params.  vdboot enters here. */

    .section .head, "ax"
    .code32
    .globl startup_32
startup_32:
    cli
    cld
    movl $0x18, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs

    /* PML4[0] -> PDPT; PDPT[0..3] -> PD0..PD3; each PD maps 1 GiB in 2 MiB
     * pages.  The tables live in .pgtables, outside .bss, so that the
     * 64-bit entry may clear .bss without tearing down the live map. */
    movl $pgt_pml4, %edi
    xorl %eax, %eax
    movl $(6 * 4096 / 4), %ecx
    rep stosl
    movl $pgt_pdpt, %eax
    orl $0x3, %eax
    movl %eax, pgt_pml4
    movl $pgt_pd, %edx
    movl $pgt_pdpt, %edi
    movl $4, %ecx
1:  movl %edx, %eax
    orl $0x3, %eax
    movl %eax, (%edi)
    addl $8, %edi
    addl $4096, %edx
    loop 1b
    movl $pgt_pd, %edi
    movl $0x83, %eax                /* present, writable, 2 MiB page */
    xorl %edx, %edx                 /* high dword of each entry */
    movl $2048, %ecx
2:  movl %eax, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    adcl $0, %edx
    addl $8, %edi
    loop 2b

    movl %cr4, %eax
    orl $0x20, %eax                 /* PAE */
    movl %eax, %cr4
    movl $pgt_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx          /* EFER */
    rdmsr
    orl $0x100, %eax                /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax           /* PG | PE */
    movl %eax, %cr0
    lgdt gdt64_desc
    ljmp $0x20, $startup_64

    .balign 8
gdt64:
    .quad 0
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x10: 32-bit code */
    .quad 0x00cf92000000ffff        /* 0x18: data */
    .quad 0x00af9a000000ffff        /* 0x20: 64-bit code */
gdt64_end:
gdt64_desc:
    .word gdt64_end - gdt64 - 1
    .long gdt64

    .org 0x200
    .code64
    .globl startup_64
startup_64:
    cli
    cld
    movq %rsi, %r12                 /* boot_params, kept across the bss clear */
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb
    leaq stack_top(%rip), %rsp
    movq %r12, %rdi
    call probe_main
3:  cli
    hlt
    jmp 3b

    .section .bss
    .balign 16
stack:
    .skip 16384
stack_top:

    .section .pgtables, "aw", @nobits
    .balign 4096
    .globl pgt_pml4
pgt_pml4: .skip 4096
pgt_pdpt: .skip 4096
pgt_pd:   .skip 4 * 4096

    /* The AP trampoline, copied to 0x8000 by the probe and entered in real
     * mode by SIPI vector 0x08: count this CPU in, then halt. */
    .section .rodata
    .code16
    .globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    lock incw 0x8100
1:  hlt
    jmp 1b
ap_tramp_end:
    .code64

    /* #BP handler for the probe's int3 self-test: count and return. */
    .text
    .code64
    .globl probe_bp_handler
probe_bp_handler:
    lock incq probe_bp_count(%rip)
    iretq
