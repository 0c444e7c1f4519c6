# Sparsifiner on the digits demo, phase 2: predictors frozen, sparse attention (keep 0.25: 17 of 65
# keys per query, class row dense); the backbone trains with CE + 0.5 KL(teacher logits) + 0.5 MSE(teacher
# patch tokens), teacher = the dense backbone.
#   python tools/train.py configs/classification/sparsifiner_digits_phase2.py
_base_ = ['./sparsifiner_digits_phase1.py']

model = dict(phase='finetune', init_checkpoint='work_dirs/sparsifiner_digits_phase1/epoch_3.pth')
digits_epochs = 4
optim_wrapper = dict(optimizer=dict(lr=5e-4, weight_decay=0.05))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=digits_epochs, eta_min_ratio=0.025, by_epoch=True,
                        begin=0, end=digits_epochs, convert_to_iter_based=True)]
train_cfg = dict(by_epoch=True, max_epochs=digits_epochs, val_interval=1)
