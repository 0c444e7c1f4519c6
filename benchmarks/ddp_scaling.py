"""DDP train-step scaling without a data pipeline: the same model and per-GPU batch on 1 and on N GPUs.

Run under torchrun (``--nproc_per_node 1`` and ``2``)::

    torchrun --nproc_per_node 2 benchmarks/ddp_scaling.py --model dinat_tiny --batch-size 128

Each rank trains on fresh random inputs made on its GPU (bf16 autocast, channels_last, AdamW), so the
step time is compute plus DDP's gradient all-reduce only; rank 0 prints a JSON line with the median
step time (CUDA events, the slowest rank's) and img/s per GPU, and the time of one all-reduce of all the
gradients as a single fp32 tensor (the bus bandwidth NCCL reaches on this machine). Together with
``distributed.py`` (the full ``tools/train.py`` path with JPEG decoding and RandAugment) it separates the
data pipeline's share of the multi-GPU scaling from DDP's. The DDP options that change the step (bucket
views, static graph, bf16 gradient compression, skipping the all-reduce altogether) are flags, so their
effect is measured the same way.
"""
import argparse
import contextlib
import json
import os
import statistics

import timm
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import attnzoo  # noqa: F401  (registers the models)

for _name, _value in (('NCCL_NVLS_ENABLE', '0'), ('TORCH_SYMM_MEM_DISABLE_MULTICAST', '1'),
                      ('NVSHMEM_DISABLE_NVLS', '1')):
    os.environ[_name] = _value  # NVLink multicast off (also for the NCCL communicator made below)


def _event_ms(fn) -> float:
    """GPU time of one call of ``fn`` in ms (CUDA events, synchronised)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def _allreduce_ms(numel: int, device: torch.device, repeats: int = 10) -> float:
    """Median time of one all-reduce of a ``[numel]`` fp32 tensor across the group (after 3 warm-up calls)."""
    flat = torch.ones(numel, device=device)
    for _ in range(3):
        dist.all_reduce(flat)
    return round(statistics.median(_event_ms(lambda: dist.all_reduce(flat)) for _ in range(repeats)), 3)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='dinat_tiny')
    p.add_argument('--batch-size', type=int, default=128, help='per GPU')
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--bucket-view', action='store_true', help='DDP gradient_as_bucket_view=True')
    p.add_argument('--static-graph', action='store_true', help='DDP static_graph=True')
    p.add_argument('--bucket-mb', type=float, default=25.0, help='DDP bucket_cap_mb')
    p.add_argument('--bf16-compress', action='store_true', help="all-reduce gradients in bf16 (DDP's comm hook)")
    p.add_argument('--no-sync', action='store_true', help='skip the gradient all-reduce (compute-only reference)')
    args = p.parse_args()
    dist.init_process_group('nccl')
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    model = timm.create_model(args.model).to(device, memory_format=torch.channels_last)
    ddp = DistributedDataParallel(model, device_ids=[device.index], gradient_as_bucket_view=args.bucket_view,
                                  static_graph=args.static_graph, bucket_cap_mb=args.bucket_mb)
    if args.bf16_compress:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)
    sync = contextlib.nullcontext if not args.no_sync else ddp.no_sync
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        x = torch.randn(args.batch_size, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, model.num_classes, (args.batch_size,), device=device)
        with sync():
            with torch.autocast('cuda', dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(ddp(x), y)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        elapsed = torch.tensor(_event_ms(step), device=device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        times.append(elapsed.item())
    ms = statistics.median(times)
    allreduce_ms = _allreduce_ms(sum(q.numel() for q in model.parameters()), device)
    if rank == 0:
        print(json.dumps(dict(model=args.model, gpus=world, batch_per_gpu=args.batch_size, step_ms=round(ms, 2),
                              options={k: getattr(args, k) for k in ('bucket_view', 'static_graph', 'bucket_mb',
                                                                      'bf16_compress', 'no_sync')},
                              allreduce_fp32_grads_ms=allreduce_ms,
                              img_per_s_per_gpu=round(args.batch_size * 1e3 / ms, 1),
                              device=torch.cuda.get_device_name(device), torch=torch.__version__)), flush=True)
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
