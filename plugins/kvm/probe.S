# hostbay probe guest: a 512-byte BIOS boot sector. Each stage writes a line to COM1:
#   "hostbay-probe: firmware"   real mode, from the BIOS boot path
#   "hostbay-probe: 64-bit"     after switching to long mode with identity-mapped 2 MiB page
#   "hostbay-probe: exception"  an IDT is loaded and int3 comes back through it (iretq)
#   "hostbay-probe: timer"      SSE enabled and used; the PIT's IRQ 0 arrives through the PIC with sti; hlt
#   "hostbay-probe: ok"         all of the above: a guest kernel has what it needs first
# Build: as --32 -o probe.o probe.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o probe.bin probe.o
.code16
.globl _start
_start:
  cli
  xor %ax,%ax
  mov %ax,%ds
  mov %ax,%es
  mov %ax,%ss
  mov $0x7c00,%sp
  mov $0x3f8,%dx
  mov $m_fw,%si
p16: lodsb
  test %al,%al
  jz pt
  out %al,%dx
  jmp p16
pt:
  mov $0x1000,%di
  mov $0x2800,%cx          # clear 0x1000-0x5fff: page tables, IDT, flag
  xor %ax,%ax
  rep stosw
  movw $0x2003,0x1000
  movw $0x3003,0x2000
  movw $0x0083,0x3000
  mov %cr4,%eax
  or $0x620,%eax           # PAE, OSFXSR, OSXMMEXCPT
  mov %eax,%cr4
  mov $0x1000,%eax
  mov %eax,%cr3
  mov $0xC0000080,%ecx
  rdmsr
  or $0x100,%eax
  wrmsr
  lgdtl gdtr
  mov %cr0,%eax
  and $0xFFFFFFFB,%eax     # no EM: SSE allowed
  or $0x80000003,%eax      # PG, MP, PE
  mov %eax,%cr0
  ljmpl $0x08,$lm
.code64
lm:
  mov $0x7c00,%esp
  mov $(m_64 - _start + 0x7c00),%esi
  call print
  mov $(h_int3 - _start + 0x7c00),%eax
  mov $3,%ebx
  call gate
  mov $(h_timer - _start + 0x7c00),%eax
  mov $0x20,%ebx
  call gate
  lidt (idtr - _start + 0x7c00)
  int3
  mov $(m_ex - _start + 0x7c00),%esi
  call print
  xorps %xmm0,%xmm0
  movups %xmm0,0x5800
  mov $0x11,%al            # PIC: IRQ 0-7 at vectors 0x20-0x27, only IRQ 0 unmasked
  out %al,$0x20
  out %al,$0xA0
  mov $0x20,%al
  out %al,$0x21
  mov $0x28,%al
  out %al,$0xA1
  mov $4,%al
  out %al,$0x21
  mov $2,%al
  out %al,$0xA1
  mov $1,%al
  out %al,$0x21
  out %al,$0xA1
  mov $0xFE,%al
  out %al,$0x21
  mov $0xFF,%al
  out %al,$0xA1
  sti
wait: hlt
  cmpb $0,0x5f00
  je wait
  cli
  mov $(m_tm - _start + 0x7c00),%esi
  call print
  mov $(m_ok - _start + 0x7c00),%esi
  call print
done:
  cli
  hlt
  jmp done
gate:                      # IDT entry %ebx -> handler %eax (below 64 KiB)
  mov %ebx,%edi
  shl $4,%edi
  add $0x4000,%edi
  mov %ax,(%rdi)
  movw $0x08,2(%rdi)
  movw $0x8E00,4(%rdi)
  ret
print:
  mov $0x3f8,%dx
1: lodsb
  test %al,%al
  jz 2f
  out %al,%dx
  jmp 1b
2: ret
h_int3:
  iretq
h_timer:
  push %rax
  movb $1,0x5f00
  mov $0x20,%al
  out %al,$0x20
  pop %rax
  iretq
.p2align 3
gdt: .quad 0
     .quad 0x00209A0000000000
gdtr: .word 15
      .long gdt
idtr: .word 4095
      .quad 0x4000
m_fw: .asciz "hostbay-probe: firmware\r\n"
m_64: .asciz "hostbay-probe: 64-bit\r\n"
m_ex: .asciz "hostbay-probe: exception\r\n"
m_tm: .asciz "hostbay-probe: timer\r\n"
m_ok: .asciz "hostbay-probe: ok\r\n"
.org 510
.word 0xaa55
