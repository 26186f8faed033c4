/*
 * guestpm s2idle SSDT: makes a guest's s2idle visible to the host.
 *
 * Given to QEMU with `-acpitable file=s2idle.aml` next to
 * `-device isa-debugcon,iobase=0xe9,chardev=...`.  Every evaluation below writes one
 * line to I/O port 0xE9; the harness reads the chardev live (harness/acpi.py).
 *
 *   \_SB.LPS0  PNP0D80, the Low Power S0 Idle device.  Its Microsoft _DSM
 *              (UUID 11e00d56-ce64-47ce-837b-1f898f9aa461) is what the kernel's
 *              drivers/acpi/x86/s2idle.c calls around the s2idle wait:
 *              entry 3 (screen off), 7 (modern standby entry), 5 (LPS0 entry);
 *              exit 6 (LPS0 exit), 8 (modern standby exit), 4 (screen on).
 *              Line: "lps0 <function>".
 *   \_SB.VPMC  HYPE0001, the "virtual PMC" of the unmerged s2idle-notification
 *              series: _DSM UUID 9ea49ba3-434a-49a6-be30-37cc55c4d397, function 1
 *              is the hypervisor notify.  Line: "hype <function>".
 */
DefinitionBlock ("", "SSDT", 2, "GUESTP", "S2IDLE", 0x00000001)
{
    Scope (\_SB)
    {
        OperationRegion (GPDC, SystemIO, 0xE9, One)
        Field (GPDC, ByteAcc, NoLock, Preserve)
        {
            GPDB,   8
        }

        /* Write the string Arg0 and a newline to the debug console, byte by byte. */
        Method (GPTG, 1, Serialized)
        {
            Local0 = ToBuffer (Arg0)
            Local1 = Zero
            Local2 = SizeOf (Local0)
            While (Local1 < Local2)
            {
                Local3 = DerefOf (Local0 [Local1])
                If (Local3 == Zero)
                {
                    Break
                }
                GPDB = Local3
                Local1++
            }
            GPDB = 0x0A
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
                    GPTG (Concatenate ("lps0 ", ToDecimalString (Arg2)))
                    Return (Zero)
                }
                Return (Buffer (One) { 0x00 })
            }
        }

        Device (VPMC)
        {
            Name (_HID, "HYPE0001")
            Name (_UID, One)
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
                    GPTG (Concatenate ("hype ", ToDecimalString (Arg2)))
                    Return (Zero)
                }
                Return (Buffer (One) { 0x00 })
            }
        }
    }
}
