"""Super-resolve one image with an attnzoo SR model.

    python tools/sr.py IMAGE --model dlgsanet_tiny_x4 [--scale 4] [--checkpoint FILE [--trust-checkpoint]]
                       [--out OUT.png [--overwrite]] [--tile N] [--tile-pad 16] [--no-tlc] [--device cpu|cuda]
                       [--hr HR.png] [--degrade]
                       [--model-kwargs dim=24 groups=2 ...]

``--checkpoint`` takes an official BasicSR file (``params`` / ``params_ema``), a ``tools/convert_weights.py``
output or a ``tools/train.py`` checkpoint (``state_dict`` with ``model.`` prefixes), read tensors-only
(``--trust-checkpoint`` unpickles fully, which can run code: only for files you trust) and loaded strictly.
``--out`` may not be IMAGE or ``--hr`` unless ``--overwrite`` is given. ``--tile`` runs the network
tile by tile (``--tile 0``: whole image; default: whole image up to 1 MPix LR, else the model's official TLC
window). ``--degrade`` first makes IMAGE the MATLAB-bicubic LR of itself (to try a model on a photo you only have
in HR); with ``--hr`` (or ``--degrade``) the script also prints Y-PSNR / Y-SSIM against the HR image next to the
bicubic baseline. Without a checkpoint the network has random weights (a smoke test).
"""
import argparse
import os.path as osp
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('image', help='input (LR) image')
    p.add_argument('--model', default='dlgsanet_tiny_x4', help='attnzoo SR model, e.g. dlgsanet_light_x2')
    p.add_argument('--scale', type=int, help='upscaling factor; must match the model (default: the model\'s)')
    p.add_argument('--checkpoint', help='weights (official BasicSR file, converted file or tools/train.py ckpt)')
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='fully unpickle --checkpoint (it can run code): only for files you trust')
    p.add_argument('--out', help='output path (default: <image>_<model>.png next to the input)')
    p.add_argument('--overwrite', action='store_true', help='allow --out to be the input image (or --hr)')
    p.add_argument('--tile', type=int, help='LR tile size (0: whole image)')
    p.add_argument('--tile-pad', type=int, default=16, help='context px around each tile')
    p.add_argument('--no-tlc', action='store_true', help='global SparseGSA attention instead of TLC windows')
    p.add_argument('--degrade', action='store_true', help='treat IMAGE as HR: bicubic-downscale it first')
    p.add_argument('--hr', help='HR ground truth for PSNR/SSIM')
    p.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE',
                   help='architecture overrides for non-registered sizes, e.g. dim=24 groups=2 blocks=1')
    p.add_argument('--device', default='cuda' if _cuda() else 'cpu')
    return p.parse_args(argv)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def load_weights(model, path: str, trusted: bool = False) -> None:
    """Load ``path`` into ``model`` through the family's ``checkpoint_filter_fn``, strictly (a key that is
    missing, unexpected or of another size stops with them); ``trusted``: unpickle the file fully."""
    from attnzoo.utils.checkpoint import load_checkpoint, load_state_dict_strict
    ckpt = load_checkpoint(path, trusted=trusted)
    if isinstance(ckpt, dict) and 'state_dict' in ckpt and 'meta' in ckpt:  # mmengine Runner checkpoint
        sd = ckpt['state_dict']
        ema = {k[len('ema_model.module.model.'):]: v for k, v in sd.items()
               if k.startswith('ema_model.module.model.')}
        ckpt = ema or {k[len('model.'):]: v for k, v in sd.items() if k.startswith('model.')}
    filter_fn = getattr(sys.modules[type(model).__module__], 'checkpoint_filter_fn', None)
    state_dict = filter_fn(ckpt, model) if filter_fn is not None else ckpt
    load_state_dict_strict(model, state_dict, f'--checkpoint {path}')


def check_output_path(out: str, inputs, overwrite: bool) -> None:
    """Refuse to write ``out`` over one of ``inputs`` (the image, ``--hr``) unless ``overwrite``."""
    for name, path in inputs:
        if path and osp.exists(out) and osp.samefile(out, path) and not overwrite:
            raise SystemExit(f'--out {out} is the {name} itself; pass --overwrite to replace it, or pick another '
                             f'--out')


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import timm
    import torch

    import attnzoo  # noqa: F401
    from attnzoo.models.dlgsanet import tiled_inference
    from attnzoo.tasks.super_resolution import (bicubic_degrade, bicubic_upscale, calculate_psnr, calculate_ssim,
                                                read_image, write_image)

    if not timm.is_model(args.model):
        close = timm.list_models('*_x*')
        raise SystemExit(f'--model: unknown model {args.model!r}; SR models: {close}')
    from attnzoo.cli.convert_weights import parse_kwargs
    model = timm.create_model(args.model, **parse_kwargs(args.model_kwargs))
    scale = int(getattr(model, 'scale', 0) or model.pretrained_cfg.get('scale', 0))
    if not scale:
        raise SystemExit(f'--model {args.model} is not a super-resolution model')
    if args.scale is not None and args.scale != scale:
        raise SystemExit(f'--scale {args.scale} does not match {args.model} (x{scale}); pick the _x{args.scale} model')
    out = args.out or f'{osp.splitext(args.image)[0]}_{args.model}.png'
    check_output_path(out, (('input image', args.image), ('--hr image', args.hr)), args.overwrite)
    if args.checkpoint:
        load_weights(model, args.checkpoint, args.trust_checkpoint)
    else:
        print(f'warning: no --checkpoint, {args.model} has random weights', file=sys.stderr)
    if args.no_tlc and hasattr(model, 'set_tlc'):
        model.set_tlc(False)
    model.eval().to(args.device)

    img = read_image(args.image)
    hr = read_image(args.hr) if args.hr else None
    if args.degrade:
        hr = img[:img.shape[0] - img.shape[0] % scale, :img.shape[1] - img.shape[1] % scale]
        img = bicubic_degrade(img, scale)
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div(255.)[None].to(args.device)
    tile = args.tile
    if tile is None:
        tile = 0 if img.shape[0] * img.shape[1] <= 1 << 20 else getattr(model, 'tlc_kernel', 256)
    t = time.time()
    with torch.no_grad():
        y = tiled_inference(model, x, scale, tile, args.tile_pad) if tile else model(x)
    if args.device.startswith('cuda'):
        torch.cuda.synchronize()
    seconds = time.time() - t
    sr = y[0].clamp(0, 1).mul(255.).round().byte().permute(1, 2, 0).cpu().numpy()
    write_image(out, sr)
    msg = f'{args.model}: {img.shape[1]}x{img.shape[0]} -> {sr.shape[1]}x{sr.shape[0]} in {seconds:.2f}s, wrote {out}'
    if hr is not None:
        hr = hr[:sr.shape[0], :sr.shape[1]]
        bic = bicubic_upscale(img, scale)
        msg += (f'\nY-PSNR {calculate_psnr(sr, hr, scale):.4f} dB (bicubic {calculate_psnr(bic, hr, scale):.4f}), '
                f'Y-SSIM {calculate_ssim(sr, hr, scale):.4f} (bicubic {calculate_ssim(bic, hr, scale):.4f})')
    print(msg)
    return out


def run() -> None:
    """The ``attnzoo-sr`` command: :func:`main` on ``sys.argv``. ``main`` returns the output path to Python
    callers; a console command's return value would be taken for its exit status."""
    main()


if __name__ == '__main__':
    run()
