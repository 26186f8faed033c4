/* The arch-neutral kvm_run exits harness/guest/kvm/uapi.py encodes beyond the arm64
 * golden (kvm_uapi.c): KVM_EXIT_IO and its layout, the same on every arch.  Compiled
 * with the host gcc and linux-libc-dev by tests/unit/test_kvm_uapi.py when
 * GUESTPM_REGOLD=1; the .json is the golden. */
#include <stddef.h>
#include <linux/kvm.h>

#define V(name, expr) unsigned long long v_##name = (expr);

V(KVM_EXIT_IO, KVM_EXIT_IO)
V(KVM_EXIT_IO_IN, KVM_EXIT_IO_IN)
V(KVM_EXIT_IO_OUT, KVM_EXIT_IO_OUT)
V(KVM_EXIT_FAIL_ENTRY, KVM_EXIT_FAIL_ENTRY)
V(KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTERNAL_ERROR)
V(RUN_io, offsetof(struct kvm_run, io))
V(RUN_io_size, offsetof(struct kvm_run, io.size))
V(RUN_io_port, offsetof(struct kvm_run, io.port))
V(RUN_io_count, offsetof(struct kvm_run, io.count))
V(RUN_io_data_offset, offsetof(struct kvm_run, io.data_offset))
