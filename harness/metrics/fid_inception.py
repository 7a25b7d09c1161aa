"""The TF Inception 2015-12-05 as a PyTorch module, for its weights stored as a state dict:
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` and torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth` (the same tensors, under torchvision's Inception-v3
parameter names, with the TF graph's 1008-way classifier).

torchvision's Inception-v3 has the graph's layers but not all of its pooling: TF's average pool
with SAME padding averages over the pixels inside the image only, and the graph's last block pools
its fourth branch with a max, not an average (pytorch-fid's FIDInception* blocks make the same two
changes; so does torch-fidelity's own copy of the network).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

POOL3 = 2048
CLASSES = 1008  # the TF graph's classifier: 1000 ImageNet classes and 8 unused


def tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3, stride 1, SAME padding, padded pixels left out of each mean (TF's AvgPool)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def tf_max_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3, stride 1, SAME padding: the pool of the graph's mixed_10 (Mixed_7c) fourth branch."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class TfInceptionA(InceptionA):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), double,
                          self.branch_pool(tf_avg_pool(x))], 1)


class TfInceptionC(InceptionC):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            double = conv(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(tf_avg_pool(x))], 1)


class TfInceptionE(InceptionE):
    """An expanded-filter-bank block whose fourth branch pools with `pool` (TF: average in Mixed_7b,
    max in Mixed_7c)."""

    def __init__(self, in_channels: int, pool):
        super().__init__(in_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(three), self.branch3x3_2b(three),
                          self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
                          self.branch_pool(self.pool(x))], 1)


def tf_inception_v3() -> Inception3:
    """The graph's network with torchvision's parameter names, untrained (weights: `load_state_dict`)."""
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=CLASSES, init_weights=False)
    net.Mixed_5b = TfInceptionA(192, pool_features=32)
    net.Mixed_5c = TfInceptionA(256, pool_features=64)
    net.Mixed_5d = TfInceptionA(288, pool_features=64)
    for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        setattr(net, name, TfInceptionC(768, channels_7x7=channels_7x7))
    net.Mixed_7b = TfInceptionE(1280, tf_avg_pool)
    net.Mixed_7c = TfInceptionE(2048, tf_max_pool)
    return net.eval()


LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
          "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a",
          "Mixed_7b", "Mixed_7c", "avgpool")


def pool3(net: Inception3, x: torch.Tensor) -> torch.Tensor:
    """x: (N, 3, 299, 299) float in [0, 255] -> (N, 2048) pool3 features."""
    # the graph's own input scaling (NVlabs' TorchScript and torch-fidelity use it; pytorch-fid's
    # `2 x - 1` of [0, 1] images is x / 127.5 - 1, a 0.4% different scale)
    x = (x - 128) / 128
    for name in LAYERS:
        x = getattr(net, name)(x)
    return torch.flatten(x, 1)


def unbiased_probs(net: Inception3, features: torch.Tensor) -> torch.Tensor:
    """(N, 2048) pool3 -> (N, 1008) softmax of the logits without the classifier's bias, as the
    original IS code and NVlabs' TorchScript (`no_output_bias=True`) compute them; torch-fidelity's
    `logits_unbiased`."""
    return torch.softmax(features @ net.fc.weight.T, dim=1)
