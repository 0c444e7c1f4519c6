# Sparsifiner on the digits demo, step 0 of 3: train the dense backbone (keep rate 1.0: the
# predictor is skipped). Steps 1-2: sparsifiner_digits_phase1.py, sparsifiner_digits_phase2.py.
#   python tools/train.py configs/classification/sparsifiner_digits_dense.py
# A small DeiT-style ViT: 32 px digits, patch 4 -> 64 tokens + class token = 65 tokens.
_base_ = ['./demo_digits.py']

sparsifiner_digits_arch = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0,
                               reduce_n_factor=6, reduce_c_factor=2, basis_topk=8, drop_path_rate=0.0)
model = dict(
    _delete_=True,
    type='TimmClassifier',
    model_name='sparsifiner_deit_tiny',
    num_classes=10,
    model_kwargs=dict(keep_rate=1.0, **sparsifiner_digits_arch),
    mixup=None,
    smoothing=0.1,
)
digits_epochs = 12
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=digits_epochs - 1, eta_min_ratio=0.01, by_epoch=True, begin=1,
         end=digits_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=digits_epochs, val_interval=1)
