"""Operator feedback: images with one label each, under --feedback_dir/<model>/<label>/<sha256>.<ext>.

- An image is fully decoded and checked when it arrives (FeedbackImage.check): an undecodable file,
  or one smaller than MIN_SIDE pixels a side, is refused with one line and never stored, so it cannot
  break a later update.
- One image (by the SHA-256 of its bytes) has one label: a later label replaces the earlier one
  (the answer says `replaced`), so "good" then "defect" leaves it a defect.
- Names are the content hash with the extension of the sniffed type; files are written to a
  temporary name and renamed. Model names are the served ones (plain names), labels a fixed set:
  nothing is ever written outside the feedback folder.
- What an update used is kept in <model>/updates.json as links {"from": version, "to": version,
  "images": [sha256...]}: the images in the current version are those on the chain of links that
  ends at it. A second update without new images adds nothing, and after a rollback the images of
  the version rolled back count as new again (a second rollback restores them as used).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from datasets.preprocess import list_images
from deploy.inferencer import decode
from deploy.service.errors import ServiceError
from deploy.service.uploads import sniff_extension
from utils.errors import UserError
from utils.io import atomic_write, atomic_write_text, is_safe_name

LABELS = ("good", "defect")   # "good": a false reject; "defect": a miss
MIN_SIDE = 32                 # pixels: no camera frame of a part is smaller; a 1x1 "image" is a fuzzer's
LEDGER = "updates.json"
_HASH = re.compile(r"^[0-9a-f]{32,64}$")
_lock = threading.Lock()      # one writer at a time: labels move between folders in two steps


@dataclass(frozen=True)
class FeedbackImage:
    """An uploaded image that decodes, with what the guard looks at."""
    data: bytes
    sha256: str
    width: int
    height: int
    pixel_std: float    # of the 8-bit gray values: ~0 for a black, white or otherwise blank frame

    @classmethod
    def check(cls, data: bytes) -> "FeedbackImage":
        try:
            image = decode(data, "feedback image")
        except UserError as err:
            raise ServiceError(400, f"feedback not stored: {err}") from None
        if min(image.size) < MIN_SIDE:
            raise ServiceError(400, f"feedback not stored: the image is {image.width}x{image.height} pixels; "
                                    f"a feedback image has at least {MIN_SIDE} pixels a side")
        return cls(data, hashlib.sha256(data).hexdigest(), image.width, image.height, gray_std(image))

    @classmethod
    def read(cls, path: str) -> "FeedbackImage":
        with open(path, "rb") as f:
            return cls.check(f.read())


def gray_std(image: Any) -> float:
    return float(np.asarray(image.convert("L"), np.float64).std())


class FeedbackStore:
    """The feedback of one served model."""

    def __init__(self, feedback_dir: str, model: str):
        if not is_safe_name(model):
            raise ValueError(f"feedback for model {model!r}: not a served model name")
        self.folder = os.path.join(feedback_dir, model)

    def _files(self, label: str) -> list[str]:
        folder = os.path.join(self.folder, label)
        return list_images(folder) if os.path.isdir(folder) else []

    def _find(self, sha256: str) -> list[tuple[str, str]]:
        """(label, path) of every stored file of this image (one, unless an old store labelled it twice)."""
        return [(label, path) for label in LABELS for path in self._files(label) if _stem(path) == sha256]

    def store(self, label: str, image: FeedbackImage) -> dict[str, Any]:
        if label not in LABELS:
            raise ValueError(f"label {label!r}: not one of {LABELS}")
        target = os.path.join(self.folder, label, image.sha256 + sniff_extension(image.data))
        with _lock:
            earlier = self._find(image.sha256)
            if not os.path.isfile(target):
                atomic_write(target, lambda tmp: tmp.write_bytes(image.data))
            for old_label, path in earlier:
                if path != target:
                    os.remove(path)
        replaced = sorted({old for old, _ in earlier if old != label})
        return {"sha256": image.sha256, "label": label, "replaced": bool(replaced),
                "previous_label": replaced[0] if replaced else None, "size": len(image.data)}

    def delete(self, sha256: str) -> bool:
        if not _HASH.match(sha256):
            raise ServiceError(400, f"'{sha256}' is not a feedback image's SHA-256 (64 hex digits)")
        with _lock:
            found = self._find(sha256)
            for _, path in found:
                os.remove(path)
        return bool(found)

    def items(self, current_version: str | None = None) -> list[dict[str, Any]]:
        """Every stored image, newest first; `in_model`: already added to `current_version` by an update."""
        used = self.used_by(current_version) if current_version else set()
        listed = []
        for label in LABELS:
            for path in self._files(label):
                st = os.stat(path)
                listed.append({"sha256": _stem(path), "label": label, "size": st.st_size, "mtime": st.st_mtime,
                               "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)),
                               "in_model": _stem(path) in used})
        listed.sort(key=lambda item: -item.pop("mtime"))
        return listed

    def counts(self) -> dict[str, int]:
        return {label: len(self._files(label)) for label in LABELS}

    def paths(self, label: str) -> dict[str, str]:
        """{sha256: path} of the images with `label`."""
        return {_stem(path): path for path in self._files(label)}

    def used_by(self, version: str) -> set[str]:
        """The images that updates added on the way to `version` (see the module doc)."""
        links = {link["to"]: link for link in self._ledger()}
        used: set[str] = set()
        seen = set()
        while version in links and version not in seen:   # `seen`: a ledger edited by hand may loop
            seen.add(version)
            used.update(links[version]["images"])
            version = links[version]["from"]
        return used

    def record_update(self, before: str, after: str, images: list[str]) -> None:
        ledger = [link for link in self._ledger() if link["to"] != after] + \
                 [{"from": before, "to": after, "images": sorted(images)}]
        os.makedirs(self.folder, exist_ok=True)
        atomic_write_text(os.path.join(self.folder, LEDGER), json.dumps(ledger, indent=1))

    def _ledger(self) -> list[dict[str, Any]]:
        try:
            with open(os.path.join(self.folder, LEDGER), encoding="utf-8") as f:
                ledger = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as err:
            raise ServiceError(500, f"the feedback ledger {LEDGER} of this model cannot be read: {err}") from None
        return [link for link in ledger if isinstance(link, dict) and {"from", "to", "images"} <= set(link)]


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]
