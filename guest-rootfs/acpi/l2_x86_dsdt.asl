/*
 * guestpm L2 x86 DSDT: the firmware namespace of the x86 L2 guest that runs under
 * guestpm's reference VMM (harness/guest/vmm/x86_64/).  The VMM builds the other tables
 * (RSDP, XSDT, FACS, FADT, MADT: x86_64/acpi.py) and puts this one, compiled on the host
 * by iasl, where the FADT points.
 *
 *   \_S5       soft-off: SLP_TYP 5 in PM1a_CNT, the value acpi.SLP_TYP_S5 expects; no
 *              S1..S4 package, so suspend-to-idle is the platform's only suspend.
 *   \_SB.COM1  the 16550 on port 0x3F8, ISA IRQ 4 (x86_64/uart.py).
 *   \_SB.PWRB  no: the power button is the FADT's fixed feature (PM1 PWRBTN_STS).
 *
 * The s2idle devices (LPS0, HYPE0001) and the GPE methods of vfio ACPI-notify
 * forwarding come in later steps.
 */
DefinitionBlock ("", "DSDT", 2, "GUESTP", "GUESTPM ", 0x00000001)
{
    Name (\_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })

    Scope (\_SB)
    {
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
