/*
 * guestpm L2 x86 DSDT: the firmware namespace of the x86 L2 guest that runs under
 * guestpm's reference VMM (harness/guest/vmm/x86_64/).  The VMM builds the other tables
 * (RSDP, XSDT, FACS, FADT, MADT: x86_64/acpi.py) and puts this one, compiled on the host
 * by iasl, where the FADT points.
 *
 *   \_S5       soft-off: SLP_TYP 5 in PM1a_CNT, the value acpi.SLP_TYP_S5 expects; no
 *              S1..S4 package, so suspend-to-idle is the platform's only suspend.
 *   \_SB.COM1  the 16550 on port 0x3F8, ISA IRQ 4 (x86_64/uart.py).
 *   \_SB.LPS0  PNP0D80, the Low Power S0 Idle device.  Its Microsoft _DSM
 *              (UUID 11e00d56-ce64-47ce-837b-1f898f9aa461), which the kernel's
 *              drivers/acpi/x86/s2idle.c calls around the s2idle wait (entry 3, 5, 7;
 *              exit 4, 6, 8; in an order that differs between releases), writes
 *              the function number to I/O port 0x660: each call is one
 *              KVM_EXIT_IO in the VMM (x86_64/s2idle.py), timed there.
 *   \_SB.VPMC  HYPE0001, the "virtual PMC" of the unmerged s2idle-notification
 *              series (_DSM UUID 9ea49ba3-434a-49a6-be30-37cc55c4d397, function 1:
 *              the hypervisor notify).  Function 1 stores 3 into a 16-byte
 *              SystemMemory region at 0xD0000000, outside the guest's RAM: one
 *              KVM_EXIT_MMIO.  Stock kernels have no driver for it.
 *   \_SB.PWRB  PNP0C0C, a control-method power button whose _PRW names GPE 0 as a
 *              wake GPE from S0: the VMM wakes the guest from s2idle by setting
 *              GPE0's status.  The ACPI core arms a wake GPE in s2idle only for a
 *              device whose wakeup is enabled: Debian's `button` driver, in L2's
 *              initramfs, enables it (and the GPE at run time too).
 *              (The FADT's fixed power button is there too: pm.py's PWRBTN_STS.)
 *   \_GPE._L00 the wake GPE's method: nothing to do; ACPICA clears GPE0's status
 *              after it, once the guest has resumed.
 */
DefinitionBlock ("", "DSDT", 2, "GUESTP", "GUESTPM ", 0x00000001)
{
    Name (\_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })

    Scope (\_GPE)
    {
        Method (_L00, 0, NotSerialized)
        {
        }
    }

    Scope (\_SB)
    {
        OperationRegion (GPMP, SystemIO, 0x0660, One)
        Field (GPMP, ByteAcc, NoLock, Preserve)
        {
            LPSF,   8
        }

        Device (LPS0)
        {
            Name (_HID, "PNP0D80")
            Name (_UID, One)
            Method (_STA, 0, NotSerialized)
            {
                Return (0x0F)
            }

            Method (_DSM, 4, Serialized)
            {
                If (Arg0 == ToUUID ("11e00d56-ce64-47ce-837b-1f898f9aa461"))
                {
                    If (Arg2 == Zero)
                    {
                        /* functions 0 and 3..8 */
                        Return (Buffer (0x04) { 0xF9, 0x01, 0x00, 0x00 })
                    }
                    LPSF = Arg2
                    Return (Zero)
                }
                Return (Buffer (One) { 0x00 })
            }
        }

        Device (VPMC)
        {
            Name (_HID, "HYPE0001")
            Name (_UID, One)
            OperationRegion (VPMR, SystemMemory, 0xD0000000, 0x10)
            Field (VPMR, DWordAcc, NoLock, Preserve)
            {
                VPMN,   32
            }
            Method (_STA, 0, NotSerialized)
            {
                Return (0x0F)
            }

            Method (_DSM, 4, Serialized)
            {
                If (Arg0 == ToUUID ("9ea49ba3-434a-49a6-be30-37cc55c4d397"))
                {
                    If (Arg2 == Zero)
                    {
                        /* functions 0 and 1 */
                        Return (Buffer (One) { 0x03 })
                    }
                    If (Arg2 == One)
                    {
                        VPMN = 0x03
                    }
                    Return (Zero)
                }
                Return (Buffer (One) { 0x00 })
            }
        }

        Device (PWRB)
        {
            Name (_HID, EisaId ("PNP0C0C"))
            Name (_UID, One)
            Name (_PRW, Package (0x02) { Zero, 0x03 })
        }

        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, One)
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08)
                IRQNoFlags () {4}
            })
        }
    }
}
