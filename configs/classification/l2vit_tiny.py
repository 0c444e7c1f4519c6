# L²ViT-Tiny, ImageNet-1k from scratch, 300 epochs, EMA 0.9999; README top-1 83.1. drop path 0.1: not published for T/S (README gives only Base's 0.3); check the release log.
_base_ = '../_base_/l2vit_in1k.py'
model = dict(model_name='l2vit_tiny', model_kwargs=dict(drop_path_rate=0.1))
train_dataloader = dict(dataset=dict(model_name='l2vit_tiny'))
val_dataloader = dict(dataset=dict(model_name='l2vit_tiny'))
test_dataloader = dict(dataset=dict(model_name='l2vit_tiny'))
