"""The MAC counter applies fvcore's formulas to the torch calls fvcore's table names, once per call."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo.utils.flops import FvcoreMacMode, count_macs, layer_macs


class _Layers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 6)

    def forward(self, x):                       # x: [2, 3, 5, 5]
        x = self.up(self.bn(self.conv(x)))      # [2, 8, 5, 5] -> [2, 4, 10, 10]
        x = F.interpolate(x, scale_factor=2, mode='bilinear')  # [2, 4, 20, 20]
        x = self.norm(x.permute(0, 2, 3, 1))    # [2, 20, 20, 4]
        y = self.fc(x)                          # [2, 20, 20, 6]
        z = y.flatten(1, 2) @ y.flatten(1, 2).transpose(1, 2)  # [2, 400, 6] @ [2, 6, 400]
        return torch.einsum('bnc,bmc->bnm', z[..., :6], z[..., :6]).sum() + F.adaptive_avg_pool2d(x, 1).sum()


def _expected(training: bool) -> int:
    conv = 2 * (8 * 3 * 3 * 3) * 25
    bn = 2 * 8 * 25 * (5 if training else 2)
    up = 2 * (8 * 4 * 2 * 2) * 25               # transposed: input positions
    bilinear = 2 * 4 * 20 * 20 * 4
    norm = 2 * 20 * 20 * 4 * 5
    fc = 2 * 20 * 20 * 4 * 6
    matmul = (2 * 400 * 6) * 400
    einsum = 2 * 400 * 400 * 6                  # numpy's optimal path, halved
    pool = 2 * 20 * 20 * 4
    return conv + bn + up + bilinear + norm + fc + matmul + einsum + pool


def test_formulas_of_fvcore_table():
    model, x = _Layers(), torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        assert layer_macs(model.eval(), x) == _expected(training=False)
        assert layer_macs(model.train(), x) == _expected(training=True)


def test_uncounted_ops_and_nesting():
    """SDPA, elementwise ops and reductions count nothing; F.layer_norm is not counted again as torch.layer_norm."""
    q = torch.randn(1, 2, 16, 8)
    with FvcoreMacMode() as mode:
        F.scaled_dot_product_attention(q, q, q)
        (q * q).sum()
        F.layer_norm(q, (8,))
    assert mode.macs == q.numel() * 4 and mode.by_op == {'layer_norm': q.numel() * 4}


def test_count_macs_adds_the_attention_term_and_reports_by_op():
    import timm
    model = timm.create_model('nat_mini', embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)).eval()
    by_op = {}
    total = count_macs(model, (3, 64, 64), by_op=by_op)
    assert by_op['attention'] > 0 and total == sum(by_op.values())
    assert total - by_op['attention'] == layer_macs(model, (3, 64, 64))
