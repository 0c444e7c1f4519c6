# Runtime shared by every attnzoo task config (mmengine Runner).
default_scope = None  # attnzoo registers into mmengine's root registries
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),  # progress: iter/total, eta, loss, lr, grad_norm
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='accuracy/top1', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [dict(type='ClsSummaryHook')]  # final "Final: top1=.. top5=.. ..." line
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # tools/train.py switches to gloo on CPU-only machines
)
log_processor = dict(window_size=10, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=42, diff_rank_seed=False)
# Scalars (loss, lr, grad norm, metrics) are also written as JSON under <work_dir>/<timestamp>/vis_data/. For
# TensorBoard (pip install tensorboard): --cfg-options visualizer.vis_backends.0.type=TensorboardVisBackend
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
