# Sparsifiner-DeiT-Small at keep rate 0.25: the final (phase-2) recipe; its predictor comes from phase 1
# (sparsifiner_deit_small_phase1.py with this model name). Two steps:
#   python tools/train.py configs/classification/sparsifiner_deit_small_phase1.py \
#       --cfg-options model.model_name=sparsifiner_deit_small --work-dir work_dirs/sparsifiner_deit_small_phase1
#   python tools/train.py configs/classification/sparsifiner_deit_small.py
_base_ = ['./sparsifiner_deit_small_phase2.py']
model = dict(model_name='sparsifiner_deit_small', init_checkpoint='work_dirs/sparsifiner_deit_small_phase1/epoch_5.pth')
train_dataloader = dict(dataset=dict(model_name='sparsifiner_deit_small'))
val_dataloader = dict(dataset=dict(model_name='sparsifiner_deit_small'))
test_dataloader = dict(dataset=dict(model_name='sparsifiner_deit_small'))
