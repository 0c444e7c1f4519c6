# Sparsifiner-LV-ViT-S at keep rate 0.25 (official 'sparsifiner_lvvit': LV-ViT-S, 16 blocks, skip_lam 2,
# token-labeling aux head): the phase-2 recipe of sparsifiner_deit_small_phase2.py ('cls_distill', 45 epochs,
# predictors frozen, AdamW cosine 8e-5 -> 2e-6, 3 warm-up epochs). Paper: 83.3 top-1 at keep 0.25 (LV-ViT-S
# 83.3). Its predictor comes from phase 1 with this model name, started from the public LV-ViT-S weights
# (tag lvvit_init, the Token Labeling release):
#   python tools/train.py configs/classification/sparsifiner_deit_small_phase1.py \
#       --cfg-options model.model_name=sparsifiner_lvvit_small \
#       train_dataloader.dataset.model_name=sparsifiner_lvvit_small \
#       val_dataloader.dataset.model_name=sparsifiner_lvvit_small \
#       --work-dir work_dirs/sparsifiner_lvvit_small_phase1
#   python tools/train.py configs/classification/sparsifiner_lvvit_small.py
# Loss (official src/losses.py NewLoss on SparsifinerLVViT / LVViTTeacher outputs, default LOSS weights):
# CE(head(cls), mixup targets) + 0.5 KL(eval-mode dense teacher's head(cls) || student's, batchmean)
# + 0.5 MSE(aux_head token logits, teacher's). The teacher (weights and BatchNorm statistics) comes from the
# phase-1 checkpoint's teacher.* keys, i.e. the public LV-ViT-S weights. No token-labeling targets (the
# official Sparsifiner run has none either).
_base_ = ['./sparsifiner_deit_small_phase2.py']
model = dict(model_name='sparsifiner_lvvit_small',
             init_checkpoint='work_dirs/sparsifiner_lvvit_small_phase1/epoch_5.pth',
             cls_distill_weight=0.5, token_distill_weight=0.5)
train_dataloader = dict(dataset=dict(model_name='sparsifiner_lvvit_small'))
val_dataloader = dict(dataset=dict(model_name='sparsifiner_lvvit_small'))
test_dataloader = dict(dataset=dict(model_name='sparsifiner_lvvit_small'))
