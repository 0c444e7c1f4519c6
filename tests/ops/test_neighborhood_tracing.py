"""Neighborhood attention's per-shape caches under tracing: nothing made while exporting may reach a later call."""
import timm
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import attnzoo  # noqa: F401  (registers the models)
from attnzoo.ops import neighborhood as N

TINY_DINAT = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], mlp_ratio=2.)


def _clear_caches():
    for cache in (N._tile_plan, N._group_order, N._flex_block_mask):
        cache.cache_clear()


def test_export_of_a_fresh_model_leaks_no_fake_tensor_into_later_calls():
    """A model fresh from create_model (empty caches) exports at batch 1 and again at batch 2, and its eager forward
    afterwards returns real tensors equal to the exported programs' outputs (a plan cached during the first export
    held fake tensors: the second export found them in its constants, eager returned a FakeTensor)."""
    _clear_caches()
    torch.manual_seed(0)
    model = timm.create_model('dinat_mini', **TINY_DINAT).eval()
    inputs = [torch.randn(batch, 3, 64, 64) for batch in (1, 2)]
    programs = [torch.export.export(model, (x,), strict=False) for x in inputs]
    with torch.no_grad():
        for program, x in zip(programs, inputs):
            eager = model(x)
            assert type(eager) is torch.Tensor
            torch.testing.assert_close(program.module()(x), eager)


def test_tile_plan_is_built_in_the_graph_under_a_fake_trace_and_cached_in_eager():
    """make_fx with fake tensors (no torch.compile / export flag set) builds the plan without caching it; a later
    eager call caches a plan of real tensors."""
    _clear_caches()
    q = torch.randn(1, 10, 10, 1, 16)

    def attend(q):
        return N._na_tiled(q, q, q, (3, 3), (False, False), None, 0.25, 0.0)
    make_fx(attend, tracing_mode='fake')(q)
    assert N._tile_plan.cache_info().currsize == 0
    attend(q)
    assert N._tile_plan.cache_info().currsize == 1
    assert type(N._tile_plan((10, 10), (3, 3), (False, False), q.device).mask) is torch.Tensor
