"""harness.ui.units: durations and sizes for people."""
from harness.ui.units import format_bytes, format_seconds


def test_format_seconds():
    assert format_seconds(5.04) == "5.0s"
    assert format_seconds(125) == "2m05s"
    assert format_seconds(5025) == "1h23m45s"



def test_format_bytes():
    assert format_bytes(10.8e9) == "10.8 GB" and format_bytes(169e6) == "169 MB" and format_bytes(52e3) == "52 kB"
    assert format_bytes(12) == "12 B"
