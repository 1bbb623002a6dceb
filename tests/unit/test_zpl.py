"""The simulated printer's ZPL parser: what it accepts and why it refuses."""

from __future__ import annotations

import pytest

from simulators.mqtt.zpl import Field, ZplError, parse_label

SHIPPING_LABEL = """
^XA
^CI28
^FO50,40^A0N,40,40^FDOrder 1001^FS
^FO50,100^BY3^BCN,100,Y,N,N^FD1Z999AA10123456784^FS
^FO50,260^GB700,3,3^FS
^FT50,320^A0N,30,30^FDDHL - lane 1^FS
^PQ2
^XZ
"""


def test_valid_label_yields_its_fields() -> None:
    label = parse_label(SHIPPING_LABEL)
    assert label.fields == (
        Field(50, 40, "Order 1001", font="0"),
        Field(50, 100, "1Z999AA10123456784", barcode="BC"),
        Field(50, 320, "DHL - lane 1", font="0"),
    )
    assert label.copies == 2


def test_field_data_keeps_its_spaces() -> None:
    assert parse_label("^XA^FO0,0^FD  two  spaces ^FS^XZ").fields[0].data == "  two  spaces "


@pytest.mark.parametrize(("zpl", "message"), [
    ("^XA^FO10,10^FDno end^FS", "missing ^XZ"),
    ("^XA^FO10,10^ZZ^FDx^FS^XZ", "unknown command ^ZZ"),
    ("", "empty label"),
    ("   \n ", "empty label"),
    ("^FO10,10^FDx^FS^XZ", "must start with ^XA"),
    ("hello ^XA^FO1,1^FDx^FS^XZ", "must start with ^XA"),
    ("^XA^FO10,10^FDunclosed^XZ", "closed by ^FS"),
    ("^XA^FO10,10^FDunclosed^FO20,20^FDy^FS^XZ", "closed by ^FS"),
    ("^XA^FOten,10^FDx^FS^XZ", "^FO needs 2 integers"),
    ("^XA^XZ", "no ^FD field"),
    ("^XA^FO1,1^FDa^FS^XZ^XA^FO1,1^FDb^FS^XZ", "one label per print command"),
    ("^XA^FO1,1^BCN,80^FDcaf\u00e9^FS^XZ", "Code 128"),
    ("^XA^FO1,1^FDx^FS^PQ0^XZ", "copies"),
])
def test_malformed_labels_are_refused_with_a_reason(zpl: str, message: str) -> None:
    with pytest.raises(ZplError, match=message.replace("^", r"\^")):
        parse_label(zpl)
