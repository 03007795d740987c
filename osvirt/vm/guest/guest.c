/* The demo guest: setup() at CPL0, then user_main() at CPL3, which rings
 * the host's doorbell (an OUT) and runs the command the host left in the
 * mailbox (layout.h) each time it comes back. Freestanding: no libc. */
#include "layout.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define MB(off) (*(volatile u64 *)(GUEST_MAILBOX + (off)))

#include "virtio.h"

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

extern char exception_0[], exception_1[], exception_2[], exception_3[], exception_4[], exception_5[],
    exception_6[], exception_7[], exception_8[], exception_9[], exception_10[], exception_11[],
    exception_12[], exception_13[], exception_14[], exception_15[], exception_16[], exception_17[],
    exception_18[], exception_19[], irq_uart[], irq_other[], syscall_entry[];

static inline void wrmsr(u32 msr, u64 v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)));
}

static inline u64 rdmsr(u32 msr)
{
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (u64)hi << 32 | lo;
}

static void gate(int vector, void *handler, int dpl)
{
    u64 a = (u64)handler;
    volatile u64 *g = (volatile u64 *)(u64)(GUEST_IDT + vector * 16);
    /* offset 15..0, selector, type 0xE (64-bit interrupt gate), DPL, present, offset 31..16; then 63..32 */
    g[0] = (a & 0xffff) | ((u64)SEL_KCODE << 16) | ((u64)(0x8e | dpl << 5) << 40) | ((a >> 16 & 0xffff) << 48);
    g[1] = a >> 32;
}

void setup(void)
{
    static void *const exceptions[20] = {
        exception_0, exception_1, exception_2, exception_3, exception_4, exception_5, exception_6,
        exception_7, exception_8, exception_9, exception_10, exception_11, exception_12, exception_13,
        exception_14, exception_15, exception_16, exception_17, exception_18, exception_19};
    for (int v = 0; v < 20; v++)
        gate(v, exceptions[v], 0);
    for (int irq = 0; irq < 16; irq++)
        gate(IRQ_VECTOR0 + irq, irq == UART_IRQ ? irq_uart : irq_other, 0);
    /* syscall/sysret: EFER.SCE; STAR's selectors (kernel CS 0x08, SS 0x10; sysret's SS 0x18+3 and CS
     * 0x20+3 from its base 0x10); LSTAR the entry; FMASK 0: IF stays set (kvm_pvm's iretq back to CPL3
     * keeps the IF the CPL0 code had, and sti there is a #GP). */
    wrmsr(0xc0000080, rdmsr(0xc0000080) | 1);
    wrmsr(0xc0000081, (u64)0x10 << 48 | (u64)SEL_KCODE << 32);
    wrmsr(0xc0000082, (u64)syscall_entry);
    wrmsr(0xc0000084, 0);
    /* The 8259 pair: ICW1..4 (vectors from IRQ_VECTOR0, cascade on IRQ 2, 8086 mode), then every
     * line masked but the UART's. The in-kernel PIC answers these: no exit. */
    outb(0x20, 0x11); outb(0x21, IRQ_VECTOR0); outb(0x21, 0x04); outb(0x21, 0x01);
    outb(0xa0, 0x11); outb(0xa1, IRQ_VECTOR0 + 8); outb(0xa1, 0x02); outb(0xa1, 0x01);
    outb(0x21, (u8)~(1 << UART_IRQ)); outb(0xa1, 0xff);
}

static u8 cmos(u8 reg)  /* a CMOS register, as Linux's mc146818 driver reads it: index, then data */
{
    outb(PORT_RTC, reg);
    return inb(PORT_RTC + 1);
}

static void spin(u64 n)  /* the same loop as the host's osv_spin (csrc/kvm.c) */
{
    __asm__ volatile("1: dec %0\n\tjnz 1b" : "+r"(n) : : "cc");
}

static void cpl0_spin(u64 n)  /* n >= 1 iterations of the same loop at CPL0, through syscall */
{
    __asm__ volatile("syscall" : : "D"(n) : "rax", "rcx", "rdx", "r11", "memory");
}

void user_main(void)
{
    for (;;) {
        outb(PORT_DOORBELL, 0);
        u64 arg0 = MB(MB_ARG0), arg1 = MB(MB_ARG1), arg2 = MB(MB_ARG2);
        switch (MB(MB_CMD)) {
        case CMD_SPIN:
            if (arg0)
                spin(arg0);
            break;
        case CMD_SPIN_CPL0:
            if (arg0)
                cpl0_spin(arg0);
            break;
        case CMD_SYSCALLS:
            for (u64 i = 0; i < arg0; i++)
                cpl0_spin(1);
            break;
        case CMD_UART_WRITE:
            for (u64 i = 0; i < arg0; i++)
                outb(PORT_UART, *(volatile u8 *)(GUEST_MAILBOX + MB_TEXT + i));
            break;
        case CMD_SHARED: {
            u64 v = MB(MB_SHARED);
            MB(MB_RESULT0) = v;
            MB(MB_SHARED) = ~v;
            break;
        }
        case CMD_TOUCH:
            for (u64 i = 0; i < arg1; i++)
                *(volatile u8 *)(arg0 + i * 4096) = (u8)arg2;
            break;
        case CMD_MMIO:
            MB(MB_RESULT0) = *(volatile u32 *)arg0;
            *(volatile u32 *)arg0 = (u32)arg1;
            break;
        case CMD_UART_IRQ: {
            u64 before = MB(MB_IRQ_COUNT);
            outb(PORT_UART + 1, 0x02);  /* IER: THR empty */
            for (u64 i = 0; i < arg0; i++)
                outb(PORT_UART, *(volatile u8 *)(GUEST_MAILBOX + MB_TEXT + i));
            outb(PORT_UART + 1, 0);
            MB(MB_RESULT0) = MB(MB_IRQ_COUNT) - before;
            break;
        }
        case CMD_COUNT:
            while (!MB(MB_ARG1))
                MB(MB_COUNTER)++;
            break;
        case CMD_BENCH_PIO:
            __asm__ volatile("1: outb %%al, %%dx\n\tjmp 1b" : : "a"(0), "d"(PORT_BENCH));
            break;
        case CMD_BENCH_MMIO:
            for (;;)
                *(volatile u32 *)arg0 = 0;
        case CMD_PORT_IN:
            MB(MB_RESULT0) = inb((u16)arg0);
            break;
        case CMD_RTC: {
            static const u8 regs[7] = {0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32};
            u64 t = 0;
            while (cmos(0x0a) & 0x80)  /* status A's UIP: the time registers are being updated */
                ;
            for (int i = 0; i < 7; i++)
                t |= (u64)cmos(regs[i]) << (8 * i);
            MB(MB_RESULT0) = t;
            break;
        }
        case CMD_RESET:
            outb(PORT_I8042, 0xfe);
            break;
        case CMD_VIRTIO_BLK: {
            u64 errors;
            MB(MB_RESULT0) = virtio_blk_read(arg0, 0, arg1, arg2, &errors);
            MB(MB_RESULT1) = errors;
            break;
        }
        case CMD_VIRTIO_CONSOLE:
            MB(MB_RESULT0) = virtio_console_write(arg0, arg1, arg2);
            break;
        }
    }
}
