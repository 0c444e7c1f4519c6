"""Tracing contracts for every classification family.

timm's FX contract: torchvision's feature extractor with timm's leaf-module and autowrap lists traces the model,
and the traced graph computes the eager output (forward and backward). torch.compile: dynamo captures the whole
model, ops included, in one graph (no graph break) in eval and in train mode."""
import pytest
import timm
import torch
from timm.layers import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor

import attnzoo  # noqa: F401

# (name, narrow/shallow overrides, input size): the attention code paths of each family at small cost
CASES = [
    ('dinat_mini', dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)), (96, 128)),
    ('biformer_tiny', dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 2, 1)), (224, 256)),
    ('l2vit_tiny', dict(depths=(1, 1, 2, 1)), (128, 160)),
    ('favit_b0', dict(), (128, 128)),
    ('sparsifiner_deit_tiny', dict(depth=2), (224, 224)),
]


@pytest.mark.parametrize('name,kwargs,size', CASES, ids=[c[0] for c in CASES])
def test_fx_trace_matches_eager(name, kwargs, size):
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    fx = create_feature_extractor(model, return_nodes=['head'], tracer_kwargs=dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions()))
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(fx(x)['head'], model(x))
    fx.train()
    fx(x)['head'].sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())


@pytest.mark.parametrize('name,kwargs,size', CASES + [('dlgsanet_tiny_x2', dict(), (32, 40))],
                         ids=[c[0] for c in CASES] + ['dlgsanet_tiny_x2'])
def test_dynamo_captures_one_graph(name, kwargs, size):
    torch._dynamo.reset()
    model = timm.create_model(name, **kwargs)
    x = torch.randn(1, 3, *size)
    for training in (False, True):
        explained = torch._dynamo.explain(model.train(training))(x)
        assert explained.graph_break_count == 0, [str(b.reason).splitlines()[0] for b in explained.break_reasons]
    torch._dynamo.reset()
