"""The chaos suite (issue 5): every sink checked against etcd's own history after a storm.

One run, all on 127.0.0.1 with free ports, starts etcd 3.5, the Kafka-protocol broker (Tansu), a
persistent Redis (``appendonly yes``, ``appendfsync always``) and two bridge instances with the
same ``BRIDGE_NAME`` and leader election on, feeding every sink of ``tests.sinks`` (or those
``--sinks`` names: file, redis, kafka, nats, postgres; the NATS and PostgreSQL servers are
private ones, paused and restarted like Redis). Once every sink holds its initial snapshot, a
writer performs thousands of mixed operations on the prefix: puts, updates, deletes, range
deletes, multi-key transactions (some also touching keys outside the prefix), values that are
empty, binary or large, and keys bound to 1-2 s leases that etcd itself deletes when they
expire. Meanwhile the chaos thread SIGKILLs the active bridge (and starts a new instance, so two
always exist), SIGSTOPs and SIGCONTs etcd, Redis and the broker, and restarts etcd and Redis
(same data) once each.

Then the bridges catch up to a sentinel put after everything else, are stopped, and each
sink is read back independently (the file line by line, the Redis stream with XRANGE, every
Kafka partition with aiokafka) and compared with **etcd's own history of the prefix**, read
by a watch from revision 1 with ``prev_kv``. The writer records nothing: lease expiries and
operations retried across a pause happen as etcd decides, so etcd is the only reference.
Each sink must hold its snapshot at revision R (equal to etcd's state at R) and then every
change after R: every ``(revision, index)`` once, in order (per partition for Kafka, where
each key must also sit in its murmur2 partition), with the exact event etcd implies (type,
op, key, value, previous value, revisions, version, lease).

With ``--refusals N``, N operations drawn from the seed put a value of 1.1 MB under a key of
its own instead (``writer.OVERSIZED``): the file, Redis and PostgreSQL hold it, Kafka and NATS
refuse it for good (their records hold 1 MB). The run gives Kafka ``ON_REFUSED=omit_value``
and NATS ``dead_letter`` (``cluster.REFUSAL_POLICIES``), and the check expects each such event
at its position without its values (sizes given) in Kafka, and whole in NATS's dead-letter
file and nowhere else, once each (``check``); the line counts them as ``refused``.

Design choices that keep the run honest rather than lucky:

- *One chaos action at a time.* Actions are scheduled at operation numbers drawn from the
  seed; the writer triggers them and keeps writing while they run, but waits for the previous
  one to finish before triggering the next. So a kill never coincides with a frozen broker:
  that overlap is a documented limit of the Kafka sink (docs/kafka.md, "one instance per
  pipeline"), not something this suite should report as a bug.
- *The active bridge is the one etcd names.* The election key's value ends with the
  holder's pid; the chaos thread kills that process once its log also says it leads.
- *No compaction*, but with ``--sink-down SECONDS``: etcd keeps its whole history, which the
  check replays. ``--sink-down`` stops one sink's server (``--down-sink``, Redis by default:
  one that keeps its data) early in the run for that long, after every sink has caught up;
  the writer goes on meanwhile, and etcd's history is compacted three times inside the
  outage, past what the sink holds, each time only after the reference has read it
  (``reference.Recorded``). The next action waits until every sink is past the last
  compaction. With ``--journal`` the sink must then get every change from the log, with no
  resync (the line's ``resyncs``: snapshots after the initial one, in any sink; one fails
  the run). Without it the sink resyncs: the check takes the resync's snapshot for the
  changes it replaces, and holds its keys to etcd's state at its revision (``check``).

One module per part, each importable without starting anything:

- ``common``: the names the bridges are configured with and the sinks are read back by;
- ``cluster``: the servers and the bridge instances, and which instance is active;
- ``writer``: the operations on etcd, planned from the seed alone;
- ``faults``: the chaos actions, their plan, and the thread that performs them;
- ``reference``: etcd's history of the prefix, and what it says a sink must hold;
- ``tests.sinks`` (outside the package): each sink's server, settings and readers, whole
  for the check (anything malformed counted as unexpected) or its last event for waiting;
- ``check``: the comparison of what a sink holds with the reference, counted;
- ``engine``: one run from start to figures: the schedule, the catch-up, the check.

``python -m tests.chaos --operations 30000 --kills 10 --seed 1`` prints one line of figures
and exits 1 unless lost, duplicated, out-of-order and unexpected are all zero (and the
chaos itself went as planned). ``tests/integration/test_chaos.py`` runs a shorter variant.
"""
