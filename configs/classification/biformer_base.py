# BiFormer-base, ImageNet-1k from scratch, 300 epochs (+10 cooldown), EMA; README top-1 84.3.
# drop-path not in the official repo (0.3 assumed; check the paper appendix).
_base_ = '../_base_/biformer_in1k.py'
model = dict(model_name='biformer_base', model_kwargs=dict(drop_path_rate=0.3))
train_dataloader = dict(dataset=dict(model_name='biformer_base'))
val_dataloader = dict(dataset=dict(model_name='biformer_base'))
test_dataloader = dict(dataset=dict(model_name='biformer_base'))
