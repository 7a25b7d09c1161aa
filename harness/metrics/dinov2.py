"""DINOv2 ViT features as dgm-eval's FD_DINOv2 takes them (Stein et al. 2023, `dgm_eval/models/dinov2.py`):
each image resized to 224x224 with PIL's bicubic filter on the uint8 image, scaled to [0, 1] and
normalised with the ImageNet mean and std; the feature is the class token of the last layer after
the final LayerNorm (1024-d for ViT-L/14).

The network is timm's VisionTransformer, its shape read off the weights a user gives by path
(`--backbone dinov2:PATH`): Meta's `dinov2_vitl14_pretrain.pth` or timm's
`vit_large_patch14_dinov2.lvd142m` checkpoint (.pth or .safetensors). Nothing is downloaded.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.errors import MetricError
from harness.metrics.backbone import Backbone
from harness.rundir.atomic import sha256_file

SIZE = 224  # dgm-eval: TF.Resize((224, 224), BICUBIC) on the PIL image
PATCH = 14
HEAD_DIM = 64  # every DINOv2 ViT: S 384 / 6 heads, B 768 / 12, L 1024 / 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Meta's hub models interpolate the 518-px position embedding at every forward with
# `interpolate_offset=0.1, interpolate_antialias=False` (dinov2/models/vision_transformer.py)
POS_OFFSET = 0.1

NO_TIMM = "DINOv2 features need timm: pip install -e '.[dinov2]' (or pip install timm)"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .pth / .pt (torch.save) or .safetensors, on the CPU."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise MetricError(f"--backbone dinov2:{path}: not a readable checkpoint ({type(e).__name__})") from None
    for wrapper in ("model", "state_dict", "teacher"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict) and "cls_token" not in state:
            state = state[wrapper]
    if not isinstance(state, dict) or "cls_token" not in state or "pos_embed" not in state:
        raise MetricError(f"--backbone dinov2:{path}: not a DINOv2 ViT state dict (no cls_token / pos_embed)")
    return state


def pos_embed_at(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + M*M, D) position embedding of an M x M patch grid -> (1, 1 + grid*grid, D), as DINOv2's
    `interpolate_pos_encoding` computes it: bicubic, no antialiasing, with the scale factor
    (grid + 0.1) / M rather than an output size (the "historical kludge" of dino issue #8, which
    moves the sampling positions slightly), in float32."""
    dim = pos_embed.shape[-1]
    m = math.isqrt(pos_embed.shape[1] - 1)
    if m * m != pos_embed.shape[1] - 1:
        raise MetricError(f"a DINOv2 position embedding of {pos_embed.shape[1] - 1} patches is not a square grid")
    if m == grid:
        return pos_embed
    cls, patches = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    scale = (grid + POS_OFFSET) / m
    patches = F.interpolate(patches.reshape(1, m, m, dim).permute(0, 3, 1, 2), scale_factor=(scale, scale),
                            mode="bicubic", antialias=False)
    if patches.shape[-2:] != (grid, grid):
        raise MetricError(f"resampling a {m}x{m} position embedding gave {tuple(patches.shape[-2:])}, not {grid}x{grid}")
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)], dim=1).to(pos_embed.dtype)


def dinov2_vit(state: dict[str, torch.Tensor], where: str):
    """timm's VisionTransformer shaped as the weights in `state` (width, depth, MLP ratio), at 224 px,
    with DINOv2's layer scale, no classifier; loaded (strictly) with `state`."""
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        raise MetricError(NO_TIMM) from None
    if "register_tokens" in state or any(".mlp.w12." in k for k in state):
        raise MetricError(f"{where}: DINOv2 with registers or SwiGLU MLPs (ViT-g) is not supported; use ViT-S/B/L/14")
    patch = state["patch_embed.proj.weight"]
    if tuple(patch.shape[-2:]) != (PATCH, PATCH):
        raise MetricError(f"{where}: patches of {tuple(patch.shape[-2:])} pixels, DINOv2's are {PATCH}x{PATCH}")
    dim = patch.shape[0]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    net = VisionTransformer(img_size=SIZE, patch_size=PATCH, embed_dim=dim, depth=depth, num_heads=max(1, dim // HEAD_DIM),
                            mlp_ratio=hidden / dim, init_values=1.0, num_classes=0, global_pool="token")
    weights = {k: v for k, v in state.items() if k != "mask_token"}  # used in training only
    weights["pos_embed"] = pos_embed_at(state["pos_embed"], SIZE // PATCH)
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise MetricError(f"{where}: its tensors do not fit a DINOv2 ViT ({str(e).splitlines()[1].strip()})") from None
    return net.eval(), dim, depth


def dinov2_input(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, 224, 224) float in [0, 255], resized as a uint8 PIL image (`harness.metrics.fid.pil_uint8_resize`)
    -> the network's input: ToTensor's / 255, then ImageNet Normalize."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


def weights_file(path: str | Path) -> Path:
    """`path`, a file; else a MetricError (one line): the weights are never downloaded."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MetricError(f"--backbone dinov2:{path}: no such file (DINOv2 weights are never downloaded: give the "
                          f"path of dinov2_vitl14_pretrain.pth or timm's vit_large_patch14_dinov2 checkpoint)")
    return path


def dinov2_backbone(path: str | Path, device: torch.device | str = "cpu") -> Backbone:
    """The DINOv2 network of the weights at `path`; MetricError (one line) without the file or timm."""
    path = weights_file(path)
    where = f"--backbone dinov2:{path}"
    net, dim, depth = dinov2_vit(read_weights(path), where)
    net = net.to(device)
    name = "DINOv2 ViT-L/14" if (dim, depth) == (1024, 24) else f"DINOv2-format ViT (width {dim}, depth {depth})"

    def features(x: torch.Tensor) -> torch.Tensor:
        return net(dinov2_input(x))

    return Backbone(f"{name}, class token (dgm-eval FD_DINOv2)", where, str(path), sha256_file(path), features, None,
                    family="dinov2", input_size=SIZE, resize="pil_uint8",
                    notes=["FD_DINOv2 protocol: PIL bicubic to 224x224, ImageNet normalisation, last-layer class token"])
