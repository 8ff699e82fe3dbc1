"""The contract kit: proves that a sink keeps the ``bridge.sink`` contract, ours or a third
party's, against its real server.

It ships in the package (not under tests/) so that a plug-in's author runs exactly the checks
our own sinks run. Its parts:

- ``History``: an in-memory etcd prefix that emits the events the pump hands a sink, and
  ``applied_state``, what a consumer applying whole revisions holds;
- ``after``/``batches``/``feed``/``deliver``/``pump``/``deliver_with_retries``: a stand-in
  for ``bridge.pump`` (positions past the tail, batches cut anywhere, reopen with backoff on
  ``SinkUnavailableError``);
- ``SinkHarness``: what a sink's tests provide, one fresh destination per check and a reader
  of it that does not go through the sink;
- ``CHECKS``: the checks, plain functions of a harness that raise ``ContractViolation`` (an
  ``AssertionError``) or ``NotApplicable``. No test framework is imported; with pytest::

      @pytest.mark.parametrize("check", contract.CHECKS, ids=contract.check_id)
      def test_contract(check: contract.Check, tmp_path: Path) -> None:
          with MyHarness(tmp_path) as harness:
              try:
                  check(harness)
              except contract.NotApplicable as reason:
                  pytest.skip(str(reason))
"""

from bridge.contract.checks import (
    CHECKS,
    Check,
    ContractViolation,
    NotApplicable,
    binary_keys_and_values_round_trip,
    check_id,
    empty_sink_has_no_tail,
    markers_frame_snapshots_and_resyncs,
    rejected_stops_before_it,
    reopen_returns_the_last_event,
    reopened_after_a_refusal_takes_the_replacement,
    replay_overlapping_the_tail_adds_nothing,
    revision_split_across_batches,
    server_outage_resumes_from_the_tail,
    unavailable_mid_flush_resumes_from_the_tail,
)
from bridge.contract.harness import KEYSPACE, PREFIX, SinkHarness
from bridge.contract.history import Entry, History, applied_state
from bridge.contract.pump import (
    SIZES,
    after,
    batches,
    deliver,
    deliver_with_retries,
    feed,
    pump,
)

__all__ = [
    "CHECKS",
    "KEYSPACE",
    "PREFIX",
    "SIZES",
    "Check",
    "ContractViolation",
    "Entry",
    "History",
    "NotApplicable",
    "SinkHarness",
    "after",
    "applied_state",
    "batches",
    "binary_keys_and_values_round_trip",
    "check_id",
    "deliver",
    "deliver_with_retries",
    "feed",
    "empty_sink_has_no_tail",
    "markers_frame_snapshots_and_resyncs",
    "pump",
    "rejected_stops_before_it",
    "reopen_returns_the_last_event",
    "reopened_after_a_refusal_takes_the_replacement",
    "replay_overlapping_the_tail_adds_nothing",
    "revision_split_across_batches",
    "server_outage_resumes_from_the_tail",
    "unavailable_mid_flush_resumes_from_the_tail",
]
