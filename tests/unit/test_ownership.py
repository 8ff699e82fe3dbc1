"""Who holds a destination, and what a sink does about a claim that is not its own
(``bridge.ownership``): the markers' round trip, whether a process still runs, each rule."""

import subprocess

import pytest

from bridge import ownership
from bridge.ownership import Claim, Claimant, Owner
from tests.fixtures.owners import gone_process
from tests.fixtures.processes import wait_for

ME = Owner.this_process("orders")


def elsewhere(pipeline: str = "orders") -> Owner:
    """An owner on another machine (another boot id or pid namespace)."""
    return Owner(pipeline=pipeline, host="other", pid=ME.pid, process="0123456789ab/42")


class TestOwner:
    def test_the_marker_round_trips_and_names_pipeline_pid_and_host(self) -> None:
        assert ME.process, "/proc says which process this is"
        assert Owner.decode(ME.marker) == ME == Owner.decode(ME.encode())
        assert str(ME).startswith(f"pipeline 'orders', pid {ME.pid} on host ")

    def test_a_marker_without_the_process_still_decodes(self) -> None:
        """Lock files written before the process was recorded."""
        assert Owner.decode(b"orders a 1\n") == Owner("orders", "a", 1)

    @pytest.mark.parametrize("raw", [b"", b"orders a", b"orders a one", b"a b 1 c d", b"\xff 1 2"])
    def test_anything_else_decodes_to_none(self, raw: bytes) -> None:
        assert Owner.decode(raw) is None

    def test_this_process_and_a_live_child_run(self, bystander: subprocess.Popen[bytes]) -> None:
        assert ME.running() is True
        assert Owner.of_process("orders", pid=bystander.pid).running() is True

    def test_a_reaped_process_does_not_run(self) -> None:
        assert gone_process("orders").running() is False

    def test_a_killed_child_not_yet_reaped_does_not_run(self) -> None:
        """kill -9 leaves a zombie until its parent waits: it runs no more."""
        process = subprocess.Popen(["sleep", "60"])  # noqa: S607 - a test's own helper
        owner = Owner.of_process("orders", pid=process.pid)
        assert owner.running() is True
        process.kill()
        try:  # the signal is delivered asynchronously: a zombie, soon
            wait_for(lambda: owner.running() is False, timeout=10, what="a zombie")
        finally:
            process.wait()

    def test_a_reused_pid_is_another_process(self, bystander: subprocess.Popen[bytes]) -> None:
        machine, _, started = Owner.of_process("orders", pid=bystander.pid).process.rpartition("/")
        earlier = Owner("orders", ME.host, bystander.pid, f"{machine}/{int(started) - 1}")
        assert earlier.running() is False

    def test_another_machine_or_no_process_cannot_be_told(self) -> None:
        assert elsewhere().running() is None
        assert Owner("orders", ME.host, ME.pid).running() is None


class TestClaimant:
    def test_its_own_claim_and_a_gone_process_are_taken(self) -> None:
        claimant = Claimant(ME, ha=False)
        assert claimant.judge(ME, lapses_in=10) is Claim.TAKE
        assert claimant.judge(gone_process("orders"), lapses_in=10) is Claim.TAKE

    def test_a_running_holder_or_another_pipeline_is_refused(
        self, bystander: subprocess.Popen[bytes]
    ) -> None:
        claimant = Claimant(ME, ha=False)
        assert claimant.judge(Owner.of_process("orders", pid=bystander.pid), lapses_in=10) is (
            Claim.REFUSE
        )
        assert claimant.judge(elsewhere("users"), lapses_in=10) is Claim.REFUSE
        assert claimant.judge(None, lapses_in=10) is Claim.REFUSE
        assert claimant.judge(elsewhere(), lapses_in=None) is Claim.REFUSE

    def test_with_ha_the_pipeline_takes_over_even_from_a_running_holder(
        self, bystander: subprocess.Popen[bytes]
    ) -> None:
        claimant = Claimant(ME, ha=True)
        running = Owner.of_process("orders", pid=bystander.pid)
        assert claimant.judge(running, lapses_in=10) is Claim.TAKE_OVER
        assert claimant.judge(elsewhere(), lapses_in=10) is Claim.TAKE_OVER
        assert claimant.judge(elsewhere("users"), lapses_in=10) is Claim.REFUSE

    def test_a_holder_elsewhere_is_waited_for_until_its_claim_must_have_lapsed(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = [1000.0]
        monkeypatch.setattr(ownership.time, "monotonic", lambda: now[0])
        claimant = Claimant(ME, ha=False)
        assert claimant.judge(elsewhere(), lapses_in=5) is Claim.WAIT
        assert claimant.remaining() == 5 + ownership.GRACE_SECONDS
        now[0] += 5  # a later look at the same claim keeps the first deadline
        assert claimant.judge(elsewhere(), lapses_in=5) is Claim.WAIT
        now[0] += ownership.GRACE_SECONDS
        assert claimant.judge(elsewhere(), lapses_in=5) is Claim.REFUSE, "it was renewed"
        other = Owner("orders", "third", 7, "0123456789ab/43")
        assert claimant.judge(other, lapses_in=5) is Claim.WAIT, "another holder: a new wait"
