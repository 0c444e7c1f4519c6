# Embedded default demo: super-resolution x2 on photos bundled in the scikit-image wheel (no download).
# The photos are written once to sr_photos_root/{train,val}/ (train: chelsea, coffee, the stereo motorcycle pair,
# immunohistochemistry; val: astronaut, held out). LR images are made with MATLAB-style antialiased bicubic
# (rounded to uint8), a reduced DLGSANet-tiny (dim 24, 2 RHDTG x 1 HDTB, 48 K params) is trained on paired random
# 24x24 LR crops with flips/rotations and L1, then evaluated on the held-out astronaut (Y-PSNR / Y-SSIM, crop 2)
# next to the bicubic baseline on the same LR input:
#   pip install "attnzoo[sr]"            # scikit-image
#   python tools/train.py configs/super_resolution/demo_astronaut.py
# A few minutes on 2 CPU cores; the last line reads
#   Final: psnr=.. ssim=.. psnr_bicubic=31.7127 ssim_bicubic=0.9458 psnr_gain=.. iters=300 ... time=..s
# and the trained model beats bicubic (psnr_gain > 0).
_base_ = ['./_base_/dlgsanet_div2k.py']

sr_photos_root = 'data/sr_photos'
sr_scale = 2
model = dict(type='SRModel', model_name='dlgsanet_tiny_x2', loss='l1',
             model_kwargs=dict(dim=24, groups=2, blocks=1))
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(_delete_=True, type='PairedSRDataset', data_root=sr_photos_root, layout='hr_only', split='train',
                 scale=sr_scale, patch_size=24 * sr_scale, use_hflip=True, use_rot=True, repeat=100, cache=True,
                 prepare='skimage_photos', seed=0),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    dataset=dict(_delete_=True, type='PairedSRDataset', data_root=sr_photos_root, layout='hr_only', split='val',
                 scale=sr_scale, prepare='skimage_photos', name='astronaut'),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='SRMetric', scale=sr_scale, bicubic=True)
test_evaluator = val_evaluator

demo_iters = 300
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-3, betas=(0.9, 0.99), weight_decay=0.))
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[200, 260], gamma=0.5)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=demo_iters, val_interval=150)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=demo_iters, max_keep_ckpts=1,
                    save_best='psnr', rule='greater'),
)
custom_hooks = [dict(type='SRSummaryHook')]  # no EMA: 300 iterations are too few for a 0.999 average
randomness = dict(seed=0, diff_rank_seed=False)
# one intra-op thread: as fast for this small model and robust when other jobs share the CPU
cpu_threads = 1
