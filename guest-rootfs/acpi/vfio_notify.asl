/*
 * guestpm vfio-notify SSDT (x86_64 q35): firmware that notifies a PCI device.
 *
 * Given to QEMU with `-acpitable file=vfio_notify.aml` on the machine of the vfio
 * ACPI-notify stand-in cases (tests/e2e/test_vfio.py).  It extends the device that
 * QEMU's own DSDT already declares for slot 9 of q35's root bus, \_SB.PCI0.S48
 * (_ADR 0x00090000, the e1000e handed to vfio; QEMU 7.2 and 10 name root-bus devices
 * S<devfn>, and the e2e test reads the companion's path back from the guest), so it
 * uses External and Scope and declares nothing twice.
 *
 *   _PS0, _PS3  make the device ACPI-power-manageable (the kernel needs _PS0 for
 *               that); the kernel evaluates _PS3 when it puts the device into D3hot,
 *               e.g. on VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, and _PS3 then does
 *               Notify (S48, 0x80): a notification the firmware raises on its own.
 *   GPMN (v)    Notify (S48, v): lets the stand-in's test hook raise any value
 *               through ACPICA's notify queue.
 */
DefinitionBlock ("", "SSDT", 2, "GUESTP", "VFIONTFY", 0x00000001)
{
    External (\_SB.PCI0.S48, DeviceObj)

    Scope (\_SB.PCI0.S48)
    {
        Method (_PS0, 0, NotSerialized)
        {
        }

        Method (_PS3, 0, NotSerialized)
        {
            Notify (\_SB.PCI0.S48, 0x80)
        }

        Method (GPMN, 1, NotSerialized)
        {
            Notify (\_SB.PCI0.S48, Arg0)
        }
    }
}
