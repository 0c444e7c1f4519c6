# BiFormer-stl_nchw, ImageNet-1k from scratch, 300 epochs (+10 cooldown), EMA; README top-1 82.7.
# drop-path 0.1 from scripts/train.sh.
_base_ = '../_base_/biformer_in1k.py'
model = dict(model_name='biformer_stl_nchw', model_kwargs=dict(drop_path_rate=0.1))
train_dataloader = dict(dataset=dict(model_name='biformer_stl_nchw'))
val_dataloader = dict(dataset=dict(model_name='biformer_stl_nchw'))
test_dataloader = dict(dataset=dict(model_name='biformer_stl_nchw'))
