"""harness/core/signals.py: SIGINT and SIGTERM become Interrupted, whatever was inherited."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from harness.core import signals


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(1)  # the handler runs in the main thread long before this ends


@pytest.fixture
def ignored_sigint():
    """SIGINT ignored, as in a job started in the background (`make test &`)."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, before)
    signals.reset()


def test_interrupted_says_which_signal_and_its_exit_status():
    e = signals.Interrupted(signal.SIGTERM)
    assert isinstance(e, KeyboardInterrupt)
    assert (e.name, e.reason, e.exit_code) == ("SIGTERM", "interrupted (SIGTERM)", 143)
    assert signals.Interrupted().exit_code == 130
    assert signals.of(KeyboardInterrupt()).name == "SIGINT"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_either_signal_raises_even_if_sigint_was_ignored(ignored_sigint, signum):
    with signals.handled():
        with pytest.raises(signals.Interrupted) as e:
            _send(signum)
        assert e.value.signum == signum and signals.received() == signum
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored


def test_a_second_signal_does_not_cut_the_ending_short(ignored_sigint):
    with signals.handled():
        with pytest.raises(signals.Interrupted):
            _send(signal.SIGTERM)
        _send(signal.SIGINT)  # while the results are written: recorded, not raised
        assert signals.received() == signal.SIGTERM


def test_a_signal_inside_deferred_is_raised_at_its_end(ignored_sigint):
    steps = []
    with signals.handled():
        with pytest.raises(signals.Interrupted) as e:
            with signals.deferred():
                _send(signal.SIGTERM)
                steps.append("QEMU ended")
        assert steps == ["QEMU ended"] and e.value.name == "SIGTERM"


def test_other_threads_see_the_signal_through_check(ignored_sigint):
    seen: list[str] = []

    def poll() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                signals.check()
            except signals.Interrupted as e:
                seen.append(e.reason)
                return
            time.sleep(signals.POLL_S)

    with signals.handled():
        t = threading.Thread(target=poll)
        t.start()
        with pytest.raises(signals.Interrupted):
            _send(signal.SIGTERM)
        t.join(10)
    assert seen == ["interrupted (SIGTERM)"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_kernel_build_step_ends_with_its_whole_process_group():
    import subprocess

    from harness.build import kernel

    proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60; wait"], start_new_session=True)
    timer = threading.Timer(0.5, signals.request, args=(signal.SIGTERM,))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(signals.Interrupted) as e:
            kernel._wait_stoppable(proc)
    finally:
        timer.cancel()
        signals.reset()
    assert e.value.name == "SIGTERM" and time.monotonic() - start < 10
    assert proc.returncode == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(proc.pid), "a process of the build step outlived it"
