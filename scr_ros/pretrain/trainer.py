"""The pretraining loop: one shared encoder, one head per scene; checkpoints and exact resume."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..device import autocast, autocast_dtype, resolve_device, synchronize
from ..errors import MappingCancelled, ScrError
from ..fileio import atomic_write_bytes
from ..heads import AceHead
from ..progress import Progress
from .config import PretrainConfig
from .inits import INITS
from .pool import Pool, build_pool

CHECKPOINT_FORMAT = 1


def learning_rate(cfg: PretrainConfig, step: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to 5 % of ``peak`` at the last step."""
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class Pretrainer:
    """Joint training of one encoder (what ``cfg.init`` names) and one :class:`AceHead` per scene."""

    def __init__(
        self, cfg: PretrainConfig, device: str = "auto", progress: Callable[[Progress], None] | None = None, cancel=None
    ):
        cfg.validate()
        self.cfg = cfg
        self.device = resolve_device(device)
        self.amp_dtype = autocast_dtype(self.device, cfg.precision)
        self.progress = progress or (lambda p: None)
        self.cancel = cancel
        torch.manual_seed(cfg.seed)
        self.init = INITS[cfg.init]()
        self.encoder = self.init.make_encoder(cfg).to(self.device)
        self.heads = torch.nn.ModuleList(
            AceHead(in_channels=self.encoder.out_channels, width=cfg.head_width, num_blocks=0)
            for _ in range(cfg.scenes)
        ).to(self.device)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": self.init.trainable(self.encoder), "lr": cfg.lr_encoder},
                {"params": list(self.heads.parameters()), "lr": cfg.lr_head},
            ],
            weight_decay=cfg.weight_decay,
        )
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.device.type == "cuda" and self.amp_dtype == torch.float16
        )
        self.step = 0
        self.losses: list[float] = []  # mean loss (m) of every step
        self.elapsed_s = 0.0  # wall time of training so far, over all resumed sessions
        self.pool: Pool | None = None
        self._cache: torch.Tensor | None = None  # (N, h, w, c) fp16: what init.cached() gives for every pool window
        # The encoder's tensors when the cache was last computed: a checkpoint keeps them, so a run
        # resumed between two refreshes rebuilds the very cache the uninterrupted run used.
        self._cache_state: dict[str, torch.Tensor] | None = None
        self._valid: list[torch.Tensor] = []  # per scene: flat pool cells with a scene coordinate
        self._rows: list[np.ndarray] = []  # per scene: its pool windows

    # -------------------------------------------------------------- one step

    def _batch(self, step: int) -> np.ndarray:
        """Pool rows of this step: ``windows_per_scene`` windows of each of ``batch_scenes``
        scenes. A head fitted to one window at a time chases that view; several views per step
        give it gradients that average over the scene."""
        rng = np.random.default_rng([self.cfg.seed, 13, step])
        scenes = rng.choice(self.cfg.scenes, size=min(self.cfg.batch_scenes, self.cfg.scenes), replace=False)
        rows = []
        for s in scenes:
            candidates = self._rows[s]
            rows.extend(
                int(r)
                for r in rng.choice(candidates, size=min(self.cfg.windows_per_scene, len(candidates)), replace=False)
            )
        return np.asarray(rows)

    def _index_pool(self) -> None:
        """Once per pool: each scene's windows and valid cells, and each head's mean."""
        ok = torch.isfinite(self.pool.coords).all(1).reshape(-1)
        cells = self.pool.coords.shape[2] * self.pool.coords.shape[3]
        scene_cell = torch.as_tensor(np.repeat(self.pool.scene, cells))
        self._valid = [torch.nonzero(ok & (scene_cell == s)).squeeze(1) for s in range(self.cfg.scenes)]
        self._rows = [np.flatnonzero(self.pool.scene == s) for s in range(self.cfg.scenes)]
        for head, centre in zip(self.heads, self.pool.centres):
            head.set_mean(centre)

    def refresh_cache(self, state: dict[str, torch.Tensor] | None = None) -> None:
        """Learned features of every pool window (no gradient) with the current encoder, or with
        the encoder tensors ``state`` (those of the last refresh, when resuming)."""
        dev = self.device
        current = {k: v.detach().to("cpu", copy=True) for k, v in self.encoder.learned_state().items()}
        if state is not None:
            self.encoder.load_state_dict(state, strict=False)
        self._cache_state = state if state is not None else current
        parts = []
        with torch.no_grad(), autocast(dev, self.amp_dtype):
            for i in range(0, len(self.pool.inputs), 64):
                c = self.init.cached(self.encoder, self.pool.inputs[i : i + 64].to(dev).float())
                parts.append(c.permute(0, 2, 3, 1).to("cpu", torch.float16))
        self._cache = torch.cat(parts)
        if state is not None:
            self.encoder.load_state_dict(current, strict=False)

    def _head_samples(self, s: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random cells of scene ``s`` from the whole pool: (features, coordinates). Fitting the
        heads on these as well as on the step's windows decorrelates their updates."""
        valid = self._valid[s]
        flat = valid[torch.as_tensor(rng.integers(0, len(valid), size=self.cfg.head_samples))]
        w = self.pool.coords.shape[3]
        n, y, x = flat // (w * w), (flat // w) % w, flat % w
        feats = self.init.cell_features(self.pool.inputs, self._cache, n, y, x)
        return feats.to(self.device), self.pool.coords[n, :, y, x].to(self.device)

    def train_step(self) -> float:
        cfg, dev = self.cfg, self.device
        if not self._rows:
            self._index_pool()
        if cfg.refresh_every and self.step % cfg.refresh_every == 0:
            self.refresh_cache()
        elif self._cache is None:
            self.refresh_cache(self._cache_state)
        rows = self._batch(self.step)
        inputs = self.pool.inputs[rows].to(dev).float()
        target = self.pool.coords[rows].to(dev)
        for group, peak in zip(self.optimizer.param_groups, (cfg.lr_encoder, cfg.lr_head)):
            group["lr"] = learning_rate(cfg, self.step, peak)
        with autocast(dev, self.amp_dtype):
            feats = self.init.features(self.encoder, inputs).float()
        feats = feats.permute(0, 2, 3, 1).reshape(len(rows), -1, feats.shape[1])
        target = target.permute(0, 2, 3, 1).reshape(len(rows), -1, 3)
        scene_of = self.pool.scene[rows]
        losses = []
        for s in dict.fromkeys(scene_of.tolist()):
            pick = torch.as_tensor(np.flatnonzero(scene_of == s), device=dev)
            t = target[pick].reshape(-1, 3)
            valid = torch.isfinite(t).all(1)
            if not bool(valid.any()):
                continue
            head = self.heads[s]
            with autocast(dev, self.amp_dtype):
                pred = head(feats[pick].reshape(-1, feats.shape[2])[valid])
            losses.append((pred.float() - t[valid]).norm(dim=1).mean())
            if cfg.head_samples:
                x, y = self._head_samples(s, np.random.default_rng([cfg.seed, 17, self.step, s]))
                with autocast(dev, self.amp_dtype):
                    pred = head(x)
                losses.append((pred.float() - y).norm(dim=1).mean())
        if not losses:
            raise ScrError(f"pretraining step {self.step}: no window with valid scene coordinates")
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ScrError(f"pretraining diverged at step {self.step} (loss {value}); try --precision fp32")
        self.losses.append(value)
        self.step += 1
        return value

    def run(self, checkpoint: Path | None = None) -> None:
        """Train until ``cfg.steps``, writing ``checkpoint`` every ``checkpoint_every`` steps and
        when cancelled (Ctrl-C or ``cancel``), so that ``--resume`` loses nothing."""
        cfg = self.cfg
        if self.pool is None:
            self.pool = build_pool(cfg, self.progress, self.cancel)
        start_elapsed, t0 = self.elapsed_s, time.perf_counter()
        try:
            while self.step < cfg.steps:
                if self.cancel is not None and self.cancel.is_set():
                    raise MappingCancelled(f"pretraining cancelled at step {self.step}")
                self.train_step()
                self.elapsed_s = start_elapsed + time.perf_counter() - t0
                if self.step % 10 == 0 or self.step == cfg.steps:
                    synchronize(self.device)
                    recent = self.losses[-50:]
                    self.progress(
                        Progress(
                            "pretrain",
                            self.step,
                            cfg.steps,
                            self.elapsed_s - start_elapsed,
                            loss=sum(recent) / len(recent),
                        )
                    )
                if (
                    checkpoint is not None
                    and cfg.checkpoint_every
                    and self.step % cfg.checkpoint_every == 0
                    and self.step < cfg.steps
                ):
                    self.save_checkpoint(checkpoint)
        except (KeyboardInterrupt, MappingCancelled):
            if checkpoint is not None and self.step > 0:
                self.save_checkpoint(checkpoint)
            raise

    def final_loss(self) -> float:
        tail = max(1, len(self.losses) // 20)
        return float(np.mean(self.losses[-tail:]))

    # -------------------------------------------------------------- checkpoints

    def save_checkpoint(self, path: Path) -> None:
        """Encoder, heads and AdamW moments as safetensors; step, losses, time and config in JSON."""
        from safetensors.torch import save

        tensors = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in self.encoder.learned_state().items()}
        tensors.update({f"heads.{k}": v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()})
        tensors.update({f"cache_encoder.{k}": v.contiguous() for k, v in (self._cache_state or {}).items()})
        opt = self.optimizer.state_dict()
        for pid, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optimizer.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        meta = {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "losses": self.losses,
            "param_groups": opt["param_groups"],
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        }
        atomic_write_bytes(path, save(tensors, metadata={"scr_ros_pretrain": json.dumps(meta)}))

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "auto", progress=None, cancel=None) -> "Pretrainer":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ScrError(f"checkpoint {path} not found")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["scr_ros_pretrain"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unusable
            raise ScrError(f"cannot read pretraining checkpoint {path}: {exc}") from exc
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ScrError(f"{path}: checkpoint format {meta.get('format')} is not {CHECKPOINT_FORMAT}")
        self = cls(PretrainConfig.from_dict(meta["config"]), device, progress, cancel)
        dev = self.device
        enc = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
        missing = self.encoder.load_state_dict(enc, strict=False)
        if missing.unexpected_keys or set(enc) != set(self.encoder.learned_state()):
            raise ScrError(f"{path}: encoder tensors do not match the configured architecture")
        self.heads.load_state_dict({k[len("heads.") :]: v for k, v in tensors.items() if k.startswith("heads.")})
        cached = {k[len("cache_encoder.") :]: v for k, v in tensors.items() if k.startswith("cache_encoder.")}
        if cached:
            if set(cached) != set(self.encoder.learned_state()):
                raise ScrError(f"{path}: cache_encoder tensors do not match the configured architecture")
            self._cache_state = cached
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optimizer."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(dev) if name != "step" else v
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        self.step, self.losses, self.elapsed_s = (
            int(meta["step"]),
            [float(x) for x in meta["losses"]],
            float(meta["elapsed_s"]),
        )
        return self
