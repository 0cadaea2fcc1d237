"""Loaders: one per runtime. CHEAP TO CONSTRUCT; the expensive work happens in `load()`.

    loader = make_loader(path, spec, options)   # nothing loaded yet
    loader.load()                                # onnxruntime session / YOLO weights
    loader.warmup()                              # one real inference on a sample input
    loader.signature()                           # inputs and outputs, once loaded
    loader.predict({...}) / loader.detect(image)
    loader.unload()

`predict` takes inputs the agent has already checked against `signature()`
(serving_agent.signature.check_request): it runs them, nothing more.

`load`, `warmup`, `predict` and `detect` block; the manager runs them in threads.
"""

from __future__ import annotations

import ast
import gc
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving_agent.errors import BadInput, WrongModelKind
from serving_agent.signature import Signature, TensorSpec, from_ort
from serving_agent.spec import VersionSpec

DEFAULT_IMGSZ = 640


@dataclass(frozen=True)
class RuntimeOptions:
    """Execution providers in preference order; empty means CUDA when present, else CPU."""

    providers: tuple[str, ...] = ()
    intra_op_threads: int = 0  # 0: onnxruntime's default


@dataclass
class Box:
    class_id: int
    class_name: str
    confidence: float
    xyxy: tuple[float, float, float, float]


@dataclass
class Detections:
    boxes: list[Box] = field(default_factory=list)
    width: int = 0
    height: int = 0


def choose_providers(options: RuntimeOptions) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = list(options.providers) or ["CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise ValueError(f"none of the execution providers {wanted} is available here; available: {available}")
    return chosen


class Loader:
    kind = "tensor"
    tensors = True  # takes named tensors (Predict, ModelInfer); a `.pt` detector takes only images

    def __init__(self, path: Path, spec: VersionSpec, options: RuntimeOptions):
        self.path = path
        self.spec = spec
        self.options = options

    def load(self) -> None:
        raise NotImplementedError

    def warmup(self) -> None:
        raise NotImplementedError

    def signature(self) -> Signature:
        """The loaded model's inputs and outputs. Only called on a loaded version."""
        raise NotImplementedError

    def predict(self, inputs: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Only on a loader with `tensors`: Agent.predict refuses the others (WrongModelKind)."""
        raise NotImplementedError

    def detect(self, image: np.ndarray, conf: float, iou: float, max_det: int) -> Detections:
        raise WrongModelKind(f"{self.spec.name} is a tensor model; call Predict with named tensors instead of Detect")

    def unload(self) -> None:
        # References drop with the session/model; collect only the young generations for
        # cycles. A full collection pauses every request on the agent (a p99 spike per swap).
        gc.collect(1)


class OnnxLoader(Loader):
    """A plain ONNX graph through onnxruntime."""

    def __init__(self, path: Path, spec: VersionSpec, options: RuntimeOptions):
        super().__init__(path, spec, options)
        self.session: Any = None  # an onnxruntime.InferenceSession once loaded
        self.delegate: YoloLoader | None = None

    def load(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if self.options.intra_op_threads:
            so.intra_op_num_threads = self.options.intra_op_threads
        self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=choose_providers(self.options))
        self._signature = from_ort(self.session)
        self._output_names = list(self._signature.output_names)  # what a request without output_names runs
        meta = self.session.get_modelmeta().custom_metadata_map
        if "names" in meta and "stride" in meta:  # a YOLO export: Detect goes through ultralytics,
            # tensors (Predict, ModelInfer) through this session, the raw graph
            imgsz = _imgsz(meta.get("imgsz")) or _imgsz(self.spec.config.get("imgsz"))
            self.delegate = YoloLoader(self.path, self.spec, self.options, imgsz)
            self.delegate.load()
            self.kind = "detector"

    def signature(self) -> Signature:
        return self._signature

    def sample_inputs(self) -> dict[str, np.ndarray]:
        """Zeros of each input's shape, a dynamic dimension 1, or for a YOLO export's images
        a dynamic height and width its image size (a 1x1 image does not pass its network)."""
        out: dict[str, np.ndarray] = {}
        size = self.delegate.imgsz if self.delegate is not None else None
        for spec in self._signature.inputs:
            if spec.dtype is None or spec.dtype == np.dtype(object):
                raise ValueError(f"input {spec.name!r} has a type the agent cannot build a sample for")
            shape = [d if d > 0 else size if size and i >= 2 else 1 for i, d in enumerate(spec.shape or ())]
            out[spec.name] = np.zeros(shape, dtype=spec.dtype)
        return out

    def warmup(self) -> None:
        if self.delegate is not None:  # a YOLO export: Detect's ultralytics model, and below the
            self.delegate.warmup()  # raw session that tensor requests (Predict, ModelInfer) run on
        self.session.run(None, self.sample_inputs())

    def detect(self, image: np.ndarray, conf: float, iou: float, max_det: int) -> Detections:
        if self.delegate is not None:
            return self.delegate.detect(image, conf, iou, max_det)
        return super().detect(image, conf, iou, max_det)

    def predict(self, inputs: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        names = output_names or self._output_names
        try:
            values = self.session.run(names, inputs)
        except Exception as e:  # a check the signature cannot express (a dimension tied to another)
            raise BadInput(f"onnxruntime rejected the inputs of {self.spec.name}: {e}") from None
        return dict(zip(names, values, strict=True))

    def unload(self) -> None:
        self.session = None
        if self.delegate is not None:
            self.delegate.unload()
            self.delegate = None
        super().unload()


class YoloLoader(Loader):
    """Ultralytics YOLO weights (`.pt`) or a YOLO-exported `.onnx`, through `YOLO(path)`."""

    kind = "detector"
    tensors = False

    def __init__(self, path: Path, spec: VersionSpec, options: RuntimeOptions, imgsz: int | None = None):
        super().__init__(path, spec, options)
        self.model: Any = None  # an ultralytics.YOLO once loaded
        self.imgsz = imgsz
        self.lock = threading.Lock()  # an ultralytics predictor is not thread-safe

    def load(self) -> None:
        import os

        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        self.model = YOLO(str(self.path), task="detect")
        if not self.imgsz:
            args = getattr(getattr(self.model, "model", None), "args", None) or {}
            self.imgsz = _imgsz(args.get("imgsz") if isinstance(args, dict) else None) or DEFAULT_IMGSZ
        self.device = "cuda:0" if self._use_cuda() else "cpu"
        names = getattr(self.model, "names", None) or {}
        size = self.imgsz or DEFAULT_IMGSZ
        rows = 4 + len(names)
        # The network's own tensors, as its ONNX export has them: a batch of RGB images scaled to
        # 0..1 in, (x, y, w, h, one score per class) for every anchor out. Requests may send any
        # batch (`shape`); the registry records the export's exact form (`dims`): batch 1 and the
        # anchors, the grid cells of every stride ((imgsz / stride)^2 each).
        f32 = np.dtype(np.float32)
        self._signature = Signature(
            (TensorSpec("images", f32, (-1, 3, size, size), "float32", (1, 3, size, size)),),
            (TensorSpec("output0", f32, (-1, rows, -1), "float32", (1, rows, self._anchors(size))),),
            platform="ultralytics_pt",
        )

    def _anchors(self, size: int) -> int | None:
        """The detector's anchor count at `size`; None when the network does not say."""
        try:
            strides = [int(s) for s in self.model.model.stride.tolist()]
        except Exception:  # noqa: BLE001 - not a stride-based detector: the count stays unnamed
            return None
        return sum((size // s) ** 2 for s in strides) or None

    def signature(self) -> Signature:
        return self._signature

    def _use_cuda(self) -> bool:
        """CUDA when the providers allow it (the default does) and torch sees a GPU."""
        if self.options.providers and "CUDAExecutionProvider" not in self.options.providers:
            return False
        try:
            import torch

            return bool(torch.cuda.is_available())
        except Exception:  # noqa: BLE001 - no usable torch: CPU
            return False

    def _predict(self, image: np.ndarray, conf: float, iou: float, max_det: int):
        with self.lock:
            return self.model.predict(
                image, imgsz=self.imgsz, conf=conf, iou=iou, max_det=max_det, device=self.device, verbose=False
            )[0]

    def warmup(self) -> None:
        size = self.imgsz or DEFAULT_IMGSZ
        self._predict(np.zeros((size, size, 3), dtype=np.uint8), 0.25, 0.7, 10)

    def detect(self, image: np.ndarray, conf: float, iou: float, max_det: int) -> Detections:
        r = self._predict(image, conf, iou, max_det)
        names = r.names or {}
        out = Detections(width=int(image.shape[1]), height=int(image.shape[0]))
        if r.boxes is not None and len(r.boxes):
            xyxy = r.boxes.xyxy.cpu().numpy()
            cls = r.boxes.cls.cpu().numpy().astype(int)
            cf = r.boxes.conf.cpu().numpy()
            for i in np.argsort(-cf):
                c = int(cls[i])
                x1, y1, x2, y2 = (float(x) for x in xyxy[i])
                out.boxes.append(Box(c, str(names.get(c, c)), float(cf[i]), (x1, y1, x2, y2)))
        return out

    def unload(self) -> None:
        self.model = None
        super().unload()


def _imgsz(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, (list, tuple)):
        value = max(int(v) for v in value) if value else None
    return int(value) if value else None


def make_loader(path: Path, spec: VersionSpec, options: RuntimeOptions) -> Loader:
    """Picks the loader for an artifact by its registered format. Nothing is read or loaded
    here; an ONNX file exported by Ultralytics is recognised from its metadata in `load()`."""
    if spec.format == "ultralytics_pt":
        return YoloLoader(path, spec, options, _imgsz(spec.config.get("imgsz")))
    if spec.format == "onnx":
        return OnnxLoader(path, spec, options)
    raise ValueError(f"{spec.name} has format {spec.format!r}; the agent serves onnx and ultralytics_pt artifacts only")
