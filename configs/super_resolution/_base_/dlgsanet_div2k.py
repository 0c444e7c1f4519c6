# Official DLGSANet recipe (options/DLGSANet_SISR/train_SISR_ClassicDIV2K_*_scratch_img_size_48_lr5e_4.yml):
# DIV2K train (800 images, the official MATLAB-bicubic LR), 48x48 LR patches, h-flip + rot90, batch 16
# (8 per GPU x 2 GPUs), Adam lr 5e-4 betas (0.9, 0.99) no weight decay, L1, MultiStepLR halving at
# 250k/400k/450k/475k, 500k iterations, no warm-up, EMA 0.999, seed 0; validation on DIV2K valid every 10k
# iterations; test on Set5 / Set14 / B100 / Urban100 / Manga109 (Y-PSNR / Y-SSIM, crop = scale).
# Variant configs set `sr_scale` and the model, and repeat the scale-dependent fields below.
_base_ = ['../../_base_/default_runtime.py']

data_root = 'data/DIV2K'             # DIV2K_train_HR/, DIV2K_train_LR_bicubic/X{2,3,4}/, DIV2K_valid_*
benchmark_root = 'data/benchmark'    # EDSR benchmark.tar: <set>/HR, <set>/LR_bicubic/X{s}
benchmark_sets = ['Set5', 'Set14', 'B100', 'Urban100', 'Manga109']

sr_scale = 4
model = dict(type='SRModel', model_name='dlgsanet_tiny_x4', loss='l1')

train_dataloader = dict(
    batch_size=16,  # official: 8 per GPU on 2 GPUs; divide by the number of processes under torchrun
    num_workers=6,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    # full DIV2K images with paired random crops; layout='div2k_sub' reads BasicSR's extracted sub-images
    # (faster to decode). cache=False: each worker would otherwise keep its own copy of DIV2K in memory.
    dataset=dict(type='PairedSRDataset', data_root=data_root, layout='div2k', split='train', scale=sr_scale,
                 patch_size=48 * sr_scale, use_hflip=True, use_rot=True, repeat=20, cache=False),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='PairedSRDataset', data_root=data_root, layout='div2k', split='valid', scale=sr_scale,
                 name='DIV2K_valid'),
)
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='PairedSRDataset', data_root=benchmark_root, layout='benchmark', sets=benchmark_sets,
                 scale=sr_scale),
)
val_evaluator = dict(type='SRMetric', scale=sr_scale)   # crop_border = scale, Y channel
test_evaluator = val_evaluator

sr_iters = 500_000
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=5e-4, betas=(0.9, 0.99), weight_decay=0.))
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[250_000, 400_000, 450_000, 475_000],
                        gamma=0.5)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=sr_iters, val_interval=10_000)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=10_000, max_keep_ckpts=3,
                    save_best='psnr', rule='greater'),
)
custom_hooks = [
    dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=0.001),  # EMA decay 0.999
    dict(type='SRSummaryHook'),  # "Final: psnr=.. ssim=.. ..." line
]
log_processor = dict(window_size=50, by_epoch=False)
randomness = dict(seed=0, diff_rank_seed=True)
