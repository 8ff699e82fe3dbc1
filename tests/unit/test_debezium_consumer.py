"""The Flink-style Debezium reader of tests.formats: it folds the format's records into the
table etcd holds, and refuses what Flink would refuse or what contradicts its rows."""

import orjson
import pytest

from bridge.events import Event, EventType, Op
from bridge.formats import FormatContext
from bridge.formats.debezium import DebeziumFormat
from config.keyspace import KeySpace
from config.output import FormatName, OutputSettings, ValuesMode
from tests.formats.debezium_consumer import ChangelogError, DebeziumTable, apply
from tests.unit.test_format_debezium import context, create, delete, snapshot, update


def debezium(*, values: ValuesMode = ValuesMode.BYTES, schemas: bool = False) -> DebeziumFormat:
    output = OutputSettings(format=FormatName.DEBEZIUM, debezium_schemas=schemas)
    return DebeziumFormat(context(values), output)


def history() -> list[Event]:
    """create a, create b, update a, delete b, create binary c, update c."""
    binary = b"/app/\xff"
    created_c = create(binary, b"\xfe", revision=9)
    updated_c = update(binary, b"\xfe\x01", b"\xfe")
    updated_c.revision = updated_c.mod_revision = 10
    updated_c.create_revision = updated_c.prev_create_revision = updated_c.prev_mod_revision = 9
    created_b = create(b"/app/b", b"x", revision=6)
    created_b.lease = 0
    deleted_b = delete(b"/app/b", b"x")
    deleted_b.prev_mod_revision = deleted_b.prev_create_revision = 6
    deleted_b.prev_version = 1
    return [create(), created_b, update(), deleted_b, created_c, updated_c]


@pytest.mark.parametrize("schemas", [False, True])
@pytest.mark.parametrize("values", list(ValuesMode))
def test_a_history_folds_into_the_last_rows(values: ValuesMode, schemas: bool) -> None:
    format_ = debezium(values=values, schemas=schemas)
    table = apply([format_.record_value(event) for event in history()], {})
    assert sorted(table) == [b"/app/a", b"/app/\xff"]
    assert table[b"/app/a"]["version"] == 2
    assert table[b"/app/a"]["value"] in ("2", 2)
    assert table[b"/app/\xff"]["value"] == "/gE="
    assert table[b"/app/\xff"]["b64"] == ["key", "value"]


def test_snapshot_reads_insert_and_null_records_are_skipped() -> None:
    format_ = debezium()
    consumer = DebeziumTable()
    for event in snapshot(3):
        consumer.apply(format_.record_value(event))  # markers: None
    assert sorted(consumer.rows) == [b"/app/k1", b"/app/k2", b"/app/k3"]
    assert consumer.skipped == 2
    assert consumer.applied == 3


def test_a_before_that_is_not_the_held_row_fails() -> None:
    format_ = debezium()
    stale = update()
    stale.prev_version = 7  # not the version the create left
    records = [format_.encode(create()), format_.encode(stale)]
    with pytest.raises(ChangelogError, match="not the row held"):
        apply(records, {})


def test_a_change_of_a_key_never_seen_fails() -> None:
    with pytest.raises(ChangelogError, match="not the row held"):
        apply([debezium().encode(update())], {})
    with pytest.raises(ChangelogError, match="not the row held"):
        apply([debezium().encode(delete())], {})


@pytest.mark.parametrize("event", [update(prev=None), delete(prev=None)])
def test_a_null_before_fails_as_in_flink(event: Event) -> None:
    table = apply([debezium().encode(create())], {})
    with pytest.raises(ChangelogError, match='"before" field'):
        apply([debezium().encode(event)], table)


def test_an_unknown_op_fails() -> None:
    document = orjson.loads(debezium().encode(create()))
    document["op"] = "t"
    with pytest.raises(ChangelogError, match="Unknown"):
        apply([orjson.dumps(document)], {})


def test_message_events_fail_unless_accepted() -> None:
    begin = snapshot(1)[0]
    record = debezium().encode(begin)
    with pytest.raises(ChangelogError, match="Unknown"):
        apply([record], {})
    consumer = DebeziumTable(messages=True)
    consumer.apply(record)
    assert consumer.messages == [{"prefix": "etcd-bridge", "content": begin.to_dict()}]


def test_the_table_is_changed_in_place_and_returned() -> None:
    table: dict[bytes, dict[str, object]] = {}
    assert apply([debezium().encode(create())], table) is table
    assert list(table) == [b"/app/a"]


def test_keys_come_back_bytes_exact() -> None:
    key = b"/app/\x00\xc3\x28"
    event = Event(
        revision=3,
        index=0,
        type=EventType.PUT,
        op=Op.CREATE,
        key=key,
        value=b"v",
        mod_revision=3,
        create_revision=3,
        version=1,
    )
    wide = DebeziumFormat(
        FormatContext(pipeline="p", cluster="c", keyspace=KeySpace.of([b""])),
        OutputSettings(format=FormatName.DEBEZIUM),
    )
    assert list(apply([wide.encode(event)], {})) == [key]
