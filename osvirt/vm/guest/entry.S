/* The demo guest's CPL0 part: entered by the host in 64-bit mode with the
 * GDT, TSS and page tables already set (KVM_SET_SREGS), interrupts off. It
 * calls setup() (IDT, PIC, syscall MSRs) and drops to CPL3 at user_main with
 * interrupts on (port I/O there goes through the TSS's I/O bitmap: kvm_pvm
 * drops IOPL). Under kvm_pvm each privileged instruction here is a trip
 * through the hypervisor: keep this part short. No int3, xrstor or
 * cmpxchg16b: kvm_pvm ends the guest on them. */
#include "layout.h"

    .section .text.entry, "ax"
    .globl _start
_start:
    call setup
    pushq $SEL_UDATA           /* ss */
    pushq $GUEST_USTACK_TOP    /* rsp */
    pushq $0x3202              /* rflags: IOPL 3, IF, the reserved bit 1 */
    pushq $SEL_UCODE           /* cs */
    leaq user_main(%rip), %rax
    pushq %rax                 /* rip */
    iretq

    .text
/* Exceptions: vector, error code and rip to the mailbox, then an OUT the host stops on. */
.macro exception vec, has_error
    .globl exception_\vec
exception_\vec:
    .if \has_error == 0
    pushq $0
    .endif
    pushq $\vec
    jmp exception_common
.endm
exception 0, 0
exception 1, 0
exception 2, 0
exception 3, 0
exception 4, 0
exception 5, 0
exception 6, 0
exception 7, 0
exception 8, 1
exception 9, 0
exception 10, 1
exception 11, 1
exception 12, 1
exception 13, 1
exception 14, 1
exception 15, 0
exception 16, 0
exception 17, 1
exception 18, 0
exception 19, 0

exception_common:
    popq %rax
    movq %rax, GUEST_MAILBOX + MB_FAULT_VECTOR
    popq %rax
    movq %rax, GUEST_MAILBOX + MB_FAULT_ERROR
    movq (%rsp), %rax
    movq %rax, GUEST_MAILBOX + MB_FAULT_RIP
    movw $PORT_FAULT, %dx
1:  outb %al, %dx
    jmp 1b

/* IRQ 4, the UART: count it, read IIR (which clears a THRE interrupt), EOI the PIC. */
    .globl irq_uart
irq_uart:
    pushq %rax
    pushq %rdx
    incq GUEST_MAILBOX + MB_IRQ_COUNT
    movw $PORT_UART + 2, %dx
    inb %dx, %al
    movzbq %al, %rax
    movq %rax, GUEST_MAILBOX + MB_IIR_LAST
    movb $0x20, %al
    outb %al, $PORT_PIC1
    popq %rdx
    popq %rax
    iretq

/* Any other IRQ: EOI, nothing else. */
    .globl irq_other
irq_other:
    pushq %rax
    movb $0x20, %al
    outb %al, $PORT_PIC1
    popq %rax
    iretq

/* syscall from CPL3 (rcx: the return rip, r11: rflags; still on the user stack): rdi (at least 1)
 * iterations of the spin loop at CPL0, then back by iretq (kvm_pvm refuses sysretq with #GP). */
    .globl syscall_entry
syscall_entry:
    movq %rsp, %rdx
    movq %rdi, %rax
1:  dec %rax
    jnz 1b
    pushq $SEL_UDATA
    pushq %rdx
    pushq %r11
    pushq $SEL_UCODE
    pushq %rcx
    iretq
