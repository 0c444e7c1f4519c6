"""Pretrained weights of every family, read through attnzoo's one checkpoint loader.

timm's ``load_pretrained`` reads a local file with its own ``torch.load`` (a text file gives ``KeyError: 101``,
a missing one an empty ``FileNotFoundError``, a refused global PyTorch's advice to unpickle fully) and a URL
with ``torch.hub`` (offline: a bare ``URLError``). :func:`resolve_pretrained` runs before
``build_model_with_cfg``: it downloads or reads the file itself, with
:func:`attnzoo.utils.checkpoint.load_checkpoint`, and hands timm the loaded dict as
``pretrained_cfg_overlay['state_dict']``; timm then applies the family's ``checkpoint_filter_fn`` and its
strict load as before.
"""
import os
from typing import Any, Dict, Optional

import torch
from timm.models._builder import resolve_pretrained_cfg

from ..utils.checkpoint import load_checkpoint

__all__ = ['resolve_pretrained']

_LOCAL_ROUTE = ('download the file on a machine with access and pass pretrained_cfg_overlay=dict(file=PATH) '
                '(weights.md lists every release)')


def _download(variant: str, url: str, file_name: str) -> str:
    """The path of ``url`` in torch.hub's checkpoint folder (timm's cache) as ``file_name``, downloading it if
    absent."""
    folder = os.path.join(torch.hub.get_dir(), 'checkpoints')
    path = os.path.join(folder, file_name)
    if os.path.isfile(path):
        return path
    os.makedirs(folder, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, progress=True)  # a temp file, renamed when complete
    except OSError as err:  # urllib's URLError / HTTPError, timeouts, a full disk
        raise OSError(f'{variant}: downloading the pretrained weights from {url} failed ({err}). Offline, '
                      f'{_LOCAL_ROUTE}.') from err
    return path


def resolve_pretrained(variant: str, pretrained: bool, kwargs: Dict[str, Any],
                       cache_file: Optional[str] = None, download_page: Optional[str] = None) -> None:
    """For ``pretrained=True``, put the loaded checkpoint into ``kwargs['pretrained_cfg_overlay']['state_dict']``.

    The source is timm's order: an overlay ``state_dict`` (left as given), an overlay or config ``file``, the
    config's ``url`` (downloaded to torch.hub's checkpoint folder as ``cache_file``, default the URL's file
    name; ``{tag}`` in it becomes the config's tag, for URLs that do not name their file). ``download_page``:
    where released weights without a direct URL are fetched by hand (a config with neither URL nor page is left
    to timm, whose error says that no weights exist).

    Raises:
        FileNotFoundError: naming the local file that does not exist.
        CheckpointError: the file is not a checkpoint, is truncated, or needs trusted loading.
        OSError: the download failed; the message gives the URL and the local-file route.
        RuntimeError: the weights have no direct URL; the message gives ``download_page`` and the local-file route.
    """
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    if not pretrained or overlay.get('state_dict') is not None:
        return
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                 pretrained_cfg_overlay=overlay)
    if cfg.source or cfg.hf_hub_id:  # hf-hub / local-dir sources: timm's own readers
        return
    if cfg.file:
        path = cfg.file
    elif cfg.url:
        path = _download(variant, cfg.url, (cache_file or os.path.basename(cfg.url.split('?')[0])).format(tag=cfg.tag))
    elif download_page:
        raise RuntimeError(f'{variant}: its pretrained weights have no direct download URL; download them from '
                           f'{download_page} and pass pretrained_cfg_overlay=dict(file=PATH) (see weights.md)')
    else:
        return  # no released weights: timm's error says so
    overlay['state_dict'] = load_checkpoint(path)
    kwargs['pretrained_cfg_overlay'] = overlay
