"""Pretrained weights: torchvision's official ImageNet checkpoints, kept in the torch hub cache.

Files land where torchvision puts them ($TORCH_HOME/hub/checkpoints, by default
~/.cache/torch/hub/checkpoints), so checkpoints users already have are reused, and a
file is only ever renamed into place once its SHA-256 matches.

Usage::

    from tlcore.weights import fetch
    path = fetch("resnet50")            # .../hub/checkpoints/resnet50-0676ba61.pth
    model.load_checkpoint(str(path))
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch.hub
from tqdm import tqdm

from .files import atomic_writer

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# torchvision's rule: the hex digits after the last "-" of the file name start the file's SHA-256.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")
_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """The weights could not be downloaded, or the download did not match its checksum."""


@dataclass(frozen=True)
class Weights:
    arch: str
    tag: str
    url: str
    sha256_prefix: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_REGISTRY: Dict[Tuple[str, str], Weights] = {}


def register(arch: str, tag: str, url: str, sha256_prefix: Optional[str] = None) -> Weights:
    """Adds weights for ``arch`` under ``tag``; the hash defaults to the one in the file name."""
    if (arch, tag) in _REGISTRY:
        raise ValueError(f"weights {arch!r}/{tag!r} are already registered")
    if sha256_prefix is None:
        match = _HASH_IN_NAME.search(url.rsplit("/", 1)[-1])
        if match is None:
            raise ValueError(f"{url}: no hash in the file name; pass sha256_prefix")
        sha256_prefix = match.group(1)
    entry = Weights(arch, tag, url, sha256_prefix.lower())
    _REGISTRY[(arch, tag)] = entry
    return entry


def available(arch: Optional[str] = None) -> List[Weights]:
    """Registered weights, for one architecture or all."""
    return [w for (a, _), w in sorted(_REGISTRY.items()) if arch is None or a == arch]


def cache_dir() -> Path:
    """torchvision's checkpoint folder: $TORCH_HOME/hub/checkpoints (torch.hub's rules)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch(arch: str, weights: PathLike = "imagenet", progress: bool = True) -> Path:
    """The local file for ``weights``: a registered tag such as "imagenet", or a path.

    A cached file is returned without any request; otherwise it is downloaded.
    """
    if (arch, str(weights)) not in _REGISTRY:
        path = Path(weights)
        if path.is_file():
            return path
        tags = sorted(t for a, t in _REGISTRY if a == arch)
        raise FileNotFoundError(
            f"{weights}: neither a weights file nor a registered tag for {arch!r} "
            f"(tags: {', '.join(tags) or 'none'})")
    entry = _REGISTRY[(arch, str(weights))]
    dest = cache_dir() / entry.filename
    if dest.is_file():
        return dest
    return download(entry.url, dest, entry.sha256_prefix, progress=progress)


def download(url: str, dest: PathLike, sha256_prefix: str, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Downloads ``url`` to ``dest`` through a temporary file renamed only when the hash matches."""
    dest = Path(dest)
    digest = hashlib.sha256()
    log.info("downloading %s to %s", url, dest)
    # Nothing is left at dest unless the whole file arrived and its hash matched.
    with atomic_writer(dest) as out:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                total = response.headers.get("Content-Length")
                with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                          unit_divisor=1024, desc=dest.name, disable=not progress) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError) as e:
            raise WeightsError(
                f"could not download {url} ({e}). Offline? Place the file at {dest} "
                f"(the torch hub cache; set TORCH_HOME to move it) and try again.") from e
        actual = digest.hexdigest()
        if not actual.startswith(sha256_prefix.lower()):
            raise WeightsError(f"{url}: SHA-256 {actual} does not start with {sha256_prefix}; "
                               "the download is corrupt or the file changed, nothing was saved")
    return dest


def imagenet_classes() -> List[str]:
    """The 1,000 ImageNet-1k category names, in torchvision's label order."""
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


# torchvision 0.14's IMAGENET1K_V1 checkpoints, the ones tlcore's preprocessing describes.
_BASE = "https://download.pytorch.org/models/"
for _arch, _file in [
    ("resnet18", "resnet18-f37072fd.pth"), ("resnet34", "resnet34-b627a593.pth"),
    ("resnet50", "resnet50-0676ba61.pth"), ("resnet101", "resnet101-63fe2227.pth"),
    ("resnet152", "resnet152-394f9c45.pth"),
    ("vgg11", "vgg11-8a719046.pth"), ("vgg11_bn", "vgg11_bn-6002323d.pth"),
    ("vgg13", "vgg13-19584684.pth"), ("vgg13_bn", "vgg13_bn-abd245e5.pth"),
    ("vgg16", "vgg16-397923af.pth"), ("vgg16_bn", "vgg16_bn-6c64b313.pth"),
    ("vgg19", "vgg19-dcbb9e9d.pth"), ("vgg19_bn", "vgg19_bn-c79401a0.pth"),
    ("mobilenet_v2", "mobilenet_v2-b0353104.pth"),
    ("mobilenet_v3_small", "mobilenet_v3_small-047dcff4.pth"),
    ("mobilenet_v3_large", "mobilenet_v3_large-8738ca79.pth"),
    ("efficientnet_b0", "efficientnet_b0_rwightman-3dd342df.pth"),
    ("efficientnet_b1", "efficientnet_b1_rwightman-533bc792.pth"),
    ("efficientnet_b2", "efficientnet_b2_rwightman-bcdf34b7.pth"),
    ("efficientnet_b3", "efficientnet_b3_rwightman-cf984f9c.pth"),
]:
    register(_arch, "imagenet", _BASE + _file)
