"""Writes pose-ae-train checkpoint fixtures with the reference's own network (not run by the suite).

Run in a scratch environment with PyTorch, beside a copy of princeton-vl/pose-ae-train (commit 3c80a16) in which,
to keep the files small, the widths the code hard-codes were reduced with one `sed`:

    sed -i 's/Conv(3, 64, 7, 2/Conv(3, 8, 7, 2/; s/Conv(64, 128, bn/Conv(8, 16, bn/; s/Conv(128, 128, bn/Conv(16, 16, bn/; s/Conv(128, inp_dim, bn/Conv(16, inp_dim, bn/' models/posenet.py
    sed -i 's/def __init__(self, n, f, bn=None, increase=128)/def __init__(self, n, f, bn=None, increase=8)/' models/layers.py
    python tests/data/associative_embedding/make_checkpoints.py /path/to/that/copy tests/data/associative_embedding

(The second line sets the default `increase` that the reference's inner hourglass levels take whatever the outer
one was given; the published model gives 128 to every level.) `PoseNet(2, 8, 68, bn=False, increase=8)` is saved
as its `train.py` saves it, `{'state_dict': {'model.module.<name>': ...}, 'optimizer', 'epoch'}`, in the zip format
(`ae_s2_w8.pt`) and the legacy format (`ae_s2_w8_legacy.pt`); `ae_s2_w8.npz` holds fixed images and what the
network returned for them (`[N, stacks, 68, H/4, W/4]`, its own layout) at 64x64 and 64x128 (height x width).
"""

import sys
import types

import numpy as np


def main(reference: str, output: str):
    import torch

    sys.path.insert(0, reference)
    sys.modules["extensions.AE.AE_loss"] = types.SimpleNamespace(AEloss=lambda: None)  # a CUDA extension
    import models.posenet as posenet

    posenet.HeatmapLoss = lambda: None  # the losses are not part of the network
    net = posenet.PoseNet(2, 8, 68, bn=False, increase=8).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if parameter.dim() == 4:
                fan_in = parameter.shape[1] * parameter.shape[2] * parameter.shape[3]
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3 * (2 / fan_in) ** 0.5)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    random = np.random.RandomState(0)
    images = random.uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    wide_images = random.uniform(0, 1, (1, 64, 128, 3)).astype(np.float32)  # a second size, not square
    with torch.no_grad():
        outputs = net(torch.from_numpy(images)).numpy()
        wide_outputs = net(torch.from_numpy(wide_images)).numpy()
    state = {"model.module." + key: value for key, value in net.state_dict().items()}
    content = {"state_dict": state, "optimizer": torch.optim.Adam(net.parameters()).state_dict(), "epoch": 12}
    torch.save(content, f"{output}/ae_s2_w8.pt")
    torch.save(content, f"{output}/ae_s2_w8_legacy.pt", _use_new_zipfile_serialization=False)
    np.savez_compressed(f"{output}/ae_s2_w8.npz", images=images, outputs=outputs, wide_images=wide_images,
                        wide_outputs=wide_outputs)
    print(outputs.shape, sum(p.numel() for p in net.parameters()))


if __name__ == "__main__":
    main(*sys.argv[1:])
