"""CoordinateWeighting's per-coordinate layout: only the first layer reads the input features."""

import pytest
import torch

from gwnmo_meta.optim.nets import CoordinateWeighting, make_head

DIM, WAYS = 6, 3


@pytest.mark.parametrize("tasks", [None, 2])
def test_only_the_first_layer_gets_the_input_column_scale_even_when_hidden_equals_features(tasks):
    head = make_head(DIM, WAYS, hidden=DIM)  # W1 [DIM, DIM], b1, W2 [WAYS, DIM], b2
    shapes = [p.shape for p in head.parameters()]
    lead = () if tasks is None else (tasks,)
    features = torch.randn(*lead, 9, DIM) * torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0, 8.0])
    params = [torch.randn(*lead, *s) for s in shapes]
    grads = [torch.randn(*lead, *s) for s in shapes]
    net = CoordinateWeighting(DIM)
    scale = net._coord_features(features, params, grads)[..., 3]  # the column-scale input
    rms = features.pow(2).mean(-2).sqrt()
    expected_cols = torch.log(rms / rms.mean(-1, keepdim=True))  # [..., DIM], by hand
    n1 = DIM * DIM
    first = scale[..., :n1].reshape(*lead, DIM, DIM)  # W1[o, j] reads input column j
    torch.testing.assert_close(first, expected_cols.unsqueeze(-2).expand_as(first))
    assert torch.count_nonzero(scale[..., n1:]) == 0  # b1, W2 (reads hidden units), b2


def test_a_target_whose_first_weight_does_not_read_the_features_gets_no_column_scale():
    shapes = [torch.Size([WAYS]), torch.Size([WAYS, 4])]  # no tensor reads DIM features
    net = CoordinateWeighting(DIM)
    features = torch.randn(5, DIM)
    params = [torch.randn(s) for s in shapes]
    scale = net._coord_features(features, params, [torch.randn(s) for s in shapes])[..., 3]
    assert torch.count_nonzero(scale) == 0
