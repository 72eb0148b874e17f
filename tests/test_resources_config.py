"""station.yaml's instrument entries, checked when it loads: resource forms, one instrument per
resource, a sane timeout, the VISA library, driver and sim class names. Every problem at its
file:line with the form it should have."""

from __future__ import annotations

import textwrap

import pytest

from station.config.model import ConfigError, load_config
from station.config.resources import instrument_key


def load(tmp_path, instruments: str, top: str = ""):
    path = tmp_path / "station.yaml"
    path.write_text(
        "station: {name: Bench}\n"
        + top
        + "instruments:\n"
        + textwrap.indent(textwrap.dedent(instruments), "  ")
        + "procedures:\n  T1: {module: proc.py}\n",
        encoding="utf-8",
    )
    return load_config(path)


def error_of(tmp_path, instruments: str, top: str = "") -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, instruments, top)
    return str(caught.value)


@pytest.mark.parametrize(
    ("resource", "advice"),
    [
        ("TCPIP:192.168.1.20:5555", "write 'TCPIP::192.168.1.20::5555::SOCKET'"),
        ("192.168.1.20:5025", "write 'TCPIP::192.168.1.20::5025::SOCKET'"),
        ("192.168.1.20", "TCPIP::192.168.1.20::INSTR (VXI-11)"),
        ("TCPIP::192.168.1.20::5025", "'TCPIP::192.168.1.20::5025::SOCKET'"),
        ("TCPIP::192.168.1.20::5025::socket", "write SOCKET in capitals"),
        ("TCPIP::192.168.1.20::99999::SOCKET", "not a TCP port number"),
        ("GPIB0::42::INSTR", "GPIB address 42 is outside 0-30"),
        ("USB0::0x2A8D::INSTR", "USB::<vendor id>::<product id>::<serial>::INSTR"),
        ("USB0::VENDOR::0x1301::MY1::INSTR", "vendor id 'VENDOR' is not a number"),
        ("http://192.168.1.20", "unknown scheme 'http'"),
        ("dmm-on-the-left", "not an instrument resource"),
        ("ASRL/dev/ttyUSB0", "ends in ::INSTR"),
    ],
)
def test_a_wrong_resource_is_reported_at_its_line_with_the_right_form(tmp_path, resource, advice):
    message = error_of(
        tmp_path,
        f"""\
        dmm:
          driver: keysight-34461a
          resource: "{resource}"
        """,
    )
    assert "station.yaml:5: instruments.dmm.resource:" in message, message
    assert advice in message, message


@pytest.mark.parametrize(
    "resource",
    [
        "TCPIP::192.168.1.20::5555::SOCKET",
        "TCPIP0::10.0.0.7::inst0::INSTR",
        "TCPIP::scope.lab::hislip0::INSTR",
        "TCPIP::10.0.0.7",
        "USB0::0x2A8D::0x1301::MY59000000::INSTR",
        "USB::0x1AB1::0x0E11::DP8C0000::0::INSTR",
        "GPIB0::22::INSTR",
        "GPIB1::5",
        "ASRL3::INSTR",
        "ASRL/dev/ttyUSB0::INSTR",
        "/dev/ttyUSB0",
        "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0",
        "COM3",
        "serial:///dev/ttyACM0",
        "socket://192.168.1.50:4001",
        "rfc2217://10.0.0.9:7000",
    ],
)
def test_every_form_users_have_loads(tmp_path, resource):
    config = load(tmp_path, f'dmm: {{driver: keysight-34461a, resource: "{resource}"}}\n')
    assert config.instruments["dmm"].resource == resource


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("TCPIP::localhost::5025::SOCKET", "TCPIP0::127.0.0.1::5025::SOCKET"),
        ("TCPIP::127.0.0.1::5025::SOCKET", "socket://localhost:5025"),
        ("COM3", "ASRL3::INSTR"),
        ("/dev/ttyUSB0", "ASRL/dev/ttyUSB0::INSTR"),
        ("serial:///dev/ttyUSB0", "/dev/ttyUSB0"),
        ("TCPIP::10.0.0.7::INSTR", "TCPIP0::10.0.0.7::inst0::INSTR"),
        ("USB0::0x2A8D::0x1301::MY1::INSTR", "USB0::10893::4865::MY1::0::INSTR"),
    ],
)
def test_two_instruments_on_one_resource_are_refused_however_each_is_spelt(tmp_path, first, second):
    message = error_of(
        tmp_path,
        f"""\
        psu: {{driver: rigol-dp832, resource: "{first}"}}
        dmm:
          driver: keysight-34461a
          resource: "{second}"
        """,
    )
    assert "station.yaml:6: instruments.dmm.resource:" in message, message
    assert "already the resource of instrument 'psu'" in message


def test_instruments_on_different_resources_load():
    assert instrument_key("TCPIP::10.0.0.7::5025::SOCKET") != instrument_key(
        "TCPIP::10.0.0.7::5026::SOCKET"
    )
    assert instrument_key("TCPIP::10.0.0.7::INSTR") != instrument_key(
        "TCPIP::10.0.0.7::hislip0::INSTR"
    )


@pytest.mark.parametrize(("value", "advice"), [(50, "for 50 s write 50000"), (0, "at least 100")])
def test_timeout_ms_has_a_sane_minimum(tmp_path, value, advice):
    message = error_of(
        tmp_path, f"dmm: {{driver: keysight-34461a, resource: COM3, timeout_ms: {value}}}\n"
    )
    assert "station.yaml:3: instruments.dmm.timeout_ms: must be at least 100 ms" in message
    assert advice in message, message


def test_visa_library_top_level_and_per_instrument(tmp_path):
    config = load(
        tmp_path,
        """\
        dmm: {driver: keysight-34461a, resource: "USB0::0x2A8D::0x1301::MY1::INSTR"}
        psu:
          driver: rigol-dp832
          resource: "TCPIP::10.0.0.8::5555::SOCKET"
          visa_library: "@py"
        """,
        top='visa_library: "@IVI"\n',
    )
    assert config.visa_library == "@ivi"
    assert config.instruments["psu"].visa_library == "@py"
    assert load(
        tmp_path, "dmm: {driver: keysight-34461a, resource: COM3}\n",
        top="visa_library: /opt/keysight/iolibs/libktvisa32.so@ivi\n",
    ).visa_library == "/opt/keysight/iolibs/libktvisa32.so@ivi"  # fmt: skip


def test_a_wrong_visa_library_is_reported_at_its_line(tmp_path):
    message = error_of(
        tmp_path, "dmm: {driver: keysight-34461a, resource: COM3}\n", top="visa_library: nivisa\n"
    )
    assert "station.yaml:2: visa_library: must be '@py'" in message, message
    assert "'@ivi' (NI-VISA or Keysight IO Libraries)" in message


@pytest.mark.parametrize(
    ("driver", "advice"),
    [
        ("fixtures/relay", "neither a driver name"),
        ("fixtures.relay:", "is not a class: write package.module:ClassName"),
        ("fixtures.relay-board:RelayBoard", "is not a class"),
        ("Keysight 34461A", "neither a driver name"),
    ],
)
def test_a_driver_that_is_neither_a_name_nor_a_class_is_reported(tmp_path, driver, advice):
    message = error_of(tmp_path, f'relay: {{driver: "{driver}", resource: COM3}}\n')
    assert "station.yaml:3: instruments.relay.driver:" in message, message
    assert advice in message, message


def test_a_registry_driver_needs_a_resource_a_class_does_not(tmp_path):
    message = error_of(tmp_path, "dmm: {driver: keysight-34461a}\n")
    assert "station.yaml:3: instruments.dmm: missing required key 'resource'" in message
    config = load(
        tmp_path,
        "relay: {driver: fixtures.relay:RelayBoard, config: {channels: 8}, "
        "sim: fixtures.relay:SimRelayBoard}\n",
    )
    settings = config.instruments["relay"]
    assert (settings.resource, settings.config, settings.sim) == (
        None,
        {"channels": 8},
        "fixtures.relay:SimRelayBoard",
    )


def test_a_sim_that_is_not_a_class_is_reported(tmp_path):
    message = error_of(tmp_path, "relay: {driver: fixtures.relay:RelayBoard, sim: fake}\n")
    assert "station.yaml:3: instruments.relay.sim:" in message
    assert "package.module:ClassName" in message
