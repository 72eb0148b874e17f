"""How a driver's strings reach an instrument: sessions over pyvisa-py and pyserial.

Owns the `Transport` seam and `open_transport` (`seam`), the managed session every transport
builds on (`session`: locking, timeouts, reconnect, interrupt, the call guard, the final
close, and the one translation of backend errors), its two implementations
(`visa_transport`, `serial_transport`), socket-level message I/O (`socket_io`) and the
OS-wide lock per instrument (`locking`), and what a resource needs installed
(`backends`: PyUSB and libusb for USB, a GPIB driver). May import `drivers.errors` only;
never `station`.
"""
