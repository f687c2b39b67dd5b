"""Global encodings: one vector per image, appended to each of its local features (GLACE,
R-SCoRe), so that features which look alike in different places of a scene get told apart.

Two sources, each a registered map part:

- ``global-descriptor`` (GLACE): the image's own descriptor, an aggregation of the encoder's
  dense features (:mod:`scr_ros.retrieval`, VLAD by default, 256 entries). Training adds
  Gaussian noise (sigma = 0.1, GLACE's) and renormalizes. A query uses its own descriptor,
  then those of its nearest mapping images as further hypotheses.
- ``global-covisibility`` (R-SCoRe): Node2Vec embeddings (256-d, p = 0.25, q = 4) of the
  covisibility graph of the mapping images (frustum overlap from their poses,
  :mod:`scr_ros.map_parts._covisibility`). Training replaces a row's encoding by that of a random
  covisible image with probability 0.5 (covisibility augmentation; the probability is ours).
  A query has no pose, so it borrows the embeddings of the mapping images the descriptor
  retrieves: R-SCoRe's multiple hypotheses, 5 by default (the paper's gains level off past 10).

Either part is switched on by key: ``scr map --part global-covisibility`` (settings as JSON,
e.g. ``--part 'global-descriptor={"noise": 0.05}'``), ``MappingConfig.parts``, or the mapping
node's ``map_parts``. The map stores the descriptor, the mapping images' descriptors and the
encodings (fp16; 2 x 256 x F numbers).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DatasetError, ScrError
from ..geometry import invert_pose
from ..progress import Progress
from ..retrieval import DESCRIPTORS, build_descriptor, retrieve
from ..settings import Setting
from ._covisibility import covisibility_graph, frustum_overlap, neighbour_table, node2vec_embeddings
from .base import FitContext, MapPart, register_map_part

# Local feature rows per image, over at most FIT_IMAGES images, for fitting the descriptor.
FIT_ROWS_PER_IMAGE = 256
FIT_IMAGES = 64


class GlobalEncodingModule(nn.Module):
    """What the map stores: the descriptor, the mapping images' descriptors (F, Dd) and, for
    the covisibility source, their encodings (F, E)."""

    def __init__(self, descriptor: nn.Module, frames: int, encoding_dim: int | None) -> None:
        super().__init__()
        self.descriptor = descriptor
        self.register_buffer("database", torch.zeros(frames, descriptor.dim))
        self.register_buffer("encodings", torch.zeros(frames, encoding_dim) if encoding_dim else torch.zeros(0))


class GlobalEncodingPart(MapPart):
    """The shared machinery of both sources (see the module docstring)."""

    stage = "features"
    gives_global_encoding = True
    progress_stages = (("global", 0.03),)
    source = ""

    @classmethod
    def check(cls, settings: dict, in_channels: int) -> None:
        try:
            build_descriptor(
                settings["descriptor"], channels=in_channels, dim=settings["dim"], **settings["descriptor_config"]
            )
        except (ValueError, TypeError) as exc:
            raise ScrError(f"map part {cls.key!r}: {exc}") from None

    def __init__(self, module: GlobalEncodingModule, info: dict | None = None) -> None:
        super().__init__(module, info)
        self.hypotheses = int(self.info.get("hypotheses", 1))
        self.noise = float(self.info.get("noise", 0.0))
        # Training only (not stored): covisible neighbours for the augmentation.
        self.neighbours: torch.Tensor | None = None
        self.degree: torch.Tensor | None = None
        self.neighbour_probability = 0.0

    # -------------------------------------------------------------- mapping
    @classmethod
    def fit(cls, context: FitContext, settings: dict, frames=None, head=None, buffer=None) -> "GlobalEncodingPart":
        s = settings
        t0 = time.perf_counter()
        descriptor = build_descriptor(
            s["descriptor"], channels=context.encoder_channels, dim=s["dim"], **s["descriptor_config"]
        )
        picks = np.unique(np.linspace(0, len(frames) - 1, min(FIT_IMAGES, len(frames))).round().astype(int))
        rng = np.random.default_rng(context.seed)
        rows = []
        for k, i in enumerate(picks):
            feats = context.encode_frame(frames[i])
            if feats is not None:
                flat = feats[0].flatten(1).T.float()
                rows.append(
                    flat[torch.as_tensor(rng.choice(len(flat), min(FIT_ROWS_PER_IMAGE, len(flat)), replace=False))]
                )
            context.report(
                Progress(
                    "global",
                    k + 1,
                    len(picks) + len(frames),
                    time.perf_counter() - t0,
                    message="fitting the image descriptor",
                )
            )
        if not rows:
            raise ScrError("no mapping image could be read to fit the global descriptor")
        descriptor.fit(torch.cat(rows).cpu(), seed=context.seed)
        descriptor = descriptor.to(context.device)
        database = torch.zeros(len(frames), descriptor.dim)
        for i, frame in enumerate(frames):
            feats = context.encode_frame(frame)
            if feats is not None:  # an unreadable image keeps a zero descriptor: never retrieved
                database[i] = descriptor(feats)[0].float().cpu()
            context.report(
                Progress(
                    "global",
                    len(picks) + i + 1,
                    len(picks) + len(frames),
                    time.perf_counter() - t0,
                    message="describing the mapping images",
                )
            )
        encodings, info, weights = cls.encode(frames, database, s, context.seed)
        module = GlobalEncodingModule(
            descriptor.cpu(), len(frames), encodings.shape[1] if encodings is not None else None
        )
        module.database.copy_(database)
        if encodings is not None:
            module.encodings.copy_(encodings)
        info.update(
            source=cls.source, hypotheses=s["hypotheses"], noise=s["noise"], seconds=round(time.perf_counter() - t0, 3)
        )
        part = cls(module, info)
        if weights is not None:
            table, degree = neighbour_table(weights)
            part.neighbours, part.degree = torch.from_numpy(table), torch.from_numpy(degree)
            part.neighbour_probability = s["neighbour_probability"]
        return part.to(context.device)

    @classmethod
    def encode(
        cls, frames, database: torch.Tensor, settings: dict, seed: int
    ) -> tuple[torch.Tensor | None, dict, np.ndarray | None]:
        """The source's encodings (F, E) (None: the descriptors themselves), figures for the
        map, and the covisibility weights (F, F) for the augmentation (None: no augmentation)."""
        raise NotImplementedError

    def training_figures(self) -> dict:
        return {"global_encoding": {k: v for k, v in self.info.items() if k not in ("hypotheses", "noise")}}

    # -------------------------------------------------------------- map file
    def header(self) -> dict:
        d = self.module.descriptor
        return {
            **self.info,
            "descriptor": {"type": d.descriptor_type, "config": d.config},
            "frames": self.module.database.shape[0],
            "encoding_dim": self.encoding_channels(),
        }

    @classmethod
    def from_header(cls, entry: dict, in_channels: int) -> "GlobalEncodingPart":
        d = entry.get("descriptor")
        if entry.get("source") != cls.source or not isinstance(d, dict) or not isinstance(d.get("config"), dict):
            raise ValueError(f"{cls.key} entry does not describe a {cls.source} encoding")
        if d["config"].get("channels") != in_channels:
            raise ValueError(
                f"its descriptor reads {d['config'].get('channels')} channels, the encoder gives {in_channels}"
            )
        frames, dim = entry.get("frames"), entry.get("encoding_dim")
        if not (isinstance(frames, int) and 1 <= frames <= 1_000_000 and isinstance(dim, int) and 1 <= dim <= 8192):
            raise ValueError(f"frames {frames!r} / encoding_dim {dim!r} out of range")
        hypotheses = entry.get("hypotheses")
        if not (isinstance(hypotheses, int) and 1 <= hypotheses <= 1000):
            raise ValueError(f"hypotheses {hypotheses!r} out of range")
        descriptor = build_descriptor(d["type"], **d["config"])
        module = GlobalEncodingModule(descriptor, frames, None if cls.source == "descriptor" else dim)
        part = cls(module, {k: v for k, v in entry.items() if k not in ("descriptor", "frames", "encoding_dim")})
        if part.encoding_channels() != dim:
            raise ValueError(f"encoding_dim {dim} does not match the stored encodings")
        return part

    # -------------------------------------------------------------- global encoding
    def _table(self) -> torch.Tensor:
        return self.module.encodings if self.module.encodings.numel() else self.module.database

    def encoding_channels(self) -> int:
        return int(self._table().shape[1])

    def training_encodings(self, frame_index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.neighbours is not None and self.neighbour_probability > 0:
            dev = frame_index.device
            degree = self.degree[frame_index]
            swap = (torch.rand(len(frame_index), generator=generator, device=dev) < self.neighbour_probability) & (
                degree > 0
            )
            pick = (torch.rand(len(frame_index), generator=generator, device=dev) * degree.clamp(min=1)).long()
            other = self.neighbours[frame_index, pick]
            frame_index = torch.where(swap, other, frame_index)
        g = self._table()[frame_index].float()
        if self.noise > 0:
            g = F.normalize(g + self.noise * torch.randn(g.shape, generator=generator, device=g.device), dim=1)
        return g

    def frame_encoding(self, frame_index: int) -> torch.Tensor:
        return self._table()[frame_index].float()

    def query_encodings(self, features: torch.Tensor, hypotheses: int = 0) -> torch.Tensor:
        n = hypotheses or self.hypotheses
        own = self.module.descriptor(features)[0].float()
        if self.source == "descriptor":
            if n == 1:
                return own[None]
            nearest, _ = retrieve(own, self.module.database, n - 1)
            return torch.cat([own[None], self.module.database[nearest[0]].float()])
        nearest, _ = retrieve(own, self.module.database, n)
        return self.module.encodings[nearest[0]].float()

    def to(self, device) -> "GlobalEncodingPart":
        super().to(device)
        if self.neighbours is not None:
            self.neighbours, self.degree = self.neighbours.to(device), self.degree.to(device)
        return self

    def nearest_frames(self, features: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``n`` mapping frames whose descriptors are nearest the query's: indices, similarities."""
        nearest, sims = retrieve(self.module.descriptor(features)[0], self.module.database, n)
        return nearest[0], sims[0]


def _common(hypotheses: int, noise: float) -> tuple[Setting, ...]:
    return (
        Setting(
            "descriptor", "vlad", "the image descriptor that describes and retrieves images", choices=tuple(DESCRIPTORS)
        ),
        Setting(
            "descriptor_config", {}, 'the descriptor\'s own settings, a JSON object (e.g. {"clusters": 32} for VLAD)'
        ),
        Setting("dim", 256, "entries of the image descriptor", 1, 8192),
        Setting(
            "hypotheses",
            hypotheses,
            "encodings tried per query at relocalization (the query's own and its nearest mapping images')",
            1,
            8192,
        ),
        Setting(
            "noise",
            noise,
            "sigma of the Gaussian noise added to training encodings, renormalized (GLACE: 0.1)",
            0.0,
            10.0,
        ),
    )


@register_map_part("global-descriptor")
class DescriptorEncodingPart(GlobalEncodingPart):
    """GLACE's global encoding: each image's own descriptor (see the module docstring)."""

    source = "descriptor"
    settings = _common(hypotheses=1, noise=0.1)

    @classmethod
    def encode(cls, frames, database, settings, seed):
        return None, {}, None


@register_map_part("global-covisibility")
class CovisibilityEncodingPart(GlobalEncodingPart):
    """R-SCoRe's global encoding: Node2Vec embeddings of the covisibility graph (see the module
    docstring)."""

    source = "covisibility"
    settings = _common(hypotheses=5, noise=0.0) + (
        Setting("embedding_dim", 256, "entries of each image's Node2Vec embedding", 1, 8192),
        Setting("p", 0.25, "Node2Vec's return parameter", 1e-3, 1e3),
        Setting("q", 4.0, "Node2Vec's in-out parameter", 1e-3, 1e3),
        Setting("max_depth", 8.0, "metres of each camera's frustum that count for the overlap", 1e-3, 1e5),
        Setting(
            "threshold", 0.2, "frustum overlap above which two images are covisible (an edge of the graph)", 0.0, 1.0
        ),
        Setting("samples", 256, "points per frustum the overlap is estimated from", 1, 8192),
        Setting(
            "neighbour_probability",
            0.5,
            "probability a training row takes the encoding of a covisible image instead of its own",
            0.0,
            1.0,
        ),
    )

    @classmethod
    def encode(cls, frames, database, settings, seed):
        poses = np.stack([f.pose for f in frames])
        intrinsics = np.array([[f.camera.fx, f.camera.fy, f.camera.cx, f.camera.cy] for f in frames])
        sizes = np.array([[f.camera.width, f.camera.height] for f in frames])
        if not np.all(np.isfinite(poses)) or not np.all(np.isfinite(np.stack([invert_pose(T) for T in poses]))):
            raise DatasetError("the covisibility graph needs finite mapping poses")
        overlap = frustum_overlap(poses, intrinsics, sizes, settings["samples"], settings["max_depth"], seed)
        weights = covisibility_graph(overlap, settings["threshold"])
        emb = node2vec_embeddings(weights, settings["embedding_dim"], settings["p"], settings["q"], seed=seed)
        degree = (weights > 0).sum(axis=1)
        info = {
            "graph_edges": int((weights > 0).sum() // 2),
            "isolated_frames": int((degree == 0).sum()),
            "median_degree": float(np.median(degree)),
        }
        return torch.from_numpy(emb), info, weights
