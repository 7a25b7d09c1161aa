"""DINOv2 through timm with a tiny random ViT of DINOv2's interface (patch 14, layer scale, a
518-px position embedding): dgm-eval's preprocessing against torchvision's PIL transforms, the
class token against a direct forward with DINOv2's own position-embedding interpolation, Meta's
and timm's checkpoint formats, and the one-line errors."""
import builtins

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.data.shapes import ShapesDataset
from harness.errors import MetricError
from harness.metrics.dinov2 import dinov2_input
from harness.metrics.fid import FeatureAccumulator, pil_uint8_resize
from harness.metrics.networks import resolve_backbone

timm = pytest.importorskip("timm")


def tiny_vit():
    """A random ViT shaped as DINOv2's hub models (518 px, patch 14: a 37 x 37 grid), 2 blocks of width 128."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(img_size=518, patch_size=14, embed_dim=128, depth=2, num_heads=2, init_values=0.5,
                            num_classes=0)
    with torch.no_grad():
        net.pos_embed.normal_(0, 0.5)
        net.cls_token.normal_(0, 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def meta_file(tmp_path_factory):
    """The tiny ViT in Meta's format (dinov2_vitl14_pretrain.pth: its mask_token included)."""
    net = tiny_vit()
    path = tmp_path_factory.mktemp("dino") / "dinov2_tiny_pretrain.pth"
    torch.save({**net.state_dict(), "mask_token": torch.zeros(1, 128)}, path)
    return path, net


def reference_class_token(net, x: torch.Tensor) -> torch.Tensor:
    """DINOv2's forward written out: patches, class token, the position embedding interpolated as
    `interpolate_pos_encoding` does it (scale factor (16 + 0.1) / 37, bicubic), blocks, norm, token 0."""
    tokens = net.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([net.cls_token.expand(len(x), -1, -1), tokens], dim=1)
    pos = net.pos_embed[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, scale_factor=((16 + 0.1) / 37, (16 + 0.1) / 37), mode="bicubic", antialias=False)
    pos = torch.cat([net.pos_embed[:, :1], pos.permute(0, 2, 3, 1).reshape(1, 256, -1)], dim=1)
    tokens = tokens + pos
    for block in net.blocks:
        tokens = block(tokens)
    return net.norm(tokens)[:, 0]


def dgm_eval_input(images: torch.Tensor) -> torch.Tensor:
    """dgm-eval's transform: PIL bicubic resize to 224, ToTensor, ImageNet Normalize."""
    import torchvision.transforms as T
    from PIL import Image

    transform = T.Compose([T.Resize((224, 224), T.InterpolationMode.BICUBIC), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return torch.stack([transform(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])


def test_preprocessing_is_dgm_evals_pil_path():
    images = ShapesDataset(64).images(np.arange(4))[0]
    ours = dinov2_input(pil_uint8_resize(images, 224))
    theirs = dgm_eval_input(images)
    levels = (ours - theirs).abs() * 255 * torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    # PIL's fixed-point weights round some edge pixels the other way, in either pass
    assert float(levels.max()) < 2.01 and float((levels > 1e-3).float().mean()) < 0.01


def test_class_token_of_metas_checkpoint(meta_file):
    path, net = meta_file
    b = resolve_backbone(None, f"dinov2:{path}", "cpu", env={})
    assert b.family == "dinov2" and b.suffix == "_dinov2" and b.input_size == 224 and b.resize == "pil_uint8"
    assert not b.has_logits and b.path == str(path) and len(b.sha256) == 64 and b.key == f"dinov2-{b.sha256[:16]}"
    assert "width 128, depth 2" in b.name and "FD_DINOv2" in b.name
    images = ShapesDataset(32).images(np.arange(3))[0]
    # the run's FID mode does not matter: DINOv2 keeps its protocol's resize
    acc = FeatureAccumulator(b, "cpu", batch_size=8, mode="legacy_tensorflow").add_all([images])
    assert acc.mode == "pil_uint8" and acc.features().shape == (3, 128)
    with torch.no_grad():
        expected = reference_class_token(net, dgm_eval_input(images)).double().numpy()
    np.testing.assert_allclose(acc.features(), expected, rtol=2e-3, atol=2e-3)  # inputs differ by rounding only
    resized = pil_uint8_resize(images, 224)
    with torch.no_grad():  # on the same resized images, the network alone agrees to float32 rounding
        torch.testing.assert_close(b.features(resized), reference_class_token(net, dinov2_input(resized)),
                                   rtol=1e-4, atol=1e-5)


def test_timms_safetensors_format_gives_the_same_features(meta_file, tmp_path):
    from safetensors.torch import save_file

    path, net = meta_file
    other = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(other))
    x = torch.rand(2, 3, 224, 224) * 255
    with torch.no_grad():
        a = resolve_backbone(None, f"dinov2:{path}", "cpu").features(x)
        b = resolve_backbone(None, f"dinov2:{other}", "cpu").features(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_one_line_errors(meta_file, tmp_path, monkeypatch):
    with pytest.raises(MetricError, match="no such file") as e:
        resolve_backbone(None, f"dinov2:{tmp_path / 'absent.pth'}", "cpu")
    assert "\n" not in str(e.value) and "never downloaded" in str(e.value)
    not_vit = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, not_vit)
    with pytest.raises(MetricError, match="not a DINOv2 ViT state dict"):
        resolve_backbone(None, f"dinov2:{not_vit}", "cpu")
    for bad in ("dinov2", "dinov2:", "inception:x", "clip"):
        with pytest.raises(MetricError, match="unknown --backbone"):
            resolve_backbone(None, bad, "cpu")
    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name.startswith("timm"):
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(MetricError, match=r"pip install -e '\.\[dinov2\]'"):
        resolve_backbone(None, f"dinov2:{meta_file[0]}", "cpu")
