"""Registry, error messages, and what importing the drivers costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from drivers import InstrumentError, UnknownDriverError, create_driver, driver_names
from drivers.models.dmm import Keysight34461A
from drivers.models.psu import RigolDP832
from drivers.registry import get_driver_class
from drivers.transport.seam import open_transport
from drivers.transport.visa_transport import VisaTransport


def test_driver_names_and_classes():
    assert {"keysight-34461a", "rigol-dp832"} <= set(driver_names())
    assert driver_names() == sorted(driver_names())
    assert get_driver_class("keysight-34461a") is Keysight34461A
    assert get_driver_class("rigol-dp832") is RigolDP832


def test_unknown_driver_lists_the_available_ones():
    with pytest.raises(UnknownDriverError) as caught:
        get_driver_class("foo")
    assert str(caught.value) == (
        f"unknown driver 'foo'; available drivers: {', '.join(driver_names())}"
    )
    assert caught.value.name == "foo"
    assert caught.value.available == driver_names()
    assert isinstance(caught.value, LookupError)


def test_create_driver_merges_options_and_does_not_connect():
    resource = "TCPIP::192.0.2.1::5555::SOCKET"  # TEST-NET: never reachable
    psu = create_driver(
        "rigol-dp832", resource, name="psu", timeout_ms=500, read_termination="\r\n",
        baud_rate=None,
    )  # fmt: skip
    assert isinstance(psu, RigolDP832)
    assert psu.name == "psu"
    assert psu.identity is None
    transport = psu.transport
    assert isinstance(transport, VisaTransport)
    assert (transport.name, transport.resource, transport.timeout_ms) == ("psu", resource, 500)
    assert transport.read_termination == "\r\n"  # explicit beats DEFAULT_OPTIONS
    assert transport.write_termination == "\n"  # from DEFAULT_OPTIONS
    assert transport.baud_rate is None


def test_unknown_url_schemes_and_non_resources_are_refused():
    # serial:// socket:// /dev/... COMn go to SerialTransport (tests/driver_tests/test_serial_*).
    with pytest.raises(InstrumentError, match="unsupported URL scheme"):
        open_transport("ftp://127.0.0.1:5025", name="dmm")
    with pytest.raises(InstrumentError, match="not an instrument resource"):
        open_transport("dmm-on-the-left", name="dmm")


def test_instrument_error_names_instrument_resource_and_command():
    error = InstrumentError(
        "no reply within 3000 ms to 'MEAS:VOLT:DC?'",
        instrument="dmm",
        resource="TCPIP::127.0.0.1::5025::SOCKET",
        command="MEAS:VOLT:DC?",
    )
    assert str(error) == (
        "dmm (TCPIP::127.0.0.1::5025::SOCKET): no reply within 3000 ms to 'MEAS:VOLT:DC?'"
    )
    assert str(InstrumentError("lost", instrument="psu", command="*OPC?")) == (
        "psu: lost (command '*OPC?')"
    )
    assert str(InstrumentError("plain")) == "plain"


def test_importing_drivers_does_not_import_pyvisa_or_the_models():
    code = (
        "import sys, drivers; drivers.driver_names(); "
        "print('pyvisa' in sys.modules, 'station' in sys.modules, 'sim' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


@pytest.mark.parametrize("name", driver_names())
def test_every_driver_exposes_its_session_whose_guard_refuses_before_any_io(name):
    """The runner guards I/O through `driver.transport`: every built-in driver has one, and a
    refusing guard stops a call before the transport even tries to connect."""
    from drivers.errors import KIND_STOPPED
    from drivers.transport.session import SessionTransport

    resource = "/dev/ttyUSB99" if name == "korad-ka3005p" else "TCPIP::127.0.0.1::9::SOCKET"
    driver = create_driver(name, resource, name="x")
    assert isinstance(driver.transport, SessionTransport)
    driver.transport.set_call_guard(lambda: "phase 'p' was stopped")
    for call in (driver.transport.open, lambda: driver.query("*IDN?")):
        with pytest.raises(InstrumentError, match="phase 'p' was stopped") as caught:
            call()
        assert caught.value.kind == KIND_STOPPED
    driver.transport.set_call_guard(None)
    driver.close()
