# DiNAT-L / DiNAT_s-L ImageNet-22k -> 1k fine-tune (configs/dinat_large*.yml of the official repo):
# AdamW lr 5e-5, no warmup, linear decay over 30 epochs (per iteration), fp32, batch 64 per GPU,
# grad-norm clip 5 (the repo's train.py default). Weight decay differs per variant (set in each
# variant file: 1e-4 at 224, 1e-10 for dinat_large_384, 1e-5 for dinat_s_large_384).
ft_lr = 5e-5
ft_epochs = 30
optim_wrapper = dict(
    type='OptimWrapper',  # the fine-tunes ran without AMP
    constructor='TimmOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=ft_lr, weight_decay=1e-4, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=5.0, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=True, begin=0, end=ft_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=ft_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# The GPU count of the fine-tunes is not published (64 per GPU; 8 GPUs -> 512 assumed).
auto_scale_lr = dict(base_batch_size=512, enable=False)
