"""The topic layout, headers and codec of the MQTT wire contract."""

from __future__ import annotations

import json
import re

import pytest

from adapters.mqtt.link import BrokerAddress
from controller.contract.mqtt import Headers, Topics, WireError, decode, encode

TOPICS = Topics("floorctl/v1")


def test_device_topics_round_trip() -> None:
    topic = TOPICS.device("printer", "prn-1", "alert")
    assert topic == "floorctl/v1/printer/prn-1/alert"
    assert TOPICS.parse(topic) == ("printer", "prn-1", "alert")
    assert TOPICS.all_devices("ack") == "floorctl/v1/+/+/ack"
    assert TOPICS.controller_state == "floorctl/v1/controller/state"
    assert TOPICS.inject("PS-1") == "floorctl/v1/sim/PS-1/inject"


@pytest.mark.parametrize("topic", [
    "floorctl/v1/controller/state",  # not a device
    "floorctl/v1/sim/prn-1/inject",
    "floorctl/v1/conveyor/loop-1/ack",  # an OPC UA device kind
    "floorctl/v1/printer/prn-1",  # no channel
    "floorctl/v1/printer/prn-1/ack/extra",
    "floorctl/v10/printer/prn-1/ack",  # another root that merely starts the same
    "other/printer/prn-1/ack",
])
def test_topics_that_are_not_device_channels(topic: str) -> None:
    assert TOPICS.parse(topic) is None


def test_headers_count_up_per_topic() -> None:
    headers = Headers("ptl-01")
    first, second = headers.next("a"), headers.next("a")
    other = headers.next("b")
    assert (first["message_id"], second["message_id"], other["message_id"]) == (1, 2, 1)
    assert first["device_id"] == "ptl-01" and first["version"] == "1.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["timestamp"])


def test_encode_is_compact_json_and_decode_reads_it_back() -> None:
    message = {"header": {"message_id": 1}, "command_id": "c-1", "params": {"zpl": "^XA\u00e9^XZ"}}
    payload = encode(message)
    assert b" " not in payload and json.loads(payload) == message
    assert decode(payload) == message


@pytest.mark.parametrize("payload",
                         [b"", b"\xff\xfe", b"not json", b"[1,2]", b'"text"', b'{"command_id": "x"}',
                                     b'{"header": 5}'])
def test_decode_refuses_what_is_not_a_contract_message(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode(payload)


def test_broker_address_reads_the_protocol_from_the_url() -> None:
    assert BrokerAddress.from_url("mqtt://127.0.0.1:1884") == BrokerAddress("127.0.0.1", 1884, False, "5")
    assert BrokerAddress.from_url("mqtts://broker.site:8883?protocol=3.1.1").protocol == "3.1.1"
    with pytest.raises(ValueError, match="protocol"):
        BrokerAddress.from_url("mqtt://127.0.0.1:1883?protocol=3")


@pytest.mark.parametrize("payload", [
    b'{"header": {}, "result": {"picked": NaN}}',
    b'{"header": {}, "result": {"picked": Infinity}}',
    b'{"header": {}, "result": {"picked": -Infinity}}',
    b'{"header": {}, "result": {"picked": 1e400}}',
    b'{"header": {}, "result": {"picked": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
], ids=["nan", "infinity", "-infinity", "1e400", "nested-100k"])
def test_decode_is_strict_json_and_refuses_what_python_would_read_anyway(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode(payload)


def test_encode_refuses_what_strict_json_cannot_say() -> None:
    with pytest.raises(ValueError):
        encode({"header": {}, "qty": float("nan")})
