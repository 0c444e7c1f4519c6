# BiFormer-small, ImageNet-1k from scratch, 300 epochs (+10 cooldown), EMA; README top-1 83.8.
# drop-path 0.15 from the README training command.
_base_ = '../_base_/biformer_in1k.py'
model = dict(model_name='biformer_small', model_kwargs=dict(drop_path_rate=0.15))
train_dataloader = dict(dataset=dict(model_name='biformer_small'))
val_dataloader = dict(dataset=dict(model_name='biformer_small'))
test_dataloader = dict(dataset=dict(model_name='biformer_small'))
