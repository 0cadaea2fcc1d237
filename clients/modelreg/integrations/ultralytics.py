"""Register Ultralytics YOLO training runs in modelreg, with their per-epoch curves.

    from ultralytics import YOLO
    from modelreg.integrations.ultralytics import track

    model = YOLO("yolov8n.yaml")
    track(model, "detector", promote_to="staging")      # adds the callbacks
    model.train(data="data.yaml", epochs=50, imgsz=640)
    # -> models/detector/versions/N: best.pt, final metrics, per-epoch curves, the complete
    #    training config, the dataset and run as lineage.

The registration carries a request id derived from the run directory and the weights'
sha256, so a retried callback never registers the same weights twice.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

from modelreg.client import Client, file_sha256
from modelreg.v1 import resources_pb2 as res

log = logging.getLogger(__name__)

_JSON_SCALARS = (str, int, float, bool, type(None))


def _clean_key(key: str) -> str:
    """`metrics/mAP50(B)` -> `mAP50(B)`, `train/box_loss` -> `train/box_loss`."""
    return key.removeprefix("metrics/")


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in (values or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[_clean_key(str(k))] = f
    return out


def _config(args: Any) -> dict[str, Any]:
    """The trainer's arguments, as JSON-safe values."""
    raw = vars(args) if not isinstance(args, dict) else args
    return {k: (v if isinstance(v, _JSON_SCALARS) else str(v)) for k, v in raw.items()}


class ModelregCallback:
    """Collects per-epoch metrics during training and registers the best weights at the end."""

    def __init__(
        self,
        model_name: str,
        *,
        client: Client | None = None,
        address: str | None = None,
        model_type: str = "",
        promote_to: str | None = None,
        tags: dict[str, str] | None = None,
        description: str = "",
        dataset_id: str = "",
        dataset_hash: str = "",
        code_revision: str = "",
    ):
        self.model_name = model_name
        self.client = client or Client(address)
        self.model_type = model_type
        self.promote_to = promote_to
        self.tags = tags or {}
        self.description = description
        self.dataset_id = dataset_id
        self.dataset_hash = dataset_hash
        self.code_revision = code_revision
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.version: res.ModelVersion | None = None  # the registered ModelVersion, after training

    def on_fit_epoch_end(self, trainer) -> None:
        epoch = int(trainer.epoch) + 1  # 1-based, as Ultralytics prints it
        if epoch > int(getattr(trainer, "epochs", epoch)):
            return  # the final validation of best.pt, not an epoch
        values = dict(trainer.metrics or {})
        try:
            values.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
        except Exception:  # noqa: BLE001 - some trainers have no loss items
            pass
        for key, value in _numbers(values).items():
            series = self.history.setdefault(key, [])
            if series and series[-1][0] == epoch:
                series[-1] = (epoch, value)
            else:
                series.append((epoch, value))

    def on_train_end(self, trainer) -> None:
        weights = Path(trainer.best) if Path(trainer.best).exists() else Path(trainer.last)
        if not weights.exists():
            log.warning("modelreg: no weights to register (%s)", weights)
            return
        sha = file_sha256(weights)
        data = str(getattr(trainer.args, "data", "") or "")
        model_type = self.model_type or Path(str(getattr(trainer.args, "model", "") or "model")).stem
        self.version = self.client.register(
            self.model_name,
            weights,
            format="ultralytics_pt",
            model_type=model_type,
            config=_config(trainer.args),
            metrics=_numbers(trainer.metrics),
            metric_history=self.history,
            dataset_id=self.dataset_id or data,
            dataset_hash=self.dataset_hash or (file_sha256(Path(data)) if data and Path(data).is_file() else ""),
            run_id=str(trainer.save_dir),
            code_revision=self.code_revision,
            tags=self.tags,
            description=self.description,
            request_id=f"ultralytics:{hashlib.sha256(str(trainer.save_dir).encode()).hexdigest()[:16]}:{sha[:32]}",
            sha256=sha,
        )
        log.info("modelreg: registered %s", self.version.name)
        if self.promote_to:
            self.client.promote(
                self.model_name, self.version.version, self.promote_to, reason="ultralytics training run"
            )


def track(yolo_model, model_name: str, **kwargs) -> ModelregCallback:
    """Adds modelreg's callbacks to an `ultralytics.YOLO` model; returns the callback
    object (its `.version` is the registered version once training ends)."""
    cb = ModelregCallback(model_name, **kwargs)
    yolo_model.add_callback("on_fit_epoch_end", cb.on_fit_epoch_end)
    yolo_model.add_callback("on_train_end", cb.on_train_end)
    return cb
