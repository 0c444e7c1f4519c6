# L²ViT-Small, ImageNet-1k from scratch, 300 epochs, EMA 0.9999; README top-1 84.1. drop path 0.3: not published for T/S (README gives only Base's 0.3); check the release log.
_base_ = '../_base_/l2vit_in1k.py'
model = dict(model_name='l2vit_small', model_kwargs=dict(drop_path_rate=0.3))
train_dataloader = dict(dataset=dict(model_name='l2vit_small'))
val_dataloader = dict(dataset=dict(model_name='l2vit_small'))
test_dataloader = dict(dataset=dict(model_name='l2vit_small'))
