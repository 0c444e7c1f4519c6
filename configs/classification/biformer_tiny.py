# BiFormer-tiny, ImageNet-1k from scratch, 300 epochs (+10 cooldown), EMA; README top-1 81.4.
# drop-path not in the official repo (0.1 assumed; check the paper appendix).
_base_ = '../_base_/biformer_in1k.py'
model = dict(model_name='biformer_tiny', model_kwargs=dict(drop_path_rate=0.1))
train_dataloader = dict(dataset=dict(model_name='biformer_tiny'))
val_dataloader = dict(dataset=dict(model_name='biformer_tiny'))
test_dataloader = dict(dataset=dict(model_name='biformer_tiny'))
