/* The x86 uAPI values harness/guest/kvm/x86.py encodes, as the kernel's own headers give
 * them. Compiled with -S by tests/unit/test_kvm_x86.py when GUESTPM_REGOLD=1 (needs gcc
 * for x86_64 and linux-libc-dev); the .json is the golden. */
#include <stddef.h>
#include <linux/kvm.h>

#define V(name, expr) unsigned long long v_##name = (expr);

V(KVM_SET_TSS_ADDR, KVM_SET_TSS_ADDR)
V(KVM_GET_REGS, KVM_GET_REGS)
V(KVM_SET_REGS, KVM_SET_REGS)
V(KVM_GET_SREGS, KVM_GET_SREGS)
V(KVM_SET_SREGS, KVM_SET_SREGS)
V(SIZEOF_kvm_regs, sizeof(struct kvm_regs))
V(SIZEOF_kvm_sregs, sizeof(struct kvm_sregs))
V(SIZEOF_kvm_segment, sizeof(struct kvm_segment))
V(kvm_regs_rip, offsetof(struct kvm_regs, rip))
V(kvm_regs_rflags, offsetof(struct kvm_regs, rflags))
V(kvm_regs_rdx, offsetof(struct kvm_regs, rdx))
V(kvm_sregs_cs, offsetof(struct kvm_sregs, cs))
V(kvm_segment_selector, offsetof(struct kvm_segment, selector))
V(kvm_segment_type, offsetof(struct kvm_segment, type))
V(kvm_sregs_gdt, offsetof(struct kvm_sregs, gdt))
V(kvm_sregs_cr0, offsetof(struct kvm_sregs, cr0))
V(kvm_sregs_cr3, offsetof(struct kvm_sregs, cr3))
V(kvm_sregs_cr4, offsetof(struct kvm_sregs, cr4))
V(kvm_sregs_efer, offsetof(struct kvm_sregs, efer))
V(SIZEOF_kvm_cpuid_entry2, sizeof(struct kvm_cpuid_entry2))
V(KVM_GET_SUPPORTED_CPUID, KVM_GET_SUPPORTED_CPUID)
V(KVM_SET_CPUID2, KVM_SET_CPUID2)
V(KVM_CREATE_IRQCHIP, KVM_CREATE_IRQCHIP)
V(KVM_CREATE_PIT2, KVM_CREATE_PIT2)
V(KVM_TRANSLATE, KVM_TRANSLATE)
V(SIZEOF_kvm_translation, sizeof(struct kvm_translation))
V(kvm_translation_physical_address, offsetof(struct kvm_translation, physical_address))
V(kvm_translation_valid, offsetof(struct kvm_translation, valid))
