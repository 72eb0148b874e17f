"""The simulated circuit: the PCBA01 model, PSU physics, start_bench and DUT insertion."""

from __future__ import annotations

import pytest

import sim
from sim.bench import Bench, SimulatedClock
from sim.boards import make_board
from sim.boards.pcba01 import FAULTS, Pcba01

# Long after power-on the rail has settled.
SETTLED = 1.0


def powered(board: Pcba01, volts: float = 5.0, limit: float = 0.5) -> Bench:
    """A bench on simulated time whose CH1 came on a second ago."""
    bench = Bench(board, seed=1, clock=SimulatedClock())
    bench.configure(1, voltage=volts, current_limit=limit, enabled=True)
    bench.clock.sleep(SETTLED)
    return bench


def test_good_board_draws_70_ma_and_regulates_3v3():
    board = Pcba01()
    assert board.input_current(5.0) == pytest.approx(0.070, abs=0.001)
    assert board.rail_voltage(5.0) == pytest.approx(3.30)
    bench = powered(board)
    assert bench.psu_output(1) == (5.0, pytest.approx(0.070, abs=0.001))
    assert bench.dmm_dc_volts(nplc=10) == pytest.approx(3.30, abs=0.002)
    assert bench.dmm_ac_volts() == pytest.approx(0.002, abs=0.0005)


def test_ldo_dropout_and_undervoltage():
    board = Pcba01()
    assert board.rail_voltage(3.5) == pytest.approx(3.15)
    assert board.rail_voltage(0.9) == 0.0


def test_rail_settles_with_a_short_time_constant():
    board = Pcba01()
    assert board.rail_voltage(5.0, 0.0) == 0.0
    assert board.rail_voltage(5.0, 0.002) == pytest.approx(3.3 * 0.632, abs=0.01)
    assert board.rail_voltage(5.0, 0.020) == pytest.approx(3.3, abs=0.001)


@pytest.mark.parametrize(
    ("fault", "rail", "current"),
    [("low_rail", 3.10, 0.066), ("dead_regulator", 0.0, 0.004), ("noisy", 3.30, 0.070)],
)
def test_fault_modes(fault, rail, current):
    bench = powered(Pcba01(fault=fault))
    assert bench.rail_voltage() == pytest.approx(rail, abs=0.001)
    assert bench.psu_output(1)[1] == pytest.approx(current, abs=0.001)


def test_noisy_board_has_60_mv_ripple():
    assert powered(Pcba01(fault="noisy")).dmm_ac_volts() == pytest.approx(0.060, abs=0.005)


def test_shorted_rail_drives_the_psu_into_constant_current():
    bench = powered(Pcba01(fault="shorted_rail"), limit=0.5)
    volts, amps = bench.psu_output(1)
    assert amps == 0.5
    assert volts == pytest.approx(1.25, abs=0.01)  # 0.5 A into the ~2.5 Ω short
    assert bench.rail_voltage() == 0.0


def test_output_off_is_zero_and_ovp_trips():
    bench = Bench(Pcba01(), clock=SimulatedClock())
    bench.configure(1, voltage=5.0)
    assert bench.psu_output(1) == (0.0, 0.0)
    bench.configure(1, ovp_level=4.0, ovp_enabled=True, enabled=True)
    assert not bench.channel(1).enabled and bench.channel(1).ovp_tripped


def test_noise_is_seeded():
    readings = [powered(Pcba01(seed=7)).dmm_dc_volts(1) for _ in range(2)]
    assert readings[0] == readings[1]


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"simulated models: .*keysight-34461a, .*rigol-dp832"):
        sim.start_bench({"dmm": "fluke-8846a"})
    with pytest.raises(ValueError, match="valid boards: pcba01"):
        sim.start_bench({}, board="pcba99")
    with pytest.raises(ValueError, match="valid faults: " + ", ".join(FAULTS)):
        sim.start_bench({}, fault="on_fire")
    with pytest.raises(ValueError, match="valid faults"):
        make_board("pcba01", "melted")


@pytest.mark.parametrize(
    ("serial", "fault"),
    [("SN-1", None), ("SN-2-F", "low_rail"), ("SN-3-F:shorted_rail", "shorted_rail"),
     ("SN-4-F:noisy", "noisy")],
)  # fmt: skip
def test_insert_dut_picks_the_fault_from_the_serial(serial, fault):
    with sim.start_bench({}) as bench:
        bench.insert_dut(serial)
        assert bench.bench.board.fault == fault


def test_explicit_fault_wins_over_the_serial():
    with sim.start_bench({}, fault="dead_regulator") as bench:
        bench.insert_dut("SN-1")
        assert bench.bench.board.fault == "dead_regulator"


def test_insert_dut_with_an_unknown_fault_mode_is_refused():
    with sim.start_bench({}) as bench, pytest.raises(ValueError, match="valid faults"):
        bench.insert_dut("SN-5-F:smoke")
