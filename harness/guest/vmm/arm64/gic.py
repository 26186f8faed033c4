"""The in-kernel vGICv3 of the reference VMM's board: created after the vCPUs (KVM
sizes the redistributors by them), its regions at the board's addresses, then
initialised before the first KVM_RUN."""

from __future__ import annotations

from ...kvm import uapi
from . import board


def setup(vm) -> None:
    gic = vm.create_device(uapi.KVM_DEV_TYPE_ARM_VGIC_V3)
    gic.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, board.NR_IRQS)
    gic.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_ADDR, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, board.GIC_DIST)
    gic.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_ADDR, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST,
                 board.GIC_REDIST)
    gic.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_VGIC_CTRL_INIT)
