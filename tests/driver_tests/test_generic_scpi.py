"""`driver: scpi` (ScpiDevice) and the public `drivers.Instrument` base: byte-exact exchanges
against a scripted transport, then the same drivers over pyvisa-py against twins on loopback."""

from __future__ import annotations

import re
import time

import pytest

from drivers import Instrument, InstrumentError, ScpiDevice, create_driver, parse_identity
from drivers.transport.backends import backend_problem, udev_rule
from sim.server import TwinServer
from sim.twins.generic import GenericScpiTwin

# -- ScpiDevice, byte-exact ---------------------------------------------------------------------


def test_write_query_and_query_float_send_exactly_what_is_asked(scripted):
    transport = scripted(
        [
            ("*IDN?", "ACME,PS-9,SN9,1.0"),
            ("VOLT 5.0", None),
            ("VOLT?", "+5.000E+00"),
            ("MEAS:VOLT?", "+9.9E+37"),
        ]
    )
    box = ScpiDevice(transport, "box")
    assert box.connect() == "ACME,PS-9,SN9,1.0"
    box.write("VOLT 5.0")
    assert box.query("VOLT?") == "+5.000E+00"
    assert box.query_float("MEAS:VOLT?") == float("inf")  # overload


def test_write_with_check_reads_the_error_queue_and_names_the_command(scripted):
    transport = scripted(
        [
            ("VOLT 99", None),
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", '+0,"No error"'),
        ]
    )
    with pytest.raises(InstrumentError) as caught:
        ScpiDevice(transport, "box").write("VOLT 99", check=True)
    assert caught.value.kind == "reported" and caught.value.command == "VOLT 99"
    assert (
        str(caught.value)
        == "box (TCPIP::sim::SOCKET): -222,\"Data out of range\" (after 'VOLT 99')"
    )


def test_a_box_without_an_error_queue_checks_nothing(scripted):
    transport = scripted([("OUT 1", None)])
    box = ScpiDevice(transport, "box", error_query=None)
    box.write("OUT 1", check=True)


def test_a_custom_error_query_is_used(scripted):
    transport = scripted([(":SYSTem:ERRor:NEXT?", '0,"No error"')])
    ScpiDevice(transport, "box", error_query=":SYSTem:ERRor:NEXT?").check_errors()


def test_the_idn_pattern_refuses_another_instrument(scripted):
    transport = scripted([("*IDN?", "RIGOL TECHNOLOGIES,DP832,DP8C1,00.01.16")])
    box = ScpiDevice(transport, "load", idn=r"^ACME,EL-\d+")
    with pytest.raises(InstrumentError) as caught:
        box.connect()
    assert caught.value.kind == "wrong_model"
    assert "matches '^ACME,EL-\\\\d+', got 'RIGOL" in str(caught.value)


def test_safe_state_sends_the_configured_commands_and_reads_them_back(scripted):
    transport = scripted([("OUTP OFF", None), ("INP OFF", None), ("OUTP?", "0"), ("INP?", "OFF")])
    box = ScpiDevice(
        transport,
        "box",
        safe_state=["OUTP OFF", "INP OFF"],
        safe_readback={"OUTP?": ["0", "OFF"], "INP?": "off"},
    )
    box.safe_state()


def test_a_safe_state_that_does_not_read_back_is_retried_once_then_raised(scripted):
    transport = scripted(
        [("OUTP OFF", None), ("OUTP?", "1"), ("OUTP OFF", None), ("OUTP?", "ON")]
    )  # fmt: skip
    box = ScpiDevice(transport, "box", safe_state=["OUTP OFF"], safe_readback={"OUTP?": "0"})
    with pytest.raises(InstrumentError) as caught:
        box.safe_state()
    assert caught.value.kind == "not_applied"
    assert "safe state not verified: OUTP? reads 'ON', not '0'" in str(caught.value)


def test_a_safe_state_that_reads_back_on_the_retry_is_safe(scripted):
    transport = scripted([("OUTP OFF", None), ("OUTP?", "1"), ("OUTP OFF", None), ("OUTP?", "0")])
    ScpiDevice(transport, "box", safe_state=["OUTP OFF"], safe_readback={"OUTP?": "0"}).safe_state()


def test_without_configuration_safe_state_sends_nothing(scripted):
    ScpiDevice(scripted([]), "box").safe_state()


def test_bad_configuration_is_refused_when_built(scripted):
    with pytest.raises(ValueError, match="list of commands"):
        ScpiDevice(scripted([]), "box", safe_state="OUTP OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idn is not a valid regular expression"):
        ScpiDevice(scripted([]), "box", idn="ACME(")


# -- the public base class ------------------------------------------------------------------------


class Load(Instrument):
    MODEL = "ACME EL-1 load"
    IDN_PATTERN = re.compile(r"^ACME,EL-1,")
    SAFE_STATE = ("INP OFF",)

    def __init__(self, transport, name, *, max_amps: float = 5.0) -> None:
        super().__init__(transport, name)
        self.max_amps = max_amps

    def verify_safe(self) -> str | None:
        return None if self.query("INP?") in ("0", "OFF") else "input still reads ON"


def test_the_base_safe_state_is_make_safe_then_verify_safe_with_one_retry(scripted):
    transport = scripted(
        [("INP OFF", None), ("INP?", "1"), ("INP OFF", None), ("INP?", "1")]
    )  # fmt: skip
    with pytest.raises(InstrumentError) as caught:
        Load(transport, "load").safe_state()
    assert str(caught.value) == (
        "load (TCPIP::sim::SOCKET): safe state not verified: input still reads ON"
    )


def test_a_read_back_that_fails_is_reported_as_not_verified(scripted):
    class Silent(Load):
        def verify_safe(self) -> str | None:
            raise InstrumentError("no reply within 3000 ms", instrument="load", kind="timeout")

    transport = scripted([("INP OFF", None), ("INP OFF", None)])
    with pytest.raises(InstrumentError, match=r"could not be read back \(no reply"):
        Silent(transport, "load").safe_state()


def test_a_subclass_is_built_with_its_config_by_the_registry_and_talks_over_pyvisa():
    twin = GenericScpiTwin(idn="ACME,EL-1,EL1-0003,2.0", settings={"INP": "1"})
    with TwinServer(twin) as server:
        load = create_driver(Load, server.resource, name="load", config={"max_amps": 2.5})
        assert isinstance(load, Load) and load.max_amps == 2.5
        try:
            assert load.connect() == "ACME,EL-1,EL1-0003,2.0"
            assert load.identity_fields() == parse_identity("ACME,EL-1,EL1-0003,2.0")
            load.safe_state()  # INP OFF, then INP? reads 0 from the twin's memory
            assert twin.values["INP"] == "OFF" and "INP OFF" in twin.received
        finally:
            load.close()


def test_open_connects_without_the_framework_and_with_closes():
    twin = GenericScpiTwin(idn="ACME,EL-1,EL1-0004,2.0")
    with TwinServer(twin) as server, Load.open(server.resource, max_amps=1.0) as load:
        assert load.identity == "ACME,EL-1,EL1-0004,2.0"
    with pytest.raises(InstrumentError) as caught:
        load.query("*IDN?")
    assert caught.value.kind == "closed"


def test_open_refuses_another_model_and_closes():
    with TwinServer(GenericScpiTwin(idn="OTHER,THING,1,1")) as server:
        with pytest.raises(InstrumentError) as caught:
            Load.open(server.resource)
        assert caught.value.kind == "wrong_model"
        deadline = time.monotonic() + 5
        while server.connection_count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.connection_count == 0  # the session was closed on the way out


# -- the generic twin over the real pyvisa-py path ----------------------------------------------


def test_scpi_driver_against_the_generic_twin():
    twin = GenericScpiTwin(replies={"MEAS:VOLT?": "+4.998E+00"})
    with TwinServer(twin) as server:
        box = create_driver(
            "scpi",
            server.resource,
            name="box",
            config={"safe_state": ["OUTP OFF"], "safe_readback": {"OUTP?": "OFF"}},
        )
        try:
            assert box.connect() == "SIM,GENERIC-SCPI,0,1.0"
            box.write("OUTP ON", check=True)
            assert box.query("OUTP?") == "ON"
            assert box.query_float("MEAS:VOLT?") == pytest.approx(4.998)
            box.write("BOGUS:COMMAND?", check=False)
            with pytest.raises(InstrumentError, match="Undefined header"):
                box.check_errors()
            box.safe_state()
            assert box.query("OUTP?") == "OFF"
        finally:
            box.close()


# -- what a resource needs installed ----------------------------------------------------------


def test_a_usb_resource_without_its_backend_says_what_to_install():
    problem = backend_problem("USB0::0x2A8D::0x1301::MY59000000::INSTR")
    import importlib.util

    if importlib.util.find_spec("usb") is None:
        assert problem is not None and "pip install 'station[usb]'" in problem
        assert "libusb" in problem and udev_rule("2a8d") in problem
    elif problem is None:
        pytest.skip("PyUSB and libusb are installed here: nothing is missing")
    else:
        assert "finds no libusb" in problem
    assert udev_rule("2a8d") == 'SUBSYSTEM=="usb", ATTR{idVendor}=="2a8d", MODE="0666"'
    # With another VISA implementation, USB is that library's business.
    assert backend_problem("USB0::0x2A8D::0x1301::MY1::INSTR", "@ivi") is None


def test_opening_a_usb_instrument_with_no_backend_says_what_to_install():
    if backend_problem("USB0::0x2A8D::0x1301::MY1::INSTR") is None:
        pytest.skip("PyUSB and libusb are installed here")
    dmm = create_driver("keysight-34461a", "USB0::0x2A8D::0x1301::MY1::INSTR", name="dmm")
    with pytest.raises(InstrumentError) as caught:
        dmm.connect()
    dmm.close()
    assert caught.value.kind == "no_backend" and caught.value.instrument == "dmm"
    assert "pip install 'station[usb]'" in str(caught.value)


def test_a_gpib_resource_without_a_driver_says_what_to_install():
    import importlib.util

    if importlib.util.find_spec("gpib") or importlib.util.find_spec("gpib_ctypes"):
        pytest.skip("a GPIB driver is installed here")
    problem = backend_problem("GPIB0::22::INSTR")
    assert problem is not None and "linux-gpib" in problem and "gpib-ctypes" in problem


def test_a_visa_library_that_is_not_installed_is_named_at_open():
    with TwinServer(GenericScpiTwin()) as server:
        box = create_driver(
            "scpi", server.resource, name="box", visa_library="/nonexistent/libvisa.so"
        )
        with pytest.raises(InstrumentError) as caught:
            box.connect()
        box.close()
    assert caught.value.kind == "no_backend"
    assert "VISA library '/nonexistent/libvisa.so' is not available" in str(caught.value)
    assert "remove visa_library to use the built-in @py" in str(caught.value)


@pytest.mark.parametrize(
    ("identity", "fields"),
    [
        (
            "Keysight Technologies,34465A,MY59008389,A.03.01-03.15-03.01-00.52-03-02",
            ("Keysight Technologies", "34465A", "MY59008389", "A.03.01-03.15-03.01-00.52-03-02"),
        ),
        (
            "KEITHLEY INSTRUMENTS,MODEL DMM6500,04592428,1.7.12b",
            ("KEITHLEY INSTRUMENTS", "DMM6500", "04592428", "1.7.12b"),
        ),
        ("KORAD KA3005P V5.8 SN:03379314", ("KORAD", "KA3005P", "03379314", "5.8")),
        ("SIM,TWIN,0,0", ("SIM", "TWIN", None, None)),
        ("ACME RELAY8", ("ACME", "RELAY8", None, None)),
        ("", (None, None, None, None)),
    ],
)
def test_identity_fields_are_read_from_what_instruments_answer(identity, fields):
    assert tuple(parse_identity(identity)) == fields
