"""The wheel as a user installs it: built from the sources pyproject.toml names, installed non-editable in a fresh
venv that sees only what the wheel's own metadata requires.

No download: the venv has no system site-packages; a ``.pth`` file links it to this machine's installed copies of
the distributions that the wheel's ``Requires-Dist`` needs (their closure through each one's own requirements), and
nothing else. First with only the core requirements (torch, torchvision, timm, numpy and theirs): every family
builds with ``timm.create_model``, the console commands that need no extra run, and ``attnzoo-train`` names the
``[train]`` extra. Then the ``[train]`` extra's closure is linked in as well, and ``attnzoo-train`` /
``attnzoo-test`` run the digits demo from the shipped config (``attnzoo::classification/demo_digits.py``).
"""
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from setuptools import find_packages

REPO = Path(__file__).resolve().parents[2]
# one model per family, each built and run by timm in the core venv: (name, input height/width)
FAMILY_MODELS = [('nat_mini', 224), ('dinat_mini', 224), ('dinat_s_tiny', 224), ('dinat_isotropic_small', 224),
                 ('biformer_tiny', 224), ('l2vit_tiny', 224), ('favit_b0', 224), ('sparsifiner_deit_tiny', 224),
                 ('dlgsanet_tiny_x2', 16)]


def test_package_list_matches_the_tree():
    """pyproject.toml lists the packages (for the configs mapping): a new subpackage must be added there."""
    config = tomllib.loads((REPO / 'pyproject.toml').read_text())['tool']['setuptools']
    found = find_packages(str(REPO), include=['attnzoo', 'attnzoo.*'])
    assert sorted(config['packages']) == sorted(found + ['attnzoo.configs'])
    assert config['package-dir'] == {'attnzoo.configs': 'configs'}


def _run(args: List[str], cwd: Path, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ('PYTHONPATH', 'PYTHONHOME')}
    env['OMP_NUM_THREADS'] = '1'
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


def _requirements(wheel: Path, extra: str) -> List[Requirement]:
    """The wheel's ``Requires-Dist`` entries that apply with ``extra`` ('' for the core install)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith('.dist-info/METADATA'))
        message = Parser().parsestr(archive.read(name).decode())
    reqs = [Requirement(line) for line in message.get_all('Requires-Dist') or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({'extra': extra})]


def _closure(requirements: Iterable[Requirement]) -> Dict[str, metadata.Distribution]:
    """The installed distributions that ``requirements`` need, through each one's own requirements."""
    found: Dict[str, metadata.Distribution] = {}
    stack = list(requirements)
    while stack:
        req = stack.pop()
        key = canonicalize_name(req.name)
        if key in found:
            continue
        found[key] = metadata.distribution(req.name)
        assert req.specifier.contains(found[key].version, prereleases=True), f'{req}: {found[key].version} installed'
        stack.extend(r for r in map(Requirement, found[key].requires or [])
                     if r.marker is None or r.marker.evaluate({'extra': ''}))
    return found


def _link_site(dists: Iterable[metadata.Distribution], site: Path) -> None:
    """Symlink into ``site`` the top-level modules, packages and ``.dist-info`` of ``dists``."""
    site.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        for file in dist.files or []:
            top = Path(file).parts[0]
            if top in ('..', '__pycache__') or top.endswith('.pth') or (site / top).exists():
                continue
            (site / top).symlink_to(Path(dist.locate_file(top)).resolve())


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of what pyproject.toml names (the package, configs/, the readme), so that
    nothing else in the checkout (a stale build/ folder) can reach it."""
    src = tmp_path_factory.mktemp('src')
    shutil.copy(REPO / 'pyproject.toml', src)
    shutil.copy(REPO / 'README.md', src)
    for folder in ('attnzoo', 'configs'):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    out = tmp_path_factory.mktemp('wheel')
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', str(src),
          '-w', str(out)], cwd=src)
    return next(out.glob('attnzoo-*.whl'))


@pytest.fixture(scope='module')
def venv(wheel, tmp_path_factory) -> Path:
    """A venv (no system site-packages, no pip) with the wheel installed and the core requirements linked."""
    root = tmp_path_factory.mktemp('venv')
    _run([sys.executable, '-m', 'venv', '--without-pip', str(root)], cwd=root)
    python = root / 'bin' / 'python'
    _run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '--no-deps', '--no-index', str(wheel)],
         cwd=root)
    site = Path(_run([python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'], cwd=root).stdout.strip())
    _link_site(_closure(_requirements(wheel, '')).values(), root / 'core_site')
    (site / 'attnzoo_core_deps.pth').write_text(str(root / 'core_site') + '\n')
    return root


FAMILY_SCRIPT = '''
import importlib.util, sys
import torch, timm
import attnzoo
assert attnzoo.__file__.startswith(sys.prefix), attnzoo.__file__
assert importlib.util.find_spec('mmengine') is None
for name, size in {models!r}:
    model = timm.create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    print(name, tuple(out.shape))
'''


@pytest.mark.slow
def test_core_install_builds_every_family_and_names_the_train_extra(venv, tmp_path):
    out = _run([venv / 'bin' / 'python', '-c', FAMILY_SCRIPT.format(models=FAMILY_MODELS)], cwd=tmp_path).stdout
    for name, size in FAMILY_MODELS:
        expected = (1, 3, 2 * size, 2 * size) if name.startswith('dlgsanet') else (1, 1000)
        assert f'{name} {expected}' in out
    for command in ('attnzoo-benchmark', 'attnzoo-convert', 'attnzoo-sr', 'attnzoo-publish', 'attnzoo-export'):
        assert 'usage:' in _run([venv / 'bin' / command, '--help'], cwd=tmp_path).stdout
    for command in ('attnzoo-train', 'attnzoo-test'):
        proc = _run([venv / 'bin' / command, '--list-configs'], cwd=tmp_path, check=False)
        assert proc.returncode != 0 and "pip install 'attnzoo[train]'" in proc.stderr


@pytest.mark.slow
def test_train_extra_runs_the_digits_demo_through_the_console_commands(venv, wheel, tmp_path):
    train_site = venv / 'train_site'
    core = set(_closure(_requirements(wheel, '')))
    _link_site([d for k, d in _closure(_requirements(wheel, 'train')).items() if k not in core], train_site)
    site = next((venv / 'lib').glob('python3*/site-packages'))
    (site / 'attnzoo_train_deps.pth').write_text(str(train_site) + '\n')
    try:
        listed = _run([venv / 'bin' / 'attnzoo-train', '--list-configs'], cwd=tmp_path).stdout.split()
        assert 'attnzoo::classification/demo_digits.py' in listed and not any('/_base_/' in c for c in listed)
        options = ['--cfg-options', 'train_cfg.max_epochs=1', 'train_dataloader.batch_size=64']
        train = _run([venv / 'bin' / 'attnzoo-train', 'attnzoo::classification/demo_digits.py', '--work-dir', 'w',
                      *options], cwd=tmp_path)
        assert re.search(r'Final: top1=[\d.]+ .*epochs=1', train.stdout + train.stderr)
        test = _run([venv / 'bin' / 'attnzoo-test', 'attnzoo::classification/demo_digits.py', 'w/epoch_1.pth',
                     '--work-dir', 'w'], cwd=tmp_path)
        assert re.search(r'Final: top1=[\d.]+', test.stdout + test.stderr)
        missing = _run([venv / 'bin' / 'attnzoo-train', 'attnzoo::classification/demo_digit.py'], cwd=tmp_path,
                       check=False)
        assert 'did you mean attnzoo::classification/demo_digits.py' in missing.stderr
    finally:
        (site / 'attnzoo_train_deps.pth').unlink()
