"""The end-to-end target of ``--adapt all``: conv4 plus a linear head, adapted whole in the inner loop.

Input: canonical images flattened, [B, 3·32·32] (see ``tasks.backbones.canonical``), or a task
batch [T, B, 3·32·32]. Inside a task-batched inner loop higher hands the module fast weights with a
leading task dimension T; the T tasks then run as one grouped convolution (``groups=T``: task t's
images meet only task t's kernels), which keeps each task's maths exactly as alone.

BatchNorm follows MAML: batch statistics always (``F.batch_norm(..., training=True)`` with no
running statistics), so nothing is carried from one task to the next or from meta-training into
evaluation; the support and the query set are each normalised with their own statistics (MAML's
and learn2learn's conv4 examples do the same). With no running buffers, higher's not copying them
back (higher issue #103) cannot matter. Its affine scale and shift are ordinary parameters: meta-
learned as part of the init and adapted in the inner loop.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gwnmo_meta.optim.nets import TaskLinear

IMAGE_SHAPE = (3, 32, 32)
IMAGE_DIM = 3 * 32 * 32
WIDTH = 64


class Conv4Target(nn.Module):
    """Four conv3×3(64)-BN-ReLU-maxpool blocks and a linear classifier, on flat canonical images.

    ``bias=False`` (the default, standard practice) drops the convolutions' biases: BatchNorm right
    after each one cancels them, so their true gradient is zero and only rounding noise reaches
    them.
    """

    def __init__(self, ways: int, bias: bool = False):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, WIDTH, 3, padding=1, bias=bias) for c_in in (3, WIDTH, WIDTH, WIDTH)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(WIDTH, track_running_stats=False) for _ in range(4)
        )
        self.head = TaskLinear(WIDTH * 2 * 2, ways)

    def _blocks(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The four (convolution, norm) pairs, in order (typed: a ModuleList yields plain Modules)."""
        return cast(
            list[tuple[nn.Conv2d, nn.BatchNorm2d]], list(zip(self.convs, self.norms, strict=True))
        )

    def forward(self, x: Tensor) -> Tensor:
        blocks = self._blocks()
        if x.dim() == 2:  # one task: [B, 3072]
            z = x.view(-1, *IMAGE_SHAPE)
            for conv, norm in blocks:
                z = F.conv2d(z, conv.weight, conv.bias, padding=1)
                z = F.batch_norm(z, None, None, norm.weight, norm.bias, training=True)
                z = F.max_pool2d(F.relu(z), 2)
            return self.head(z.flatten(1))
        if blocks[0][0].weight.dim() == 4:  # shared weights on a task batch: task by task
            return torch.stack([self(task) for task in x])
        tasks, batch = x.shape[:2]  # task-batched weights: tasks side by side along channels
        z = x.view(tasks, batch, *IMAGE_SHAPE).transpose(0, 1).reshape(batch, -1, 32, 32)
        for conv, norm in blocks:
            w = conv.weight.reshape(-1, *conv.weight.shape[-3:])
            b = None if conv.bias is None else conv.bias.reshape(-1)
            z = F.conv2d(z, w, b, padding=1, groups=tasks)
            z = F.batch_norm(
                z, None, None, norm.weight.reshape(-1), norm.bias.reshape(-1), training=True
            )
            z = F.max_pool2d(F.relu(z), 2)
        return self.head(z.reshape(batch, tasks, -1).transpose(0, 1))
