"""OTLP logs in protobuf, for the HTTP source's ``/v1/logs`` and its OTLP/gRPC server: an
``ExportLogsServiceRequest`` decoded with the ``opentelemetry-proto`` package into the same
:class:`~shipper.sidecar.sources.wire.OtlpRecord` the JSON decoder gives (so that one mapping,
in shipper/sidecar/sources/http.py, turns both encodings into events), and the answers OTLP
gives in protobuf: ``ExportLogsServiceResponse`` (``partial_success`` when records were
refused) and ``google.rpc.Status``.

Values are read as the JSON decoder reads them: ``trace_id``, ``span_id`` and ``bytesValue`` as
hex, integers as ``int``, a key-value list as a dict, an empty ``AnyValue`` as None. A value
nested deeper than ``max_json_depth``, counted as the JSON encoding of the same request would
nest it, is kept as its text in the JSON encoding, as the JSON decoder keeps it.

What protobuf cannot read costs only its part. When the request as a whole does not parse (cut
short, damaged, a string that is not UTF-8, nested deeper than protobuf's own limit of about
100 messages), it is walked field by field with
:func:`~shipper.sidecar.sources.wire.proto_fields` and each resource, scope and log record
parsed alone: the part that does not parse is named (``resourceLogs[0].scopeLogs[1].
logRecords[3]: ...``) and its neighbours ship. A field of a wrong wire type is an unknown field
to protobuf, skipped as every OTLP receiver skips it.
"""

from __future__ import annotations

import contextlib
import json
from functools import cache
from types import SimpleNamespace
from typing import Any, NamedTuple

from shipper.sidecar.sources.wire import (
    DecodeError,
    OtlpRecord,
    TooManyEntries,
    not_read,
    proto_fields,
)

__all__ = ["OtlpOutcome", "decode_otlp_protobuf", "export_response", "status_protobuf"]

#: where an AnyValue sits in the JSON encoding of a request (the outermost object is level 1):
#: a resource's attribute value, a record's body, a record's attribute value; inside, a
#: key-value list's value is 4 levels deeper, an array's element 3
_RESOURCE_VALUE, _BODY, _RECORD_VALUE = 7, 8, 10
_KVLIST_STEP, _ARRAY_STEP = 4, 3


class OtlpOutcome(NamedTuple):
    """What became of one OTLP request, whatever its transport and encoding."""

    #: log records shipped
    accepted: int
    #: log records refused
    refused: int
    #: why (None: every record was taken); with nothing accepted, the request is refused
    message: str | None


@cache
def _protos() -> SimpleNamespace:
    """The message classes (imported once, on the first protobuf request)."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        from google.protobuf.json_format import MessageToDict
        from google.protobuf.message import DecodeError as ProtobufError
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.logs.v1 import logs_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
    except ImportError:
        raise DecodeError("OTLP in protobuf needs the opentelemetry-proto package: pip install "
                          "'shipper[sidecar]'") from None
    # google.rpc.Status {int32 code = 1; string message = 2}, built here rather than taken
    # from googleapis-common-protos for one message of two fields
    file = descriptor_pb2.FileDescriptorProto(name="shipper/sidecar/status.proto",
                                              package="google.rpc", syntax="proto3")
    status = file.message_type.add(name="Status")
    field = descriptor_pb2.FieldDescriptorProto
    status.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=field.TYPE_STRING,
                     label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return SimpleNamespace(
        Request=logs_service_pb2.ExportLogsServiceRequest,
        Response=logs_service_pb2.ExportLogsServiceResponse,
        Resource=resource_pb2.Resource, Scope=common_pb2.InstrumentationScope,
        LogRecord=logs_pb2.LogRecord, Error=ProtobufError, to_dict=MessageToDict,
        Status=message_factory.GetMessageClass(pool.FindMessageTypeByName(
            "google.rpc.Status")))


def decode_otlp_protobuf(body: bytes, max_depth: int, max_entries: int,
                         ) -> tuple[list[OtlpRecord], list[str], int]:
    """An ``ExportLogsServiceRequest`` in protobuf → its records, one error per record, scope
    or resource that cannot be read (naming it), and how many log records those errors cost;
    raises :class:`~shipper.sidecar.sources.wire.DecodeError` when the request itself cannot
    be read, and :class:`~shipper.sidecar.sources.wire.TooManyEntries` when it holds more than
    ``max_entries`` log records (or resources, or scopes), counted by a walk of its fields
    before protobuf parses it (a parsed empty record takes about 130 bytes: 2 million of them,
    4 MiB sent, took 260 MiB)."""
    pb = _protos()
    _count(body, max_entries)
    try:
        request = pb.Request.FromString(body)
    except pb.Error:
        return _by_parts(pb, body, max_depth)
    if body and not request.resource_logs:
        raise DecodeError("no resource_logs (field 1): only fields an ExportLogsServiceRequest "
                          "does not have (is it OTLP logs in protobuf?)")
    values = _Values(pb, max_depth)
    records: list[OtlpRecord] = []
    for resource_logs in request.resource_logs:
        resource = values.attributes(resource_logs.resource.attributes, _RESOURCE_VALUE)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope.name or None
            records.extend([values.record(record, resource, scope)
                            for record in scope_logs.log_records])
    return records, [], 0


def _count(body: bytes, max_entries: int) -> None:
    """Raise :class:`TooManyEntries` when the request holds more than ``max_entries``
    resources, scopes or log records; the walk stops there, so it costs at most that many
    steps. A part the walk cannot read counts what it held up to its damage (the request
    itself cannot be read past damage at its top: that is a 400 later)."""
    budget = _Budget(max_entries)
    with contextlib.suppress(DecodeError):
        for number, resource_logs in proto_fields(body):
            if number != 1 or not isinstance(resource_logs, bytes):
                continue
            budget.take("resourceLogs")
            with contextlib.suppress(DecodeError):
                for inner, scope_logs in proto_fields(resource_logs):
                    if inner != 2 or not isinstance(scope_logs, bytes):
                        continue
                    budget.take("scopeLogs")
                    budget.take("log records", _records_in(scope_logs, budget.left("log records")))


def _by_parts(pb: SimpleNamespace, body: bytes, max_depth: int,
              ) -> tuple[list[OtlpRecord], list[str], int]:
    """A request that does not parse whole, read part by part (see the module's notes); what
    it holds was counted by :func:`_count` first."""
    try:
        parts = [value for number, value in proto_fields(body)
                 if number == 1 and isinstance(value, bytes)]
    except DecodeError as exc:
        raise DecodeError(f"not an ExportLogsServiceRequest in protobuf: {exc}") from None
    if not parts:
        raise DecodeError("not an ExportLogsServiceRequest in protobuf: no resource_logs "
                          "(field 1) could be read")
    values = _Values(pb, max_depth)
    records: list[OtlpRecord] = []
    errors: list[str] = []
    refused = 0
    for i, raw in enumerate(parts):
        where = f"resourceLogs[{i}]"
        try:
            fields = list(proto_fields(raw))
        except DecodeError as exc:
            errors.append(f"{where}: {exc} (its log records not read)")
            continue
        scopes: list[tuple[bytes, list[bytes] | DecodeError]] = []
        for raw_scope in (v for n, v in fields if n == 2 and isinstance(v, bytes)):
            try:
                scopes.append((raw_scope, _record_fields(raw_scope)))
            except DecodeError as exc:
                scopes.append((raw_scope, exc))
        try:
            resource_message = pb.Resource.FromString(_joined(fields, 1))
        except pb.Error as exc:
            lost = sum(len(found) for _, found in scopes if isinstance(found, list))
            errors.append(f"{where}.resource: {_why(exc, 'a Resource')} ({not_read(lost)})")
            refused += lost
            continue
        resource = values.attributes(resource_message.attributes, _RESOURCE_VALUE)
        for j, (raw_scope, found) in enumerate(scopes):
            place = f"{where}.scopeLogs[{j}]"
            if isinstance(found, DecodeError):
                errors.append(f"{place}: {found} (its log records not read)")
                continue
            try:
                scope = pb.Scope.FromString(_joined(proto_fields(raw_scope), 1)).name or None
            except pb.Error as exc:
                errors.append(f"{place}.scope: {_why(exc, 'an InstrumentationScope')} "
                              f"({not_read(len(found))})")
                refused += len(found)
                continue
            for k, raw_record in enumerate(found):
                try:
                    record = pb.LogRecord.FromString(raw_record)
                except pb.Error as exc:
                    errors.append(f"{place}.logRecords[{k}]: "
                                  f"{_why(exc, 'a LogRecord', raw_record)}")
                    refused += 1
                    continue
                records.append(values.record(record, resource, scope))
    return records, errors, refused


class _Budget:
    """What a walk has counted of resources, scopes and log records; past the limit
    (``max_entries_per_request``) it raises, so the walk never goes further."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts = {"resourceLogs": 0, "scopeLogs": 0, "log records": 0}

    def take(self, what: str, n: int = 1) -> None:
        """``n`` more resources, scopes or log records."""
        self.counts[what] += n
        if self.counts[what] > self.limit:
            raise TooManyEntries(what, self.counts[what], self.limit, at_least=True)

    def left(self, what: str) -> int:
        return self.limit - self.counts[what]


def _records_in(scope_logs: bytes, most: int) -> int:
    """How many log records a ``ScopeLogs`` holds (up to its damage, if any), counted up to
    one past ``most``."""
    seen = 0
    with contextlib.suppress(DecodeError):
        for field, value in proto_fields(scope_logs):
            if field == 2 and value.__class__ is bytes:
                seen += 1
                if seen > most:
                    break
    return seen


def _record_fields(scope_logs: bytes) -> list[bytes]:
    """The log records (field 2) of a ``ScopeLogs``, each its bytes."""
    return [v for n, v in proto_fields(scope_logs) if n == 2 and isinstance(v, bytes)]


def _joined(fields: Any, number: int) -> bytes:
    """Every occurrence of a message field, joined: protobuf merges them so."""
    return b"".join(v for n, v in fields if n == number and isinstance(v, bytes))


def _why(exc: Exception, what: str, raw: bytes | None = None) -> str:
    """Why protobuf could not read a part, in words."""
    if "MaxDepth" in str(exc):
        return "nested deeper than protobuf reads (about 100 messages inside each other)"
    if raw is not None:
        try:
            for _ in proto_fields(raw):
                pass
        except DecodeError as walk:
            return f"not {what} in protobuf: {walk}"
    return f"not {what} in protobuf (damaged, or a string that is not UTF-8)"


class _Values:
    """A parsed message's values as the JSON decoder gives them."""

    def __init__(self, pb: SimpleNamespace, max_depth: int) -> None:
        self.max_depth = max_depth
        self.to_dict = pb.to_dict

    def record(self, record: Any, resource: dict[str, Any], scope: str | None) -> OtlpRecord:
        return OtlpRecord(
            record.time_unix_nano or record.observed_time_unix_nano,
            record.severity_number or None, record.severity_text or None,
            self.value(record.body, _BODY) if record.HasField("body") else None,
            self.attributes(record.attributes, _RECORD_VALUE) if record.attributes else {},
            record.trace_id.hex() or None, record.span_id.hex() or None,
            record.event_name or None, resource, scope)

    def attributes(self, items: Any, level: int) -> dict[str, Any]:
        """``[KeyValue]`` → a dict, each value at ``level``."""
        return {kv.key: self.value(kv.value, level) if kv.HasField("value") else None
                for kv in items}

    def value(self, value: Any, level: int) -> Any:
        """An ``AnyValue`` at ``level`` → a plain Python value (or, deeper than the bound,
        its text in the JSON encoding)."""
        if level > self.max_depth:
            return json.dumps(self.to_dict(value))
        kind = value.WhichOneof("value")
        if kind == "string_value":
            return value.string_value
        if kind == "int_value":
            return value.int_value
        if kind == "bool_value":
            return value.bool_value
        if kind == "double_value":
            return value.double_value
        if kind == "kvlist_value":
            return self.attributes(value.kvlist_value.values, level + _KVLIST_STEP)
        if kind == "array_value":
            return [self.value(item, level + _ARRAY_STEP) for item in value.array_value.values]
        if kind == "bytes_value":
            return bytes(value.bytes_value).hex()
        return None  # an empty AnyValue


def export_response(refused: int, message: str | None) -> bytes:
    """An ``ExportLogsServiceResponse`` in protobuf: empty when every record was taken, else
    with ``partial_success`` (how many records were refused, and why)."""
    pb = _protos()
    response = pb.Response()
    if message is not None:
        response.partial_success.rejected_log_records = refused
        response.partial_success.error_message = message
    return bytes(response.SerializeToString())


def status_protobuf(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` in protobuf: OTLP/HTTP's answer to a request it refuses."""
    return bytes(_protos().Status(code=code, message=message).SerializeToString())
