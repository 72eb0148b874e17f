"""Runs a procedure: injection, limit checks, retries, timeouts, teardown, abort, outcomes.

The rules (docs/architecture.md):
- a measurement outside its decisive limits, or never set (UNSET), fails its phase;
- an exception makes the phase ERROR; running past its time makes it TIMEOUT;
- `retries=N` re-runs a FAIL or ERROR attempt up to N more times; every attempt is recorded and
  the last one decides;
- after ERROR, TIMEOUT or ABORTED the remaining main phases are recorded SKIP; after FAIL they
  continue unless the procedure sets `stop_on_fail`;
- teardown phases always run, with their own timeouts, even after Ctrl-C;
- run outcome precedence: ABORTED > TIMEOUT > ERROR > FAIL > PASS;
- after teardown every instrument is put in its safe state and verified (when the runner was
  given an `InstrumentSet`); a safe state that is not verified makes the run ERROR, whatever
  else happened, with a reason naming the instrument.

Safety on a stop: a stopped phase's thread may no longer do instrument I/O (the runner sets
`refuse_stopped_phase_io` as every instrument's call guard), and a thread that does not let go
is abandoned and says so in the record (see `station.engine.worker`).

Signals: while `execute()` runs, SIGINT, SIGTERM, SIGHUP and SIGQUIT abort the run (teardown and
safe state still happen; a second one changes nothing). Once the outcome is decided they are
held until the record has been handed to every listener (the journal writes run.json then), and
only then delivered to the handlers that were in place before.

The runner knows nothing about consoles or files: it reports to listeners
(`station.records.listener`).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from station.authoring.cancel import CancelToken, PhaseCancelled, current_token
from station.authoring.helpers import (
    Answer,
    Dut,
    LogCapture,
    Measurements,
    PromptCancelled,
    PromptError,
    PromptProvider,
    PromptRequest,
    RunContext,
    as_prompt_provider,
    run_logger,
)
from station.authoring.procedure import SKIP, Phase, Procedure
from station.bench.instruments import STOP_SIGNALS, InstrumentSet, UnabortedIO
from station.engine.evaluate import (
    error_info,
    measurement_records,
    recordable_metadata,
    safe_repr,
    safe_str,
)
from station.engine.worker import Job, PhaseWorker, refuse_stopped_phase_io
from station.records.listener import RunListener
from station.records.model import (
    AttachmentRecord,
    ErrorInfo,
    LogEntry,
    MeasurementRecord,
    PhaseRecord,
    PromptRecord,
    RunRecord,
    utc_now,
)
from station.records.outcomes import Outcome, PhaseOutcome

DEFAULT_TEARDOWN_TIMEOUT_S = 30.0
_POLL_S = 0.05  # how often the main thread looks up from a running phase for Ctrl-C

_RUN_OUTCOME_OF = {
    PhaseOutcome.ABORTED: Outcome.ABORTED,
    PhaseOutcome.TIMEOUT: Outcome.TIMEOUT,
    PhaseOutcome.ERROR: Outcome.ERROR,
    PhaseOutcome.FAIL: Outcome.FAIL,
}
_PRECEDENCE = [Outcome.PASS, Outcome.FAIL, Outcome.ERROR, Outcome.TIMEOUT, Outcome.ABORTED]
_STOPS_RUN = {PhaseOutcome.ERROR, PhaseOutcome.TIMEOUT, PhaseOutcome.ABORTED}
_RETRYABLE = {PhaseOutcome.FAIL, PhaseOutcome.ERROR}
_RUN_IF_FALSE = object()
_SIGNAL_REASONS = {
    "SIGINT": "aborted by the operator (Ctrl-C)",
    "SIGTERM": "station was asked to stop (SIGTERM)",
    "SIGHUP": "station's terminal was closed (SIGHUP)",
    "SIGQUIT": "station was asked to quit (SIGQUIT)",
}


class Runner:
    """Executes one run of a procedure against opened instruments and a DUT.

    `instruments` is usually the run's `InstrumentSet`: then `interrupt_io` and `describe_io`
    default to its `interrupt()` and `in_flight()`, and the runner puts the bench in its safe
    state (verified) after teardown, before the record is final. `interrupt_io` returns the
    instruments whose I/O could not be aborted (or None).
    """

    def __init__(
        self,
        procedure: Procedure,
        dut: Dut,
        *,
        instruments: Mapping[str, Any] | None = None,
        interrupt_io: Callable[[], Sequence[UnabortedIO] | None] | None = None,
        describe_io: Callable[[], list[str]] | None = None,
        listeners: Sequence[RunListener] = (),
        operator: str | None = None,
        station_name: str | None = None,
        prompt: PromptProvider | Callable[[str], object] | Mapping[str, object] | None = None,
        metadata: Mapping[str, Any] | None = None,
        handle_signals: bool = True,
        cancel_grace_s: float = 0.5,
        teardown_timeout_s: float = DEFAULT_TEARDOWN_TIMEOUT_S,
    ) -> None:
        self.procedure = procedure
        self.dut = dut
        self._instruments = dict(instruments or {})
        self._bench = instruments if isinstance(instruments, InstrumentSet) else None
        if self._bench is not None:
            interrupt_io = interrupt_io or self._bench.interrupt
            describe_io = describe_io or self._bench.in_flight
        self._interrupt_io = interrupt_io
        self._describe_io = describe_io
        self._unaborted: list[UnabortedIO] = []  # from the last stop's interrupt_io()
        self._unsafe: list[str] = []  # instruments whose safe state was not verified
        self._outcome_decided = False  # from then on stop signals are held, not acted on
        self._held_signals: list[int] = []
        self._listeners = list(listeners)
        self._handle_signals = handle_signals
        self._cancel_grace_s = cancel_grace_s
        self._teardown_timeout_s = teardown_timeout_s
        self._abort = threading.Event()
        self._abort_reason = ""
        self._worker: PhaseWorker | None = None
        self._current_phase: str | None = None
        self._timeout_reason: str | None = None  # set when the run-level timeout fires
        self._procedure_dir = procedure.directory
        # run.prompt(): who answers, and how long questions were open (the phase's own clock
        # stops meanwhile; the run's does not).
        self._prompts = as_prompt_provider(prompt)
        self._phase_prompts: list[PromptRecord] = []
        self._prompt_lock = threading.Lock()
        self._open_prompts = 0
        self._paused_since = 0.0
        self._paused_total = 0.0
        self._in_teardown = False

        self.record = RunRecord(
            run_id=uuid.uuid4().hex,
            procedure_id=procedure.id,
            procedure_version=procedure.version,
            procedure_file=procedure.source_file,
            docstring=procedure.docstring,
            station_name=station_name,
            serial_number=dut.serial_number,
            part_number=dut.part_number,
            revision=dut.revision,
            batch_number=dut.batch_number,
            operator=operator,
            started_at=utc_now(),
            metadata=dict(metadata or {}),
        )
        if self._bench is not None:  # what was opened: calibration and traceability questions
            self.record.instruments = self._bench.records()
        self.run = RunContext(procedure.id, self.record.run_id, self._attach, self._ask)
        self.log = run_logger(procedure.id)  # the run's own: two runs never share lines
        # What phases may ask for by name, but `measurements` (made fresh for every attempt).
        self._injectables = {**self._instruments, "log": self.log, "dut": self.dut, "run": self.run}
        self._token = CancelToken()
        self._capture = LogCapture(self._procedure_dir, self._on_log)

    # -- public ---------------------------------------------------------------------------------

    @property
    def unsafe(self) -> list[str]:
        """The instruments whose safe state after teardown was not verified (one problem each);
        empty once `execute()` made the bench safe. The production loop reopens on these."""
        return list(self._unsafe)

    def abort(self, reason: str = "aborted by the operator (Ctrl-C)") -> None:
        """Stop the run as ABORTED: the phase is stopped, teardown still runs. Thread-safe."""
        if not self._abort.is_set():
            self._abort_reason = reason
            self._abort.set()

    def execute(self) -> RunRecord:
        """Run every phase, then teardown, then make the bench safe; return the finished record.

        A stop signal that arrives once the outcome is decided is delivered (to the handler in
        place before) only after every listener got the final record, so it may raise (e.g.
        KeyboardInterrupt) after run.json is on disk.
        """
        self._emit("run_started", self.record)
        self._guard_instruments()
        previous_handlers = self._install_signal_handlers()
        try:
            self.log.addHandler(self._capture)
            self.log.setLevel(logging.DEBUG)
            self.log.propagate = False
            try:
                self._run_main_phases()
                self._run_teardown()
                self._make_bench_safe()
            finally:
                self.log.removeHandler(self._capture)
                if self._worker is not None:
                    self._worker.release()
            self._finish()
        finally:
            self._restore_signal_handlers(previous_handlers)
        return self.record

    # -- phases ---------------------------------------------------------------------------------

    def _run_main_phases(self) -> None:
        deadline = (
            (time.monotonic() + self.procedure.timeout_s) if self.procedure.timeout_s else None
        )
        stop_reason: str | None = None
        for ph in self.procedure.phases:
            if stop_reason is None and self._abort.is_set():
                stop_reason = f"not run: {self._abort_reason}"
            if stop_reason is None and deadline is not None and time.monotonic() >= deadline:
                self._timeout_reason = f"run timeout of {self.procedure.timeout_s:g} s reached"
                stop_reason = f"not run: {self._timeout_reason}"
            if stop_reason is not None:
                self._skip(ph, stop_reason)
                continue
            final = self._run_with_retries(ph, deadline)
            if final.outcome in _STOPS_RUN:
                stop_reason = f"not run: phase {ph.name!r} ended {final.outcome}"
            elif final.outcome == PhaseOutcome.FAIL and self.procedure.stop_on_fail:
                stop_reason = (
                    f"not run: phase {ph.name!r} failed and the procedure stops on failure"
                )

    def _run_teardown(self) -> None:
        self._in_teardown = True  # a prompt in teardown does not stop its clock: safe state waits
        for ph in self.procedure.teardown:
            self._run_with_retries(ph, None, teardown=True)

    def _run_with_retries(
        self, ph: Phase, run_deadline: float | None, teardown: bool = False
    ) -> PhaseRecord:
        attempt = 0
        while True:
            rec = self._run_attempt(ph, attempt, run_deadline, teardown)
            self.record.phases.append(rec)
            self._emit("phase_ended", rec)
            if rec.outcome not in _RETRYABLE or attempt >= ph.retries or self._aborting(teardown):
                return rec
            attempt += 1

    def _aborting(self, teardown: bool) -> bool:
        return self._abort.is_set() and not teardown

    def _skip(self, ph: Phase, reason: str) -> None:
        now = utc_now()
        rec = PhaseRecord(
            name=ph.name,
            outcome=PhaseOutcome.SKIP,
            started_at=now,
            ended_at=now,
            docstring=ph.docstring,
            reason=reason,
            measurements=measurement_records(Measurements(ph.measurements)),
        )
        self.record.phases.append(rec)
        self._emit("phase_ended", rec)

    def _run_attempt(
        self, ph: Phase, attempt: int, run_deadline: float | None, teardown: bool
    ) -> PhaseRecord:
        self._current_phase = ph.name
        self._emit("phase_started", ph.name, attempt)
        started = utc_now()
        if self._token.cancelled:  # a token is reused until a phase is stopped under it
            self._token = CancelToken()
        token = self._token
        measurements = Measurements(ph.measurements, token)
        kwargs = {
            name: measurements if name == "measurements" else self._injectables[name]
            for name in ph.params
        }
        # Whichever comes first, the phase's own timeout or the run's, bounds this attempt.
        timeout_s = (
            ph.timeout_s
            if ph.timeout_s is not None
            else (self._teardown_timeout_s if teardown else None)
        )
        phase_deadline = time.monotonic() + timeout_s if timeout_s is not None else None

        if self._worker is None or self._worker.retired:
            self._worker = PhaseWorker.take()
        logs = self._capture.begin_phase(self._worker.thread_ident)
        prompts = self._phase_prompts = []
        job = self._worker.submit(_call_phase(ph, self._injectables, measurements), kwargs, token)
        status = self._wait(job, phase_deadline, run_deadline, teardown)
        reason = None
        if status == "abort":
            reason = self._abort_reason
        elif status == "run-timeout":
            self._timeout_reason = f"run timeout of {self.procedure.timeout_s:g} s reached"
            reason = f"{self._timeout_reason} during phase {ph.name!r}"
        elif status == "timeout":
            reason = f"phase {ph.name!r} timed out after {timeout_s:g} s"
        if reason is not None:  # stopped: timed out or aborted
            reason = self._stop(ph, job, reason + self._stuck_on())
        self._capture.end_phase()
        self._current_phase = None

        measured = measurement_records(measurements)
        outcome, error, reason = self._judge(job.result, job.error, status, reason, measured)
        return PhaseRecord(
            name=ph.name,
            outcome=outcome,
            started_at=started,
            ended_at=utc_now(),
            attempt=attempt,
            teardown=teardown,
            docstring=ph.docstring,
            reason=reason,
            error=error,
            measurements=measured,
            logs=list(logs),
            prompts=list(prompts),
        )

    def _stop(self, ph: Phase, job: Job, reason: str) -> str:
        """Stop the phase (in stages: see `station.engine.worker`); returns its reason, with
        what the stop met: I/O that could not be aborted, a thread that had to be abandoned."""
        assert self._worker is not None
        self._unaborted = []
        let_go = self._worker.stop(job, reason, self._interrupt, self._cancel_grace_s)
        for unaborted in self._unaborted:
            reason += f"; {unaborted}"
            if let_go:
                reason += f": the phase ended at the instrument timeout ({unaborted.timeout_s:g} s)"
        if not let_go:
            abandoned = (
                f"phase thread for {ph.name!r} did not stop; abandoned (its instrument I/O is "
                "refused from now on)"
            )
            self.log.warning(abandoned)  # from this thread: a run-level log entry
            reason += f"; {abandoned}"
        return reason

    def _interrupt(self) -> float:
        """The worker's interrupt hook: abort instrument I/O in flight; returns how long (s) a
        call that could not be aborted may still block the phase (its instrument timeout)."""
        if self._interrupt_io is None:
            return 0.0
        self._unaborted = list(self._interrupt_io() or ())
        return max((u.timeout_s for u in self._unaborted), default=0.0)

    def _guard_instruments(self) -> None:
        """Refuse instrument I/O from the thread of a stopped phase, at the transport (drivers
        know nothing of the engine: the guard is a plain callable). Instruments without a
        guard-capable transport (test doubles) are left as they are."""
        if self._bench is not None:  # session drivers and plain instrument classes alike
            self._bench.set_call_guard(refuse_stopped_phase_io)
            return
        for driver in self._instruments.values():
            set_guard = getattr(getattr(driver, "transport", None), "set_call_guard", None)
            if callable(set_guard):
                set_guard(refuse_stopped_phase_io)

    def _make_bench_safe(self) -> None:
        """After teardown, every instrument in its safe state, verified, before the record is
        final: a problem here makes the run ERROR (see `_finish`) and is logged as an error."""
        if self._bench is None:
            return
        self._unsafe = self._bench.safe_state()
        for problem in self._unsafe:
            self.log.error(f"NOT SAFE: {problem}")
        self._attach_instrument_files(self._bench)

    def _attach_instrument_files(self, bench: InstrumentSet) -> None:
        """What the instruments offer to the run (a console's transcript), attached at its end
        on every exit path; a failure is logged, never the run's outcome."""
        if not bench.offers_attachments():
            return
        with tempfile.TemporaryDirectory(prefix="station-instruments-") as scratch:
            for path, name in bench.collect_attachments(Path(scratch)):
                try:
                    self._attach(path, name)
                except Exception as exc:
                    self.log.warning(f"instrument attachment {name} not attached: {exc}")

    def _stuck_on(self) -> str:
        """' while waiting on dmm (...): 'READ?' in progress for 2.0 s', or '' if no I/O was."""
        if self._describe_io is None:
            return ""
        try:
            busy = self._describe_io()
        except Exception:  # a description must never keep a phase from being stopped
            return ""
        return " while waiting on " + "; ".join(busy) if busy else ""

    def _wait(
        self, job: Job, phase_deadline: float | None, run_deadline: float | None, teardown: bool
    ) -> str:
        """'done', 'timeout' (the phase's own), 'run-timeout' or 'abort'. Teardown phases are
        not interrupted by Ctrl-C. The phase's own deadline moves on by the time a question to
        the operator was open (`run.prompt`); the run's does not."""
        paused_before = self._paused_s()
        while True:
            if self._abort.is_set() and not teardown:
                return "abort"
            wait = _POLL_S
            now = time.monotonic()
            if run_deadline is not None:
                remaining = run_deadline - now
                if remaining <= 0:
                    return "done" if job.done.is_set() else "run-timeout"
                wait = min(wait, remaining)
            if phase_deadline is not None:
                remaining = phase_deadline + (self._paused_s() - paused_before) - now
                if remaining <= 0:
                    return "done" if job.done.is_set() else "timeout"
                wait = min(wait, remaining)
            if job.done.wait(wait):
                return "done"

    # -- prompts --------------------------------------------------------------------------------

    def _ask(self, request: PromptRequest) -> Answer:
        """`run.prompt()`: ask whoever answers, recording question and answer in the phase.

        While the question is open the phase's own timeout is paused (not in teardown: the
        safe state must not wait on an operator); a stop of the phase (Ctrl-C, Abort, the run's
        timeout) ends the wait and stops the phase."""
        if self._prompts is None:
            raise PromptError(
                "run.prompt: nobody to ask on this station: give answers (station run "
                "--answers FILE), run on a terminal, or use the operator page (station serve)"
            )
        request = dataclasses.replace(request, phase=self._current_phase)
        if request.image is not None:
            self._check_image(request.image)
        record = PromptRecord(
            key=request.key,
            text=request.text,
            kind=request.kind,
            choices=list(request.choices) if request.choices is not None else None,
            asked_at=utc_now(),
        )
        self._phase_prompts.append(record)
        token = current_token()
        cancel = _TokenSignal(token) if token is not None else _NEVER
        pause = not self._in_teardown
        if pause:
            self._pause(1)
        try:
            answer = self._prompts.ask(request, cancel)
        except PromptCancelled:
            if token is not None and token.cancelled:
                raise PhaseCancelled(token.reason) from None
            raise
        finally:
            if pause:
                self._pause(-1)
        record.answer = answer
        record.answered_by = getattr(self._prompts, "name", type(self._prompts).__name__)
        record.answered_at = utc_now()
        return answer

    def _check_image(self, image: str) -> None:
        """A prompt's image must be a file within the procedure's directory."""
        path = (self._procedure_dir / image).resolve()
        if not path.is_relative_to(self._procedure_dir):
            raise ValueError(
                f"run.prompt: image {image!r} is outside the procedure's directory "
                f"{self._procedure_dir}; give a path relative to it"
            )
        if not path.is_file():
            raise FileNotFoundError(f"run.prompt: image {image!r}: no such file {path}")

    def _pause(self, delta: int) -> None:
        with self._prompt_lock:
            now = time.monotonic()
            if delta > 0 and self._open_prompts == 0:
                self._paused_since = now
            self._open_prompts += delta
            if delta < 0 and self._open_prompts == 0:
                self._paused_total += now - self._paused_since

    def _paused_s(self) -> float:
        """How long (s) questions to the operator have been open in this run, so far."""
        with self._prompt_lock:
            open_s = time.monotonic() - self._paused_since if self._open_prompts else 0.0
            return self._paused_total + open_s

    def _judge(
        self,
        result: Any,
        error: BaseException | None,
        status: str,
        reason: str | None,
        measurements: list[MeasurementRecord],
    ) -> tuple[PhaseOutcome, ErrorInfo | None, str | None]:
        if status in ("timeout", "run-timeout"):
            return PhaseOutcome.TIMEOUT, ErrorInfo(type="Timeout", message=reason or ""), reason
        if status == "abort":
            return PhaseOutcome.ABORTED, ErrorInfo(type="Aborted", message=reason or ""), reason
        if error is not None:
            if isinstance(error, PhaseCancelled):  # cancelled by a racing stop
                return (
                    PhaseOutcome.ERROR,
                    ErrorInfo(type="PhaseCancelled", message=str(error)),
                    str(error),
                )
            return PhaseOutcome.ERROR, error_info(error, self._procedure_dir), None
        if result is _RUN_IF_FALSE:
            return PhaseOutcome.SKIP, None, "run_if returned false"
        if result is SKIP:
            return PhaseOutcome.SKIP, None, "the phase returned SKIP"
        if result is not None:
            message = f"phase returned {safe_repr(result)}; a phase returns None or station.SKIP"
            return PhaseOutcome.ERROR, ErrorInfo(type="InvalidReturn", message=message), None
        if any(m.outcome != "PASS" for m in measurements):
            return PhaseOutcome.FAIL, None, None
        return PhaseOutcome.PASS, None, None

    # -- the run --------------------------------------------------------------------------------

    def _finish(self) -> None:
        self._outcome_decided = True  # a stop signal from now on waits until the record is out
        record = self.record
        outcome = Outcome.PASS
        final_attempts = _final_attempts(record.phases)
        for rec in final_attempts:
            candidate = _RUN_OUTCOME_OF.get(rec.outcome)
            if candidate and _PRECEDENCE.index(candidate) > _PRECEDENCE.index(outcome):
                outcome = candidate
                record.outcome_reason = _reason_of(rec)
        if outcome == Outcome.FAIL:
            failed = [_reason_of(rec) for rec in final_attempts if rec.outcome == PhaseOutcome.FAIL]
            record.outcome_reason = "; ".join(failed)
        if self._abort.is_set():
            outcome, record.outcome_reason = Outcome.ABORTED, self._abort_reason
        elif self._timeout_reason and outcome in (Outcome.PASS, Outcome.FAIL):
            outcome, record.outcome_reason = Outcome.TIMEOUT, self._timeout_reason
        main_ran = [r for r in final_attempts if not r.teardown and r.outcome != PhaseOutcome.SKIP]
        if outcome == Outcome.PASS and not main_ran:
            outcome, record.outcome_reason = (
                Outcome.ERROR,
                "every phase was skipped: nothing was tested",
            )
        if self._unsafe:  # a bench not known to be safe outranks every other outcome
            before = f" (the run had ended {outcome}: {record.outcome_reason})"
            outcome, record.outcome_reason = (
                Outcome.ERROR,
                "safe state NOT verified, check the bench before touching the unit: "
                + "; ".join(self._unsafe)
                + (before if outcome != Outcome.PASS else ""),
            )
        record.outcome = outcome
        record.marginal = outcome == Outcome.PASS and any(
            m.marginal for rec in final_attempts for m in rec.measurements
        )
        # The unit as the phases left it (a phase may read its revision from the board).
        record.part_number, record.revision = self.dut.part_number, self.dut.revision
        record.batch_number = self.dut.batch_number
        record.sub_units = list(self.dut.sub_units)
        record.metadata.update(recordable_metadata(self.run.metadata))
        record.logs = self._capture.finish()
        record.ended_at = utc_now()
        self._emit("run_ended", record)

    def _attach(self, source: Path, name: str | None) -> None:
        name = name or source.name
        stored: str | None = None
        for listener in self._listeners:
            stored = listener.store_attachment(source, name) or stored
        self.record.attachments.append(
            AttachmentRecord(
                name=name,
                path=stored or str(source.resolve()),
                size=source.stat().st_size,
                phase=self._current_phase,
            )
        )

    def _on_log(self, entry: LogEntry, in_phase: bool) -> None:
        self._emit("log_added", entry, self._current_phase if in_phase else None)

    def _emit(self, event: str, *args: Any) -> None:
        """Tell every listener. A listener that fails (a full disk, a closed terminal) must not
        stop the run: teardown still has to put the instruments in a safe state."""
        for listener in self._listeners:
            try:
                getattr(listener, event)(*args)
            except Exception as exc:
                listener.failures.append(f"{event}: {type(exc).__name__}: {safe_str(exc)}")

    # -- signals --------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[signal.Signals, Any]:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._outcome_decided:
            self._held_signals.append(signum)
        else:
            self.abort(_SIGNAL_REASONS.get(signal.Signals(signum).name, f"signal {signum}"))

    def _restore_signal_handlers(self, previous: dict[signal.Signals, Any]) -> None:
        """Put back the handlers in place before; then deliver the first signal that was held
        (the record is out by now), e.g. as KeyboardInterrupt."""
        for signum, handler in previous.items():
            if handler is not None:  # None: installed outside Python; cannot be restored
                signal.signal(signum, handler)
        if previous and self._held_signals:
            signal.raise_signal(self._held_signals[0])


class _TokenSignal:
    """A phase's cancel token as the `CancelSignal` a prompt provider watches."""

    def __init__(self, token: CancelToken) -> None:
        self._token = token

    def is_set(self) -> bool:
        return self._token.cancelled

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self._token.sleep(timeout if timeout is not None else 365 * 86400.0)
        except PhaseCancelled:
            return True
        return False


class _Never:
    """The cancel signal of a prompt asked outside any phase: never set."""

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        time.sleep(timeout if timeout is not None else 365 * 86400.0)
        return False


_NEVER = _Never()


def _call_phase(
    ph: Phase, injectables: Mapping[str, Any], measurements: Measurements
) -> Callable[..., Any]:
    """The callable the worker runs: run_if first (same thread, same timeout), then the phase."""
    if ph.run_if is None:
        return ph.func

    run_if = ph.run_if

    def call(**kwargs: Any) -> Any:
        available = {**injectables, "measurements": measurements}
        if not run_if(**{name: available[name] for name in ph.run_if_params}):
            return _RUN_IF_FALSE
        return ph.func(**kwargs)

    return call


def _final_attempts(phases: list[PhaseRecord]) -> list[PhaseRecord]:
    """The last attempt of each phase: earlier attempts were retried and do not decide."""
    last: dict[tuple[str, bool], PhaseRecord] = {}
    for rec in phases:
        last[(rec.name, rec.teardown)] = rec
    return list(last.values())


def _reason_of(rec: PhaseRecord) -> str:
    if rec.outcome == PhaseOutcome.FAIL:
        failed = [m.name for m in rec.measurements if m.outcome != "PASS"]
        return f"{rec.name} failed: {', '.join(failed)}"
    detail = rec.reason or (f"{rec.error.type}: {rec.error.message}" if rec.error else "")
    return f"phase {rec.name!r} ended {rec.outcome}: {detail}"
