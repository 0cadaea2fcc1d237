"""The Ultralytics training callback: a real (tiny) YOLO training run registers its best
weights with final metrics and per-epoch curves."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")


def tiny_dataset(root):
    """Four 64x64 images with one box each, in YOLO format."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(4):
            img = np.zeros((64, 64, 3), dtype=np.uint8)
            x0, y0 = rng.integers(4, 30, size=2)
            img[y0 : y0 + 24, x0 : x0 + 24] = 255
            Image.fromarray(img).save(root / "images" / split / f"{i}.png")
            cx, cy = (x0 + 12) / 64, (y0 + 12) / 64
            (root / "labels" / split / f"{i}.txt").write_text(f"0 {cx:.4f} {cy:.4f} 0.375 0.375\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: square\n")
    return data


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_training_run_registers_best_weights_with_curves(client, tmp_path):
    from ultralytics import YOLO

    from modelreg.integrations.ultralytics import track

    data = tiny_dataset(tmp_path / "ds")
    model = YOLO("yolov8n.yaml")
    cb = track(model, "yolo-run", client=client, promote_to="staging", tags={"team": "vision"})
    model.train(
        data=str(data),
        epochs=2,
        imgsz=64,
        batch=4,
        workers=0,
        plots=False,
        device="cpu",
        project=str(tmp_path / "runs"),
        name="exp",
        verbose=False,
        amp=False,
    )
    v = cb.version
    assert v is not None
    got = client.get_version("yolo-run", "staging")
    assert got.version == v.version == 1
    assert got.model_type == "yolov8n"
    assert got.artifact.filename in ("best.pt", "last.pt")
    assert got.config["epochs"] == 2 and got.config["imgsz"] == 64
    assert "mAP50(B)" in got.metrics
    curve = got.metric_history["mAP50(B)"].points
    assert [p.step for p in curve] == [1, 2]
    assert "train/box_loss" in got.metric_history
    assert got.lineage.dataset_id == str(data)
    assert len(got.lineage.dataset_hash) == 64
    assert dict(got.tags) == {"team": "vision"}
    # A retried callback registers nothing new.
    again = client.register_full(
        "yolo-run", (tmp_path / "runs" / "exp" / "weights" / got.artifact.filename), request_id=got.request_id
    )
    assert again.deduplicated and again.model_version.version == 1
