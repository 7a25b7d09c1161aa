"""harness.images: the uint8 <-> float converters are the affine maps their names state."""
import torch

from harness.images import signed_to_uint8, uint8_to_signed, uint8_to_unit, unit_to_uint8


def test_uint8_to_float_is_the_affine_map_and_leaves_its_input_alone():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    assert torch.equal(uint8_to_signed(x), x.float() / 127.5 - 1.0) and uint8_to_signed(x).dtype == torch.float32
    assert torch.equal(uint8_to_unit(x), x.float() / 255.0) and uint8_to_unit(x).dtype == torch.float32
    assert uint8_to_signed(x)[0, 0, 0, 0] == -1 and uint8_to_signed(x)[0, 0, -1, -1] == 1
    y = torch.linspace(0, 255, 7)
    uint8_to_signed(y), uint8_to_unit(y)
    assert torch.equal(y, torch.linspace(0, 255, 7))  # a float input is copied, never scaled in place


def test_float_to_uint8_inverts_exactly_and_clips():
    x = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(unit_to_uint8(uint8_to_unit(x)), x)
    assert torch.equal(signed_to_uint8(uint8_to_signed(x)), x)
    assert unit_to_uint8(torch.tensor([-0.5, 1.5])).tolist() == [0, 255]
    assert signed_to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]
