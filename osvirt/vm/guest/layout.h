/* The demo guest's ABI: where things are in guest physical memory, its
 * ports, selectors, and the mailbox the host gives it commands in. The one
 * source of these numbers: the guest's C and assembly include this file, and
 * osvirt.vm.guest reads its `#define NAME value` lines. */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

/* Guest physical memory (identity-mapped: virtual = physical) */
#define GUEST_GDT         0x1000
#define GUEST_IDT         0x2000
#define GUEST_TSS         0x10000   /* 0x68 bytes, then the I/O permission bitmap: every port allowed */
#define GUEST_MAILBOX     0x4000    /* struct of u64 at the MB_* offsets; text for the UART at +MB_TEXT */
#define GUEST_PML4        0x8000    /* the host's page tables: PML4, PDPT at +0x1000, 4 PDs at +0x2000 */
#define GUEST_KSTACK_TOP  0x20000   /* CPL0 stack (TSS rsp0): entry, interrupts, exceptions; above the TSS */
#define GUEST_USTACK_TOP  0x80000   /* CPL3 stack */
#define GUEST_CODE        0x100000  /* the binary is loaded here and entered at its first byte */
#define GUEST_TOUCH       0x400000  /* the first page CMD_TOUCH may write: below it, the guest's own */
#define GUEST_VIRTQ       0x30000   /* the virtio driver's rings and request header (virtio.h) */
#define GUEST_DMA         0x200000  /* the buffer virtio-blk reads sectors into */
#define GUEST_DMA_SIZE    0x100000
#define GUEST_MAPPED      0x100000000  /* the page tables map [0, 4 GiB) with 2 MiB pages */

/* Selectors of the host-written GDT */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x1b   /* 0x18 | RPL 3 */
#define SEL_UCODE 0x23   /* 0x20 | RPL 3 */
#define SEL_TSS   0x28

/* Ports (x86 I/O space): the guest's own protocol, and the PC devices it drives */
#define PORT_DOORBELL 0x510  /* out: the command is done, the next one please */
#define PORT_BENCH    0x511  /* out, forever: the bench row vm-exit-pio */
#define PORT_FAULT    0x512  /* out: an exception reached the guest's CPL0 handler (MB_FAULT_* say which) */
#define PORT_UART     0x3f8
#define PORT_I8042    0x64
#define PORT_RTC      0x70   /* the CMOS index port; its data port follows */
#define PORT_PIC1     0x20
#define UART_IRQ      4
#define IRQ_VECTOR0   0x20   /* the PIC's vector base: IRQ n arrives as 0x20 + n */

/* Mailbox: u64 fields at these offsets from GUEST_MAILBOX */
#define MB_CMD          0x00
#define MB_ARG0         0x08
#define MB_ARG1         0x10
#define MB_ARG2         0x18
#define MB_RESULT0      0x28
#define MB_RESULT1      0x30
#define MB_COUNTER      0x48  /* CMD_COUNT increments it forever */
#define MB_IRQ_COUNT    0x50  /* the UART interrupt handler's count */
#define MB_SHARED       0x58  /* a word both sides read and write */
#define MB_IIR_LAST     0x60  /* the IIR the handler read last */
#define MB_FAULT_VECTOR 0x68
#define MB_FAULT_RIP    0x70
#define MB_FAULT_ERROR  0x78
#define MB_TEXT         0x800 /* bytes CMD_UART_WRITE sends (up to 0x800) */

/* Commands (MB_CMD) */
#define CMD_NONE        0
#define CMD_SPIN        1   /* arg0 iterations of `dec; jnz` at CPL3 */
#define CMD_SPIN_CPL0   2   /* the same at CPL0 (a syscall: kvm_pvm refuses int n from CPL3 with #UD) */
#define CMD_UART_WRITE  3   /* arg0 bytes of MB_TEXT out to the UART's THR, one OUT each */
#define CMD_SHARED      4   /* result0 = the shared word; then shared = ~shared */
#define CMD_TOUCH       5   /* write byte arg2 to arg1 pages from gpa arg0 */
#define CMD_MMIO        6   /* result0 = 32-bit read at gpa arg0, then write arg1 there */
#define CMD_UART_IRQ    7   /* IER = THRE interrupt, arg0 bytes out, IER = 0; result0 = interrupts taken */
#define CMD_COUNT       8   /* counter++ until arg1 is set (the host pauses it meanwhile) */
#define CMD_BENCH_PIO   9   /* out PORT_BENCH forever */
#define CMD_BENCH_MMIO  10  /* 32-bit write to gpa arg0 forever */
#define CMD_PORT_IN     11  /* result0 = 8-bit IN from port arg0 */
#define CMD_RESET       12  /* 0xfe to the i8042's command port: the PC's reset */
#define CMD_SYSCALLS    13  /* arg0 round trips to CPL0 and back (syscall, one loop iteration, iretq) */
#define CMD_RTC         14  /* result0 = the CMOS clock's seconds, minutes, hours, day, month, year, century
                               registers (as the RTC gives them: BCD by default), a byte each from bit 0 */
#define CMD_VIRTIO_BLK  20  /* read arg1 sectors from 0 through the virtio-blk at gpa arg0, arg2 a request:
                               result0 = FNV-1a 64 of the bytes, result1 = requests not OK */
#define CMD_VIRTIO_CONSOLE 21  /* arg1 bytes of MB_TEXT through the virtio-console at gpa arg0, arg2 a
                                  buffer: result0 = buffers sent */

#endif
