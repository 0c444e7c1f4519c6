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
# Differences from the official LV-ViT run: the teacher here is the same LV-ViT-S at keep 1.0 in eval mode, whose
# logits include the 0.5 x max-token aux term (official LVViTTeacher: class-token logits only), and the token
# distillation uses the final patch tokens (official: the aux_head token logits); no token-labeling targets.
_base_ = ['./sparsifiner_deit_small_phase2.py']
model = dict(model_name='sparsifiner_lvvit_small',
             init_checkpoint='work_dirs/sparsifiner_lvvit_small_phase1/epoch_5.pth')
train_dataloader = dict(dataset=dict(model_name='sparsifiner_lvvit_small'))
val_dataloader = dict(dataset=dict(model_name='sparsifiner_lvvit_small'))
test_dataloader = dict(dataset=dict(model_name='sparsifiner_lvvit_small'))
