# DLGSANet-light x4, official recipe (see _base_/dlgsanet_div2k.py); LR patch 48 = HR patch 192.
#   python tools/train.py configs/super_resolution/dlgsanet_light_x4_div2k.py
#   python tools/test.py configs/super_resolution/dlgsanet_light_x4_div2k.py CKPT   # Set5 ... Manga109
# Official weights: python tools/convert_weights.py --model dlgsanet_light_x4 --src OFFICIAL.pth --out w.pth,
# then tools/test.py with w.pth (the SparseGSA TLC windows of eval mode are on, as in the official test).
_base_ = ['./_base_/dlgsanet_div2k.py']

sr_scale = 4
model = dict(model_name='dlgsanet_light_x4')
train_dataloader = dict(dataset=dict(scale=sr_scale, patch_size=48 * sr_scale))
val_dataloader = dict(dataset=dict(scale=sr_scale))
test_dataloader = dict(dataset=dict(scale=sr_scale))
val_evaluator = dict(type='SRMetric', scale=sr_scale)
test_evaluator = val_evaluator
