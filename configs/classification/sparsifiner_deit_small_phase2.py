# Sparsifiner-S phase 2 ('cls_distill', 45 epochs): predictors frozen, sparse attention (keep 0.25), the
# backbone trains with CE(mixup targets) + 0.5 KL(student || dense teacher logits) + 0.5 MSE(final patch
# tokens); AdamW cosine 8e-5 -> 2e-6, 3 warm-up epochs. Paper: 79.7 top-1 at keep 0.2 / 79.8 at 0.3
# (DeiT-S 79.8). Start from the phase-1 checkpoint:
#   python tools/train.py configs/classification/sparsifiner_deit_small_phase2.py \
#       --cfg-options model.init_checkpoint=work_dirs/sparsifiner_deit_small_phase1/epoch_5.pth
_base_ = ['./sparsifiner_deit_small_phase1.py']
model = dict(phase='finetune', init_checkpoint='work_dirs/sparsifiner_deit_small_phase1/epoch_5.pth',
             model_kwargs=dict(pretrained=False))
sparsifiner_epochs = 45
optim_wrapper = dict(optimizer=dict(lr=8e-5))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=3, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=sparsifiner_epochs - 3, eta_min=2e-6, by_epoch=True, begin=3,
         end=sparsifiner_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=sparsifiner_epochs, val_interval=1)
