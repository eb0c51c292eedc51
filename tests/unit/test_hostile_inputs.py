"""Inputs that used to hang, recurse or score wrongly: named pipes, deep pickles, huge values,
images between Pillow's warning and error limits, interrupts that Python would ignore."""
import contextlib
import json
import os
import pickle
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from datasets import preprocess
from datasets.preprocess import list_images, load_image, load_mask
from helpers import ROOT
from models.scoring import MAX_FEATURE_VALUE, check_magnitude
from utils.errors import UserError
from utils.safe_pickle import MAX_NESTING, RefusedContent, check_nesting, loads_plain


def _nested_lists_pickle(depth: int) -> bytes:
    """A pickle of `depth` lists nested in one another, spelt opcode by opcode (pickle.dumps of
    such a list recurses and fails itself): `depth` EMPTY_LISTs, then APPENDs folding them up."""
    return b"\x80\x04" + b"]" * depth + b"a" * (depth - 1) + b"."


def test_deeply_nested_and_cyclic_pickles_are_refused():
    assert loads_plain(_nested_lists_pickle(MAX_NESTING)) is not None
    for depth in (MAX_NESTING + 1, 3000, 200_000):
        with pytest.raises(RefusedContent, match="nest more than"):
            loads_plain(_nested_lists_pickle(depth))
    cyclic = []
    cyclic.append({"self": cyclic})
    with pytest.raises(RefusedContent, match="contains itself"):
        loads_plain(pickle.dumps(cyclic))
    # Shared sub-lists are walked once: 2^40 paths, 41 levels -> refused at once, not after 2^40 steps.
    shared = [0]
    for _ in range(40):
        shared = [shared, shared]
    with pytest.raises(RefusedContent, match="nest more than"):
        check_nesting(shared)


def _unblock_after(fifo, seconds):
    """Open `fifo` for writing after `seconds` (then close it): a reader stuck on it gets EOF, so a
    regression fails this test instead of hanging the suite."""
    def release():
        with open(fifo, "wb"):
            pass
    timer = threading.Timer(seconds, release)
    timer.daemon = True
    timer.start()
    return timer


def test_named_pipes_are_skipped_in_folders_and_refused_by_name(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert list_images(tmp_path) == [str(tmp_path / "a.png")]
    assert "skipping" in capsys.readouterr().err
    timer = _unblock_after(fifo, 5.0)
    try:
        for read in (load_image, lambda p: load_mask(p, 8, 8)):
            with pytest.raises(UserError, match="not a regular file"):
                read(fifo)
    finally:
        timer.cancel()


def test_images_between_pillows_warning_and_error_limits_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")      # 1600 pixels, between 1x and 2x the limit
    Image.new("L", (40, 40)).save(tmp_path / "big_mask.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserError, match="too large"):
            load_image(tmp_path / "big.png")
    with pytest.raises(UserError, match="big_mask.png"):
        load_mask(tmp_path / "big_mask.png", 40, 40)
    Image.new("RGB", (30, 30)).save(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png").size == (30, 30)


def test_bank_magnitude_beyond_float32_scoring_is_named():
    assert check_magnitude(np.full((4, 8), 30.0, np.float32)) is None
    assert check_magnitude(np.full((4, 8), MAX_FEATURE_VALUE / 2, np.float32)) is None
    bank = np.ones((4, 8), np.float32)
    bank[2, 3] = 2.4e38
    assert "2.4e+38" in check_magnitude(bank)


_FINALISER_SCRIPT = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
from utils.errors import install_interrupt_hook, run_cli
install_interrupt_hook()

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)    # Ctrl-C arrives while a finaliser runs
        time.sleep(0.2)

def main():
    {body}
    time.sleep(0.5)
    print("finished")
    return 0

run_cli(main)
"""


@pytest.mark.parametrize("body", [
    "Finalised()",                                                         # Python ignores it there
    "try:\n        os.kill(os.getpid(), signal.SIGINT); time.sleep(0.2)\n    except BaseException:\n        pass",
])
def test_interrupts_python_or_a_library_would_ignore_still_stop_the_run(tmp_path, body):
    script = tmp_path / "run.py"
    script.write_text(_FINALISER_SCRIPT.format(root=str(ROOT), body=body))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (130, "error: interrupted"), done.stderr


def test_any_decoder_exception_is_the_images_own_one_line_error(tmp_path):
    """A TIFF whose StripOffsets is a DOUBLE makes Pillow raise TypeError while decoding."""
    from datasets.synthetic import write_crafted_tiff

    crafted = write_crafted_tiff(tmp_path / "crafted.tif")
    with pytest.raises(TypeError):
        with Image.open(crafted) as img:
            img.load()
    with pytest.raises(UserError, match="cannot decode image .*crafted.tif"):
        load_image(crafted)
    with pytest.raises(UserError, match="cannot read mask .*crafted.tif"):
        load_mask(crafted, 8, 8)
    with pytest.raises(UserError, match="cannot decode image 'upload'"):
        load_image(open(crafted, "rb"), name="upload")


def test_importing_the_loaders_leaves_pillows_limit_alone():
    code = "from PIL import Image; import datasets.preprocess, deploy.inferencer; print(Image.MAX_IMAGE_PIXELS)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split() == [str(preprocess.MAX_IMAGE_PIXELS)], done.stderr


def test_exif_orientation_is_applied_to_images_and_masks_alike(tmp_path):
    """A phone photo stored sideways (EXIF orientation 6: rotate 90 degrees clockwise to view) is
    read upright, by every loader; its mask, tagged the same way, still fits it."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255                              # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(stored[:, :, 0]).save(tmp_path / "phone_mask.png", exif=exif)
    upright = np.asarray(load_image(tmp_path / "phone.jpg"))
    assert upright.shape == (40, 20, 3) and upright[:10].mean() > 200 and upright[-10:].mean() < 50
    mask = load_mask(tmp_path / "phone_mask.png", (40, 20), (40, 20), image_size=(20, 40))
    assert mask.shape == (40, 20) and mask[:10].all() and not mask[10:].any()


def test_names_that_are_not_utf8_are_written_backslash_escaped(tmp_path):
    """b'bad\\xff\\xfename.png' (a GBK share's name) in results.csv/json and a scores table: valid
    UTF-8 files spelling the raw bytes as \\xff escapes, from which the exact name can be read back."""
    from deploy.batch_scoring import ResultWriter
    from utils.config import DataConfig
    from utils.io import readable_text
    from utils.table import write_csv

    name = os.fsdecode(str(tmp_path).encode() + b"/bad\xff\xfename.png")
    shown = readable_text(name)
    assert shown.endswith(r"bad\xff\xfename.png")
    assert shown.rsplit("/", 1)[1].encode("ascii").decode("unicode_escape").encode("latin1") == b"bad\xff\xfename.png"
    # No figures: the thresholds are not used (None keeps this test off the verdict rule's own types).
    writer = ResultWriter(str(tmp_path / "out"), DataConfig(), None, {}, figures=False)
    writer.add({"image": name, "image_score": None, "normalized_score": None, "decision": "error",
                "defect_area": None, "error": f"cannot decode image '{name}'"}, None)
    writer.close(complete=True)
    text = (tmp_path / "out" / "results.csv").read_bytes().decode("utf-8")
    assert text.count(r"bad\xff\xfename.png") == 2
    assert json.loads((tmp_path / "out" / "results.json").read_text("utf-8"))[0]["image"] == shown
    write_csv(tmp_path / "scores.csv", [{"image": name, "score": 1.0}], ["image", "score"])
    assert (tmp_path / "scores.csv").read_text("utf-8").splitlines()[1] == f"{shown},1.0000"


def test_a_bank_too_small_for_eq7_is_refused_at_fit(tmp_path):
    """--k 1e-9 kept one entry: eq. 7's weight is then 0 and every image scored 0.0 ('anomalous')."""
    from models.model_file import EmbeddingStream
    from models.patchcore.fit import fit_memory_bank
    from utils.config import ModelConfig

    embeddings = np.random.default_rng(0).normal(size=(2, 8, 4, 4)).astype(np.float32)
    with pytest.raises(UserError, match=r"--k 1e-09 keeps 1 of 32 .* use --k 28.1 or more, or --image_score max"):
        fit_memory_bank(EmbeddingStream([embeddings], 2), ModelConfig(k=1e-9), progress=False)
    fitted = fit_memory_bank(EmbeddingStream([embeddings], 2), ModelConfig(k=1e-9, image_score="max"), progress=False)
    assert len(fitted.arrays["memory_bank"]) == 1


def test_a_launched_workers_one_line_error_removes_its_lock_file(tmp_path):
    """Under paddle.distributed.launch a failing worker leaves with os._exit, past output_lock's
    `finally`: it exits 2 all the same and leaves no .lock behind."""
    code = ("from utils.errors import UserError, run_cli\nfrom utils.io import output_lock\n"
            "def main():\n"
            f"    with output_lock({str(tmp_path)!r}):\n"
            "        raise UserError(\"cannot decode image 'x.tif'\")\n"
            "run_cli(main)\n")
    env = dict(os.environ, PADDLE_TRAINERS_NUM="2", PADDLE_TRAINER_ID="1")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and done.stderr == "error: cannot decode image 'x.tif'\n"
    assert not (tmp_path / ".lock").exists()


def test_a_full_disk_names_the_file_and_an_unreadable_folder_warns(tmp_path, monkeypatch, capsys):
    import csv

    from deploy.batch_scoring import ResultWriter, collect_images
    from utils.config import DataConfig
    from utils.errors import describe_os_error

    writer = ResultWriter(str(tmp_path / "out"), DataConfig(), None, {}, figures=False)
    writer.csv_file = open("/dev/full", "w")            # every write: ENOSPC, as on a full disk
    writer.csv = csv.writer(writer.csv_file)
    with pytest.raises(OSError) as full:
        writer.add({"image": "a.png", "image_score": 1.0, "normalized_score": 0.5, "decision": "normal",
                    "defect_area": 0.0, "error": ""}, np.zeros((2, 2), np.float32))
    assert describe_os_error(full.value) == f"no space left on device while writing: {tmp_path}/out/results.partial.csv"
    with contextlib.suppress(OSError):
        writer.csv_file.close()
    # Root reads any folder, so the refusal is simulated where os.walk lists folders.
    (tmp_path / "in" / "locked").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "a.png")
    scandir = os.scandir

    def refusing(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    assert collect_images(str(tmp_path / "in")) == [str(tmp_path / "in" / "a.png")]
    assert capsys.readouterr().err == f"warning: skipping folder '{tmp_path}/in/locked': Permission denied\n"


def test_printing_a_name_that_is_not_utf8_never_stops_a_script():
    code = ("import os\nfrom utils.errors import run_cli\n"
            "run_cli(lambda: print('saved in', os.fsdecode(b'out\\xff')))\n")
    env = dict(os.environ, PYTHONIOENCODING="utf-8")      # strict UTF-8, as in a UTF-8 locale
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stdout == "saved in out\\udcff\n", done.stderr
