"""The guard of "Update model": an update may not teach the model to pass what it must flag.

Before the update runs (the answer is 409 at once), every new image marked good is checked against
the serving version; one far outside the good images refuses the update:
  - a near-constant frame: the standard deviation of its 8-bit gray values below GOOD_MIN_PIXEL_STD
    (a black, white or grey frame, a covered lens: the frames of a stopped camera, never a part);
  - a score above GOOD_MAX_SCORE_FACTOR times the image threshold (a false reject sits near the
    threshold; an image scored far above it is not one).
After the new version is trained and exported, and before it is swapped in, it scores every image
marked defect: one that the serving version flags (NG) and the new version would pass (OK) refuses
the update. A defect that the serving version already passes is a known miss that an update (which
only adds good images) cannot cause: it is named in the job's message, not refused.

The model file records no images of its own (only settings and arrays), so the defects the guard
knows are the feedback's: mark the test set's defective images as defect to guard them as well.
`force=true` (with the token) runs the update anyway; what the guard would have refused is still
named in the job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from deploy.inferencer import Prediction
from deploy.service.errors import ServiceError
from deploy.service.feedback import FeedbackImage

GOOD_MIN_PIXEL_STD = 2.0       # gray levels of 0..255
GOOD_MAX_SCORE_FACTOR = 2.0    # times the serving version's image threshold

Scorer = Callable[[bytes], Prediction]


@dataclass(frozen=True)
class Refusal:
    sha256: str
    label: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"sha256": self.sha256, "label": self.label, "reason": self.reason}


def check_good_images(paths: dict[str, str], score: Scorer, threshold: float) -> list[Refusal]:
    """The images to be added as good that are far outside the good images (see the module doc)."""
    refused = []
    for sha256, path in sorted(paths.items()):
        try:
            image = FeedbackImage.read(path)
        except (ServiceError, OSError) as err:
            refused.append(Refusal(sha256, "good", f"unreadable now ({getattr(err, 'message', err)})"))
            continue
        if image.pixel_std < GOOD_MIN_PIXEL_STD:
            refused.append(Refusal(sha256, "good", f"near-constant frame: pixel std {image.pixel_std:.2f} "
                                                   f"< {GOOD_MIN_PIXEL_STD:g}"))
            continue
        value = score(image.data).image_score
        if value > GOOD_MAX_SCORE_FACTOR * threshold:
            refused.append(Refusal(sha256, "good", f"score {value:.4g} is {value / threshold:.1f}x the image "
                                                   f"threshold {threshold:.4g} (more than {GOOD_MAX_SCORE_FACTOR:g}x)"))
    return refused


def check_defect_images(paths: dict[str, str], new: Scorer, serving: Scorer) -> tuple[list[Refusal], list[str]]:
    """(defects the new version would pass and the serving one flags, defects both pass: known misses)."""
    refused, known_misses = [], []
    for sha256, path in sorted(paths.items()):
        with open(path, "rb") as f:
            data = f.read()
        after = new(data)
        if after.decision == "anomalous":
            continue
        before = serving(data)
        if before.decision == "anomalous":
            refused.append(Refusal(sha256, "defect", f"NG now (score {before.image_score:.4g}), OK after the "
                                                     f"update (score {after.image_score:.4g})"))
        else:
            known_misses.append(sha256)
    return refused, known_misses


def refusal_line(model: str, refused: list[Refusal]) -> str:
    """One line naming every refused image and what to do."""
    named = "; ".join(f"{r.sha256[:12]} ({r.label}: {r.reason})" for r in refused)
    return (f"update refused by the guard, {len(refused)} image{'s' if len(refused) > 1 else ''}: {named}. "
            f"Delete the image(s) (DELETE /api/v1/models/{model}/feedback/<sha256>) or force the update with the token "
            f"(POST /api/v1/models/{model}/update?force=true)")
