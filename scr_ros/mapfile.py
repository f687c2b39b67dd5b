"""Maps on disk: one safetensors file holding the head weights and a JSON header.

The header lives in the safetensors metadata under the key ``scr_ros`` (safetensors metadata is
a string-to-string map; ours is one JSON document). It records the format version, the encoder
(name, source, SHA-256 of its weights), the head type and constructor config, the mean camera
position, the image height used, the mapping cameras, training figures, the creation time and a
SHA-256 of every stored tensor. Since format 2 a map may also carry its *implicit reconstruction*
(``cloud.xyz`` float32 (N, 3) metres, ``cloud.rgb`` uint8 (N, 3)): the head's scene coordinates
on the mapping frames that reproject within a few pixels, for display (rviz ``~/map_cloud``).
Since format 3 it may carry *map parts* (:mod:`scr_ros.map_parts`), each under its key as a
header entry and ``KEY.*`` tensors: e.g. a PCA of the encoder features (``projection``), applied
before the head, and a keypoint classifier (``classifier``); all are optional, so format-2 maps
load unchanged.
Loading checks all of it and refuses, with the reason, a file
that is truncated, tampered with, from a newer format, or for a different head or encoder.

No pickles: safetensors stores raw tensors only. Writes go through a temporary file and an
atomic rename, so a crash never replaces a good map with half of one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from .errors import MapFileError
from .fileio import atomic_write_bytes
from .heads import HEADS, SceneHead, build_head
from .map_parts import MapPart, ordered

FORMAT = "scr_ros.map"
# 2: optional cloud.xyz / cloud.rgb tensors; 3: optional map parts (projection.*, classifier.*);
# 4: the mapping frames' poses (mapping.poses, float64) and names (header "mapping").
FORMAT_VERSION = 4
CLOUD_KEYS = ("cloud.xyz", "cloud.rgb")
POSES_KEY = "mapping.poses"
MAX_MAPPING_FRAMES = 10_000_000
HEADER_KEY = "scr_ros"
WEIGHT_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class SceneMap:
    """A trained head plus everything needed to use it safely."""

    head: SceneHead
    encoder: dict  # Encoder.describe(): name, source, sha256, out_channels, stride
    image_height: int
    training: dict = field(default_factory=dict)
    cameras: list[dict] = field(default_factory=list)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    cloud_xyz: np.ndarray | None = field(default=None, repr=False)  # (N, 3) float32, map frame
    cloud_rgb: np.ndarray | None = field(default=None, repr=False)  # (N, 3) uint8
    parts: dict[str, MapPart] = field(default_factory=dict)  # key -> part, in MAP_PARTS order
    # The mapping frames as the map was trained on them: camera-to-world poses (F, 4, 4) in the
    # map frame (refined, when the build refined them), names and capture stamps (or None).
    mapping_poses: np.ndarray | None = field(default=None, repr=False)
    mapping_frames: list[str] = field(default_factory=list)
    mapping_stamps_ns: list[int | None] = field(default_factory=list)

    @property
    def mean(self) -> list[float]:
        return [float(v) for v in self.head.mean]

    def header(self, weights_dtype: str, weights_sha256: str) -> dict:
        parts = {type(part).header_key(): part.header() for part in self.parts.values()}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "encoder": self.encoder,
            "head": {"type": self.head.head_type, "config": self.head.config},
            "mean": self.mean,
            "image_height": int(self.image_height),
            "cameras": self.cameras,
            "training": self.training,
            "weights_dtype": weights_dtype,
            "weights_sha256": weights_sha256,
            **(
                {"mapping": {"frames": self.mapping_frames, "stamps_ns": self.mapping_stamps_ns}}
                if self.mapping_poses is not None
                else {}
            ),
            **parts,
        }

    def save(self, path: str | Path, weights_dtype: str = "float16") -> Path:
        """Write the map atomically. fp16 weights (ACE's choice) halve the size at no measurable cost."""
        if weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weights_dtype must be one of {list(WEIGHT_DTYPES)}")
        tensors = {
            k: v.detach().cpu().to(WEIGHT_DTYPES[weights_dtype]).contiguous() for k, v in self.head.state_dict().items()
        }
        for k in self.head.full_precision:  # metres in the map frame stay fp32 (the mean, GLACE's centres)
            tensors[k] = getattr(self.head, k).detach().cpu().float()
        for part in self.parts.values():
            for k, v in part.module.state_dict().items():
                # Tensors a part keeps in metres or as poses keep their precision (float64 poses).
                keep = k in type(part).full_precision
                tensors[f"{type(part).header_key()}.{k}"] = (
                    (v if keep else v.to(WEIGHT_DTYPES[weights_dtype])).detach().cpu().contiguous()
                )
        if self.mapping_poses is not None:
            poses = np.asarray(self.mapping_poses, np.float64).reshape(-1, 4, 4)
            if not (len(poses) == len(self.mapping_frames) == len(self.mapping_stamps_ns)):
                raise ValueError(
                    f"{len(poses)} mapping poses for {len(self.mapping_frames)} frame names and "
                    f"{len(self.mapping_stamps_ns)} stamps"
                )
            tensors[POSES_KEY] = torch.from_numpy(poses.copy())
        if self.cloud_xyz is not None:
            xyz, rgb = (
                np.asarray(self.cloud_xyz, np.float32).reshape(-1, 3),
                np.asarray(self.cloud_rgb, np.uint8).reshape(-1, 3),
            )
            if len(xyz) != len(rgb):
                raise ValueError(f"map cloud has {len(xyz)} points but {len(rgb)} colours")
            tensors["cloud.xyz"], tensors["cloud.rgb"] = torch.from_numpy(xyz.copy()), torch.from_numpy(rgb.copy())
        for k, v in tensors.items():
            if v.is_floating_point() and not torch.isfinite(v.float()).all():
                raise ValueError(f"head tensor {k} is not finite as {weights_dtype}; save with weights_dtype='float32'")
        header = self.header(weights_dtype, tensors_sha256(tensors))
        data = _st_save(tensors, metadata={HEADER_KEY: json.dumps(header)})
        return atomic_write_bytes(path, data)

    @classmethod
    def load(cls, path: str | Path) -> "SceneMap":
        return load_map(path)


MAX_CHANNELS = 8192  # the widest encoder output a map may declare (heads check their own widths)


def read_header(path: str | Path) -> dict:
    """The JSON header of a map file, after format checks (tensors are not read)."""
    path = Path(path)
    if path.is_dir():
        raise MapFileError(f"{path} is a directory, not a map file")
    if not path.is_file():
        raise MapFileError(f"map file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is not a usable map
        raise MapFileError(f"{path} is not a readable map (corrupt or truncated safetensors file: {exc})") from None
    if HEADER_KEY not in meta:
        raise MapFileError(f"{path} is a safetensors file but not an scr_ros map (no '{HEADER_KEY}' header)")
    try:
        header = json.loads(meta[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise MapFileError(f"{path}: map header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise MapFileError(
            f"{path}: header format is {header.get('format') if isinstance(header, dict) else header!r}, expected "
            f"{FORMAT!r}"
        )
    version = header.get("format_version")
    if not isinstance(version, int):
        raise MapFileError(f"{path}: header has no integer format_version")
    if version > FORMAT_VERSION:
        raise MapFileError(
            f"{path}: map format version {version} is newer than this scr_ros reads ({FORMAT_VERSION}); upgrade scr_ros"
        )
    if version < 1:
        raise MapFileError(f"{path}: invalid map format version {version}")
    _require(
        header,
        path,
        {"encoder": dict, "head": dict, "mean": list, "image_height": int, "weights_dtype": str, "weights_sha256": str},
    )
    _require(header["encoder"], path, {"name": str, "sha256": str, "out_channels": int}, prefix="encoder.")
    _require(header["head"], path, {"type": str, "config": dict}, prefix="head.")
    return header


def not_a_map(path: Path) -> str | None:
    """Why an existing file must not be overwritten by a map (None: it is one; replacing is fine)."""
    try:
        read_header(path)
    except MapFileError as exc:
        return f"it is not an scr_ros map ({exc}); delete it or choose another file"
    return None


def _require(d: dict, path: Path, fields: dict, prefix: str = "") -> None:
    for key, typ in fields.items():
        if key not in d:
            raise MapFileError(f"{path}: map header lacks '{prefix}{key}'")
        if not isinstance(d[key], typ) or (typ is int and isinstance(d[key], bool)):
            raise MapFileError(
                f"{path}: map header field '{prefix}{key}' should be {typ.__name__}, got {type(d[key]).__name__}"
            )


def load_map(path: str | Path) -> SceneMap:
    """Load and verify a map file; raises :class:`MapFileError` saying what is wrong.

    The file is untrusted input, checked in the order its parts can be read cheaply: the header
    (:func:`read_header`, :func:`_header_plan`), then the tensors' shapes against the head and
    parts the header describes, built on the meta device (:func:`_stored_shapes`), then the
    tensors themselves (:func:`_read_tensors`), and only then the head and parts with memory
    (:func:`_assemble`)."""
    path = Path(path)
    plan = _header_plan(path, read_header(path))
    shapes = _stored_shapes(path, plan)
    tensors = _read_tensors(path, plan, shapes)
    return _assemble(path, plan, tensors)


@dataclass
class _Plan:
    """What a checked header says the file holds: the head, the parts in their order (by key,
    with their class and header entry) and the parts' modules built on the meta device."""

    header: dict
    head_type: str
    head_config: dict
    part_classes: dict[str, type[MapPart]]
    part_entries: dict[str, object]
    meta_parts: dict[str, MapPart]


@dataclass
class _Shapes:
    """The file's tensor shapes, by kind, after they were compared with the plan."""

    weights: dict[str, tuple]
    poses: tuple | None
    cloud: dict[str, tuple]


def _header_plan(path: Path, header: dict) -> _Plan:
    head_type, head_config = header["head"]["type"], header["head"]["config"]
    if head_type not in HEADS:
        raise MapFileError(
            f"{path}: head type {head_type!r} is unknown to this scr_ros (known: {', '.join(sorted(HEADS))})"
        )
    # Parts by key, found under their header key (the PCA is "projection" in files).
    part_classes = {cls.key: cls for cls in ordered() if cls.header_key() in header}
    part_entries = {key: header[cls.header_key()] for key, cls in part_classes.items()}
    encoder_channels = header["encoder"]["out_channels"]
    if not 1 <= encoder_channels <= MAX_CHANNELS:
        raise MapFileError(f"{path}: encoder.out_channels {encoder_channels} is outside 1..{MAX_CHANNELS}")
    try:
        # The header is untrusted: its parts are built on the meta device (no memory) until their
        # shapes have been compared with the file's tensors, then again for real.
        with torch.device("meta"):
            parts, head_in = _build_parts(part_classes, part_entries, encoder_channels)
    except Exception as exc:  # noqa: BLE001 - the header is untrusted input
        entries = " / ".join(cls.header_key() for cls in part_classes.values()) or "part"
        raise MapFileError(f"{path}: map header's {entries} entry is unusable: {exc}") from None
    if head_config.get("in_channels", head_in) != head_in:
        raise MapFileError(
            f"{path}: head expects {head_config.get('in_channels')} input channels but the "
            f"encoder{' (after its map parts)' if part_entries else ''} gives {head_in}"
        )
    if header["weights_dtype"] not in WEIGHT_DTYPES:
        raise MapFileError(f"{path}: unsupported weights dtype {header['weights_dtype']!r}")
    return _Plan(header, head_type, head_config, part_classes, part_entries, parts)


def _build_parts(
    part_classes: dict[str, type[MapPart]], part_entries: dict[str, object], encoder_channels: int
) -> tuple[dict[str, MapPart], int]:
    """The parts a header describes, in order, and the head's input channels after them."""
    parts, channels = {}, encoder_channels
    for key, entry in part_entries.items():
        if not isinstance(entry, dict):
            raise ValueError(f"entry {key!r} is not an object")
        parts[key] = part_classes[key].from_header(entry, channels)
        channels = parts[key].out_channels(channels)
    # The head reads the local features after the parts' transforms plus any global encoding.
    return parts, channels + sum(part.encoding_channels() for part in parts.values())


def _stored_shapes(path: Path, plan: _Plan) -> _Shapes:
    """The file's tensor shapes (read without the tensors), checked against the head and parts
    the header describes and against the header's mapping entry."""
    head_type, head_config = plan.head_type, plan.head_config
    # The header is not covered by the weights checksum, so the head config is untrusted input:
    # build the head on the meta device first (no memory) and compare its shapes with the file's.
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_head(head_type, **head_config).state_dict().items()}
        for key, part in plan.meta_parts.items():
            prefix = plan.part_classes[key].header_key()
            expected.update({f"{prefix}.{k}": tuple(v.shape) for k, v in part.module.state_dict().items()})
        with safe_open(str(path), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k not in CLOUD_KEYS and k != POSES_KEY}
            poses_shape = tuple(f.get_slice(POSES_KEY).get_shape()) if POSES_KEY in f.keys() else None
            cloud_shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k in CLOUD_KEYS}
    except Exception as exc:  # noqa: BLE001 - any failure here means the file does not describe a usable head
        raise MapFileError(f"{path}: head {head_type!r} with config {head_config} cannot be built: {exc}") from None
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise MapFileError(
            f"{path}: weights do not fit head {head_type!r} {head_config}: missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}"
        )
    for k, shape in stored.items():
        if shape != expected[k]:
            raise MapFileError(f"{path}: tensor {k} has shape {shape}, head expects {expected[k]}")
    mapping = plan.header.get("mapping")
    if (poses_shape is None) != (mapping is None):
        raise MapFileError(
            f"{path}: the mapping poses and the header's mapping entry come together; this map has only one"
        )
    if mapping is not None:
        names, stamps = (mapping.get("frames"), mapping.get("stamps_ns")) if isinstance(mapping, dict) else (None, None)
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and isinstance(stamps, list)):
            raise MapFileError(f"{path}: header mapping entry must hold frame names and stamps")
        if not all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in stamps):
            raise MapFileError(f"{path}: header mapping stamps must be integers (nanoseconds) or null")
        if not (len(names) == len(stamps) <= MAX_MAPPING_FRAMES and poses_shape == (len(names), 4, 4)):
            raise MapFileError(f"{path}: mapping poses {poses_shape} do not match the header's {len(names)} frames")
    if cloud_shapes:
        n = cloud_shapes.get("cloud.xyz", (-1,))[0]
        if set(cloud_shapes) != set(CLOUD_KEYS) or any(shape != (n, 3) for shape in cloud_shapes.values()):
            raise MapFileError(f"{path}: map cloud tensors are inconsistent: {cloud_shapes}")
    return _Shapes(stored, poses_shape, cloud_shapes)


def _read_tensors(path: Path, plan: _Plan, shapes: _Shapes) -> dict[str, torch.Tensor]:
    """The file's tensors, checked: the shapes seen before, the header's checksum, the weights'
    dtype, finite values, the cloud's dtypes."""
    header = plan.header
    # The tensors are read into memory in one go, not through a memory map: a map file rewritten
    # in place while a node reads it (cp over it) would end the process with SIGBUS.
    try:
        tensors = _st_load(path.read_bytes())
    except Exception as exc:  # noqa: BLE001
        raise MapFileError(f"{path}: cannot read weights ({exc})") from None
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != {**shapes.weights, **shapes.cloud, **({POSES_KEY: shapes.poses} if shapes.poses else {})}:
        raise MapFileError(f"{path}: the file changed while it was read; load it again")
    if tensors_sha256(tensors) != header["weights_sha256"]:
        raise MapFileError(f"{path}: weights do not match the checksum in the header (file corrupted or modified)")
    wanted = WEIGHT_DTYPES[header["weights_dtype"]]
    full = {f"{cls.header_key()}.{k}" for cls in plan.part_classes.values() for k in cls.full_precision}
    for k, v in tensors.items():
        if (
            k not in CLOUD_KEYS
            and k != POSES_KEY
            and k not in full
            and k not in HEADS[plan.head_type].full_precision
            and v.is_floating_point()
            and v.dtype != wanted
        ):
            raise MapFileError(
                f"{path}: tensor {k} is {str(v.dtype).replace('torch.', '')}, but the header says weights_dtype "
                f"{header['weights_dtype']}"
            )
        if v.is_floating_point() and not torch.isfinite(v.float()).all():
            raise MapFileError(f"{path}: tensor {k} contains NaN or infinite values")
    if shapes.cloud and (tensors["cloud.xyz"].dtype != torch.float32 or tensors["cloud.rgb"].dtype != torch.uint8):
        raise MapFileError(
            f"{path}: map cloud should be float32 xyz and uint8 rgb, got {tensors['cloud.xyz'].dtype} and "
            f"{tensors['cloud.rgb'].dtype}"
        )
    return tensors


def _assemble(path: Path, plan: _Plan, tensors: dict[str, torch.Tensor]) -> SceneMap:
    """The map from checked tensors: mapping poses checked rigid, parts and head built with
    memory and loaded, the header's mean and image height checked against them."""
    header, mapping = plan.header, plan.header.get("mapping")
    cloud = {k: tensors.pop(k).numpy() for k in CLOUD_KEYS if k in tensors}
    mapping_poses = tensors.pop(POSES_KEY).double().numpy() if POSES_KEY in tensors else None
    if mapping_poses is not None:
        rotations = mapping_poses[:, :3, :3]
        # The tolerance datasets accept poses with (a map stores its mapping poses as given).
        orthonormal = np.abs(np.einsum("nji,njk->nik", rotations, rotations) - np.eye(3)).max(initial=0.0) < 1e-3
        if not (orthonormal and np.allclose(mapping_poses[:, 3], [0, 0, 0, 1])):
            raise MapFileError(f"{path}: the mapping poses are not rigid transforms")
    parts, _ = _build_parts(plan.part_classes, plan.part_entries, header["encoder"]["out_channels"])
    for key, part in parts.items():
        cls = plan.part_classes[key]
        prefix = cls.header_key() + "."
        state = {}
        for k in [k for k in tensors if k.startswith(prefix)]:
            name, v = k[len(prefix) :], tensors.pop(k)
            state[name] = v if name in cls.full_precision else v.float()
        part.module.load_state_dict(state)
        part.module.eval()
    head = build_head(plan.head_type, **plan.head_config)
    head.load_state_dict({k: v.float() for k, v in tensors.items()})
    try:
        header_mean = np.asarray(header["mean"], dtype=np.float64)
    except (TypeError, ValueError):
        header_mean = np.full(1, np.nan)
    if header_mean.shape != (3,) or not np.all(np.isfinite(header_mean)):
        raise MapFileError(f"{path}: header mean {header['mean']} is not a finite 3-vector")
    if not np.allclose(head.mean.numpy(), header_mean, atol=1e-4):
        raise MapFileError(
            f"{path}: header mean {header_mean.tolist()} disagrees with the stored mean {head.mean.tolist()}"
        )
    if not 8 <= header["image_height"] <= 4096:
        raise MapFileError(f"{path}: implausible image_height {header['image_height']}")
    head.eval()
    return SceneMap(
        head=head,
        encoder=header["encoder"],
        image_height=header["image_height"],
        training=header.get("training", {}),
        cameras=header.get("cameras", []),
        created=header.get("created", ""),
        cloud_xyz=cloud.get("cloud.xyz"),
        cloud_rgb=cloud.get("cloud.rgb"),
        parts=parts,
        mapping_poses=mapping_poses,
        mapping_frames=list(mapping["frames"]) if mapping else [],
        mapping_stamps_ns=list(mapping["stamps_ns"]) if mapping else [],
    )
