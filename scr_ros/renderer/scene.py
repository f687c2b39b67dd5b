"""A CPU ray caster for textured rooms with box-shaped furniture.

The world frame is z-up (like a ROS ``map``): the room spans ``[0, Lx] x [0, Ly] x [0, Lz]``.
Cameras use optical axes (x right, y down, z forward); poses are camera-to-world.

Rendering is exact ray casting of axis-aligned room faces and yaw-rotated boxes, vectorized
with numpy; each face is textured from :mod:`.textures` and lit by one point light plus
ambient light (Lambert). Depth is the z-depth in metres and is valid at every pixel (the room
is closed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from ..geometry import PinholeCamera, look_at_rotation, make_pose
from .textures import FAMILIES, LOD_SIGMAS, MARGIN, decorated_surface, make_texture, pack_atlas, periodic_texture

# Bump whenever a change to this package renders different pixels for the same config: cached
# scenes are keyed by config and this version.
RENDERER_VERSION = 3
SKY_FACE = 5  # the room's ceiling (face 2 * axis z + max side), sky on an open site
ROOF_HEIGHT = 10.0  # metres: the rooftop site's roof, which its camera walks


@dataclass(frozen=True)
class SceneConfig:
    """Everything that defines a synthetic scene; the same config renders the same pixels."""

    seed: int = 0
    room_size: tuple[float, float, float] = (6.0, 5.0, 2.8)  # metres along world x, y, z
    num_objects: int = 12
    width: int = 640
    height: int = 480
    focal: float = 525.0
    mapping_frames: int = 480
    query_frames: int = 100
    lighting_change: bool = False  # light the query trajectory differently from the mapping one
    repetitive_texture: bool = False  # room surfaces share one periodic pattern
    texel_density: float = 256.0  # texture resolution, texels per metre
    noise_std: float = 2.0  # sensor noise, in 8-bit grey levels
    # Materials of furniture and of the plain base of walls, floor and ceiling (decals keep
    # their own mix); pretraining scenes add EXTRA_FAMILIES.
    texture_families: tuple[str, ...] = FAMILIES
    # Rooms of an integrated scene may look alike: rooms of the same size with the same
    # wall_seed get the same floor, ceiling and pair of walls facing along x (the two walls
    # facing along y stay their own, so not every view is ambiguous); rooms with the same
    # furniture_seed get furniture of the same sizes and materials (placed by ``seed``).
    # None: everything comes from ``seed``.
    wall_seed: int | None = None
    furniture_seed: int | None = None
    # How the camera moves: "walk" (hand-held loops around the room) or "robot" (a wheeled base on
    # the floor: a planar path, the camera fixed on it at camera_height, pitched up by camera_tilt_deg;
    # the query lap runs query_offset metres from the mapping laps).
    # "rooftop": an open site instead of a room: the camera walks a flat roof 10 m above the ground
    # behind a railing, looking over it at buildings tens of metres away under the sky (the
    # ceiling renders as sky: no texture, no depth); the room's size is the site's.
    path: str = "walk"
    camera_height: float = 0.55
    camera_tilt_deg: float = 5.0
    query_offset: float = 0.3
    # Where the queries go: "between" the mapping loops (every query has a mapping view close
    # by), or "away" from them, by 0.2 to 1 m and more, at other heights and camera tilts: the
    # views a map has to extrapolate to.
    query_path: str = "between"

    def base_to_camera(self) -> np.ndarray | None:
        """A robot path's camera mount, T_base_cam (4, 4): base_link (REP-103: x forward, y left,
        z up, on the floor) to the camera optical frame; None for a hand-held path."""
        if self.path != "robot":
            return None
        p = np.radians(self.camera_tilt_deg)
        z = np.array([np.cos(p), 0.0, np.sin(p)])  # optical axis: forward, tilted up
        x = np.array([0.0, -1.0, 0.0])  # image right: the base's right
        return make_pose(np.stack([x, np.cross(z, x), z], axis=1), [0.1, 0.0, self.camera_height])

    def camera(self) -> PinholeCamera:
        return PinholeCamera(
            self.focal, self.focal, (self.width - 1) / 2, (self.height - 1) / 2, self.width, self.height
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def build(self) -> "SyntheticScene":
        return SyntheticScene(self)


@dataclass(frozen=True)
class Light:
    position: tuple[float, float, float]
    color: tuple[float, float, float]
    ambient: float
    intensity: float


@dataclass
class _Box:
    center: np.ndarray  # (3,)
    half: np.ndarray  # (3,) half extents along the box's local axes
    yaw: float

    @property
    def R(self) -> np.ndarray:  # box-to-world rotation
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def corners(self) -> np.ndarray:
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
        return (signs * self.half) @ self.R.T + self.center

    def contains(self, p: np.ndarray, margin: float) -> np.ndarray:
        local = (np.atleast_2d(p) - self.center) @ self.R
        return np.all(np.abs(local) < self.half + margin, axis=1)


class SyntheticScene:
    """A room built from a :class:`SceneConfig`, with trajectories and a renderer."""

    def __init__(self, config: SceneConfig = SceneConfig()):
        self.config = config
        self.camera = config.camera()
        rng = np.random.default_rng(config.seed)
        self.room = np.asarray(config.room_size, np.float64)
        self.mapping_poses = self._trajectory(config.mapping_frames, query=False)
        self.query_poses = self._trajectory(config.query_frames, query=True)
        self.boxes = self._place_objects(rng)
        self._build_faces(rng)
        Lx, Ly, Lz = self.room
        self.mapping_light = Light((0.4 * Lx, 0.6 * Ly, Lz - 0.2), (1.0, 0.97, 0.92), 0.45, 0.75)
        self.query_light = (
            Light((0.8 * Lx, 0.2 * Ly, Lz - 0.5), (1.0, 0.85, 0.65), 0.3, 0.6)
            if config.lighting_change
            else self.mapping_light
        )
        K_inv = np.linalg.inv(self.camera.K)
        u, v = np.meshgrid(np.arange(config.width), np.arange(config.height))
        pix = np.stack([u, v, np.ones_like(u)], axis=-1).astype(np.float64)
        self._rays_cam = (pix @ K_inv.T).astype(np.float32)  # (H, W, 3) with z = 1

    # ---------------------------------------------------------------- trajectories

    def _trajectory(self, n: int, query: bool) -> list[np.ndarray]:
        if self.config.query_path not in ("between", "away"):
            raise ValueError(f"unknown query path {self.config.query_path!r}; choose between or away")
        if self.config.path == "robot":
            return self._robot_trajectory(n, query)
        if self.config.path == "rooftop":
            return self._rooftop_trajectory(n, query)
        if self.config.path != "walk":
            raise ValueError(f"unknown camera path {self.config.path!r}; choose walk, robot or rooftop")
        return self._walk_trajectory(n, query)

    def _robot_trajectory(self, n: int, query: bool) -> list[np.ndarray]:
        """A wheeled base driving laps of a rounded rectangle inside the room, facing along its path.

        Mapping: two laps whose distance from the walls grows from 1.1 to 1.1 + 2 * query_offset m
        (a spiral, so the path has no jump). Query: one lap halfway between, so every query pose is
        ``query_offset`` from the mapping laps, starting elsewhere on the loop, the heading weaving
        by up to 8 degrees."""
        Lx, Ly, _ = self.room
        mount = self.config.base_to_camera()
        offset = self.config.query_offset
        laps = 1 if query else 2
        poses = []
        away = query and self.config.query_path == "away"
        for k in range(n):
            u = laps * k / max(n, 1)  # laps done
            margin = 1.1 + offset if query else 1.1 + 2 * offset * u / laps
            if away:
                # From 0.6 m off the mapping laps towards the walls to 0.6 m inside them and back, twice.
                margin = 1.1 + offset + (offset + 0.6) * np.sin(2 * np.pi * 2 * u + 0.4)
            phase = u + (0.31 if query else 0.0)
            x, y, heading = _rounded_rectangle(phase % 1.0, margin, Lx - margin, margin, Ly - margin, radius=0.5)
            if query:
                heading += np.radians(20.0 if away else 8.0) * np.sin(2 * np.pi * 3 * u + 0.7)
            base = make_pose(
                np.array(
                    [[np.cos(heading), -np.sin(heading), 0.0], [np.sin(heading), np.cos(heading), 0.0], [0.0, 0.0, 1.0]]
                ),
                [x, y, 0.0],
            )
            poses.append(base @ mount)
        return poses

    def _walk_trajectory(self, n: int, query: bool) -> list[np.ndarray]:
        """Smooth loops around the room centre looking towards the walls.

        The mapping trajectory makes loops from an inner to an outer radius (one per ~120 frames,
        at least three) with yaw sweeps out of phase, as one would walk a room to map it; the
        query loop runs between them with its own sweep, height and pitch, so no query pose
        repeats a mapping pose but every query looks at mapped surfaces from a mapped
        neighbourhood.
        """
        Lx, Ly, _ = self.room
        centre = np.array([Lx / 2, Ly / 2])
        poses = []
        loops = 1 if query else max(3, n // 120)
        for k in range(n):
            phi = 2 * np.pi * loops * k / max(n, 1)
            loop = int(loops * k / max(n, 1))
            if query and self.config.query_path == "away":
                # In and out of the mapping ring (radius 0.15 to 1.85 of its 0.7 to 1.3), from 0.85
                # to 1.95 m high (mapping: 1.2 to 1.6), pitched from 26 deg down to 9 deg up.
                phi += 0.37
                radius, sweep = 1.0 + 0.85 * np.sin(2.5 * phi + 0.3), 0.9 * np.sin(3 * phi + 1.0)
                z = 1.4 + 0.55 * np.sin(3 * phi + 1.2)
                pitch = -0.15 + 0.3 * np.sin(5 * phi + 0.4)
            elif query:
                phi += 0.37
                radius, sweep = 0.92, 0.9 * np.sin(3 * phi + 1.0)
                z = 1.45 + 0.15 * np.sin(2 * phi + 0.5)
                pitch = -0.1 + 0.12 * np.sin(4 * phi + 2.0)
            else:
                radius = 0.7 + 0.6 * loop / max(loops - 1, 1)
                sweep = 1.1 * np.sin(4 * phi + loop * 2 * np.pi / loops)
                z = 1.4 + 0.2 * np.sin(3 * phi + loop)
                pitch = -0.12 + 0.15 * np.sin(5 * phi + loop)
            xy = centre + radius * 0.18 * np.array([Lx * np.cos(phi), Ly * np.sin(phi)])
            yaw = np.arctan2(Ly * np.sin(phi), Lx * np.cos(phi)) + sweep
            forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
            R = look_at_rotation(forward, roll_rad=0.05 * np.sin(7 * phi))
            poses.append(make_pose(R, [xy[0], xy[1], z]))
        return poses

    def _rooftop_geometry(self) -> tuple[float, float, float]:
        """The rooftop site's layout: (roof height, the walk's y, the railing's y)."""
        return ROOF_HEIGHT, 0.25 * self.room[1], 0.25 * self.room[1] + 1.2

    def _rooftop_trajectory(self, n: int, query: bool) -> list[np.ndarray]:
        """A hand-held walk along a roof's railing, looking out over it with sweeps of the view.

        Mapping: back and forth twice along 6 m of the railing, 1.2 m behind it; query: once,
        ``query_offset`` further back ("between": the mapping walks' neighbourhood) or wandering
        0.3 to 1.5 m back and 0.3 m lower and higher ("away")."""
        Lx = self.room[0]
        roof, y_walk, _ = self._rooftop_geometry()
        passes = 1 if query else 2
        poses = []
        for k in range(n):
            u = passes * k / max(n, 1)
            s = u % 1.0 if int(u) % 2 == 0 else 1.0 - u % 1.0  # along the railing and back
            x = Lx / 2 - 3.0 + 6.0 * s
            y, z = y_walk, roof + 1.6 + 0.08 * np.sin(2 * np.pi * 3 * u)
            yaw = np.pi / 2 + 0.6 * np.sin(2 * np.pi * 5 * u + 0.3)
            pitch = -0.06 + 0.1 * np.sin(2 * np.pi * 4 * u)
            if query:
                x = Lx / 2 - 2.8 + 5.6 * u
                if self.config.query_path == "away":
                    y -= 0.9 + 0.6 * np.sin(2 * np.pi * 2 * u + 0.5)
                    z += 0.3 * np.sin(2 * np.pi * 3 * u + 1.0)
                else:
                    y -= self.config.query_offset
                yaw = np.pi / 2 + 0.5 * np.sin(2 * np.pi * 3 * u + 1.1)
                pitch = -0.05 + 0.1 * np.sin(2 * np.pi * 2 * u + 0.2)
            forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
            poses.append(make_pose(look_at_rotation(forward, roll_rad=0.03 * np.sin(7 * u)), [x, y, z]))
        return poses

    def _rooftop_objects(self, rng: np.random.Generator) -> list[_Box]:
        """The roof the camera stands on, its railing (posts and a top rail, the close
        foreground) and buildings 20 to 40 m away (the far content)."""
        Lx, Ly, Lz = self.room
        roof, y_walk, y_rail = self._rooftop_geometry()
        boxes = [_Box(np.array([Lx / 2, y_walk - 0.5, roof / 2]), np.array([6.0, 2.3, roof / 2]), 0.0)]
        for x in np.arange(Lx / 2 - 5.5, Lx / 2 + 5.6, 1.0):  # posts, 1 m apart, 1 m high
            boxes.append(_Box(np.array([x, y_rail, roof + 0.5]), np.array([0.03, 0.03, 0.5]), 0.0))
        boxes.append(_Box(np.array([Lx / 2, y_rail, roof + 1.02]), np.array([5.6, 0.04, 0.03]), 0.0))
        x = 2.0
        while x < Lx - 6.0:  # a street of buildings along the far side
            hx, hy, hz = rng.uniform(2.0, 5.0), rng.uniform(2.5, 5.0), rng.uniform(3.0, 9.5)
            y = rng.uniform(y_rail + 18.0, min(y_rail + 34.0, Ly - hy - 0.5))
            boxes.append(_Box(np.array([x + hx, y, hz]), np.array([hx, hy, hz]), float(rng.uniform(-0.2, 0.2))))
            x += 2 * hx + rng.uniform(0.5, 3.0)
        return boxes

    # ---------------------------------------------------------------- geometry

    def _place_objects(self, rng: np.random.Generator) -> list[_Box]:
        """Boxes on the floor and on the walls, kept clear of every camera position."""
        if self.config.path == "rooftop":
            return self._rooftop_objects(rng)
        Lx, Ly, Lz = self.room
        cams = np.array([T[:3, 3] for T in self.mapping_poses + self.query_poses]).reshape(-1, 3)
        boxes: list[_Box] = []
        shared = None if self.config.furniture_seed is None else np.random.default_rng([self.config.furniture_seed, 1])
        size = None
        for attempt in range(self.config.num_objects * (100 if shared is not None else 50)):
            if len(boxes) == self.config.num_objects:
                break
            if shared is not None:
                # Shared furniture: the k-th piece has the same size in every room with this
                # furniture_seed; only its place comes from the room's own seed.
                if size is None or attempt % 50 == 0:
                    size = shared.uniform(0.1, 0.5, size=2), shared.random() < 0.3, shared.random()
                (hx, hy), on_wall, u = size
                hz = 0.1 + 0.2 * u if on_wall else 0.15 + (min(0.9, Lz / 2 - 0.2) - 0.15) * u
                cz = rng.uniform(0.9, Lz - 0.4) if on_wall else hz
            else:
                hx, hy = rng.uniform(0.1, 0.5, size=2)
                if rng.random() < 0.3:  # a wall cabinet / shelf, off the floor
                    hz = rng.uniform(0.1, 0.3)
                    cz = rng.uniform(0.9, Lz - 0.4)
                else:
                    hz = rng.uniform(0.15, min(0.9, Lz / 2 - 0.2))
                    cz = hz
            center = np.array([rng.uniform(hx, Lx - hx), rng.uniform(hy, Ly - hy), cz])
            box = _Box(center, np.array([hx, hy, hz]), float(rng.uniform(-0.6, 0.6)))
            corners = box.corners()
            if np.any(corners[:, :2] < 0.02) or np.any(corners[:, 0] > Lx - 0.02) or np.any(corners[:, 1] > Ly - 0.02):
                continue
            if len(cams) and np.any(box.contains(cams, 0.45)):
                continue
            if any(
                np.linalg.norm(box.center[:2] - b.center[:2])
                < np.linalg.norm(box.half[:2]) + np.linalg.norm(b.half[:2])
                for b in boxes
            ):
                continue
            boxes.append(box)
            size = None
        return boxes

    def _build_faces(self, rng: np.random.Generator) -> None:
        """Per face: a texture, a world->atlas-texel affine map and a normal."""
        cfg = self.config
        d = cfg.texel_density
        faces = []  # (origin, u_axis, v_axis, size_u, size_v, normal)
        # Room: face index 2*axis + (1 if the ray leaves through the max side); normals point inwards.
        for axis in range(3):
            for side in (0, 1):
                normal = np.zeros(3)
                normal[axis] = -1.0 if side else 1.0
                a1, a2 = [a for a in range(3) if a != axis]
                origin = np.zeros(3)
                origin[axis] = self.room[axis] * side
                u, v = np.eye(3)[a1], np.eye(3)[a2]
                faces.append((origin, u, v, self.room[a1], self.room[a2], normal))
        # Boxes: 6 faces each, same indexing in the box frame; normals point outwards.
        for box in self.boxes:
            R = box.R
            for axis in range(3):
                for side in (0, 1):
                    sgn = 1.0 if side else -1.0
                    a1, a2 = [a for a in range(3) if a != axis]
                    origin_local = -box.half.copy()
                    origin_local[axis] = sgn * box.half[axis]
                    faces.append(
                        (
                            R @ origin_local + box.center,
                            R[:, a1],
                            R[:, a2],
                            2 * box.half[a1],
                            2 * box.half[a2],
                            sgn * R[:, axis],
                        )
                    )
        densities = [d] * len(faces)
        if cfg.path == "rooftop":
            # An open site's faces reach tens of metres: a texel no finer than a pixel at the
            # nearest camera, no face wider than 2,000 texels, and none for the sky.
            cams = np.array([T[:3, 3] for T in self.mapping_poses + self.query_poses])
            densities = []
            for i, (origin, u, v, su, sv, _) in enumerate(faces):
                nearest = np.min(np.linalg.norm(cams - (origin + u * su / 2 + v * sv / 2), axis=1))
                nearest = max(nearest - np.hypot(su, sv) / 2, 0.5)
                sky = 1.0 if i == SKY_FACE else d
                densities.append(float(min(sky, cfg.focal / nearest, 2000.0 / max(su, sv))))
        textures, affines, normals = [], [], []
        wall_rng = rng if cfg.wall_seed is None else np.random.default_rng([cfg.wall_seed, 2])
        furniture_rng = rng if cfg.furniture_seed is None else np.random.default_rng([cfg.furniture_seed, 3])
        period = int(wall_rng.integers(40, 80))
        for i, (origin, u, v, su, sv, normal) in enumerate(faces):
            w = int(np.ceil(su * densities[i])) + 2 * MARGIN
            h = int(np.ceil(sv * densities[i])) + 2 * MARGIN
            surface_rng = rng if i in (2, 3) else wall_rng  # faces 2, 3: the walls facing along y
            if cfg.repetitive_texture and i < 6:
                tex = periodic_texture(surface_rng, h, w, period)
            elif i < 6:
                tex = decorated_surface(
                    surface_rng, h, w, d, None if cfg.texture_families == FAMILIES else cfg.texture_families
                )
            else:
                tex = make_texture(
                    furniture_rng, h, w, cfg.texture_families[int(furniture_rng.integers(len(cfg.texture_families)))]
                )
            textures.append(tex)
            normals.append(normal)
            affines.append((origin, u, v))
        self.atlas = pack_atlas(textures)
        A = np.zeros((len(faces), 2, 4), np.float32)
        for i, (origin, u, v) in enumerate(affines):
            ox, oy = self.atlas.offsets[i]
            di = densities[i]
            A[i, 0, :3], A[i, 0, 3] = u * di, ox - di * (u @ origin)
            A[i, 1, :3], A[i, 1, 3] = v * di, oy - di * (v @ origin)
        self._tex_affine = A
        # Per face, for the level of detail; None where every face has the scene's density.
        self._face_density = np.asarray(densities, np.float32) if cfg.path == "rooftop" else None
        self._normals = np.asarray(normals, np.float32)

    # ---------------------------------------------------------------- rendering

    def render(
        self, T_world_cam: np.ndarray, light: Light | None = None, noise_seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render one view.

        Args:
            T_world_cam: (4, 4) camera-to-world pose; the camera must be inside the room.
            light: lighting (default: the mapping light).
            noise_seed: seed of the sensor noise (``None``: no noise).

        Returns:
            rgb (H, W, 3) uint8 and depth (H, W) float32 metres (z-depth).
        """
        # Arrays are kept as separate x/y/z planes: numpy reduces a trailing axis of size 3 slowly.
        cfg = self.config
        light = light or self.mapping_light
        R = T_world_cam[:3, :3].astype(np.float32)
        o = T_world_cam[:3, 3].astype(np.float32)
        if np.any(o <= 0) or np.any(o >= self.room):
            raise ValueError(f"camera position {o.tolist()} is outside the room {self.room.tolist()}")
        rx, ry = self._rays_cam[..., 0], self._rays_cam[..., 1]
        d = [R[k, 0] * rx + R[k, 1] * ry + R[k, 2] for k in range(3)]  # world ray directions, t = z-depth
        # Room: the nearest exit among the three axes is the visible face.
        t = face = None
        for k in range(3):
            with np.errstate(divide="ignore"):
                tk = np.where(d[k] > 0, (self.room[k] - o[k]) / d[k], -o[k] / d[k]).astype(np.float32)
            tk[~np.isfinite(tk) | (tk < 0)] = np.inf
            fk = np.where(d[k] > 0, 2 * k + 1, 2 * k).astype(np.int32)
            if t is None:
                t, face = tk, fk
            else:
                closer = tk < t
                t = np.where(closer, tk, t)
                face = np.where(closer, fk, face)
        for bi, box in enumerate(self.boxes):
            self._intersect_box(bi, box, T_world_cam, o, d, t, face)
        p = [o[k] + d[k] * t for k in range(3)]  # hit points
        A = self._tex_affine
        mx = (A[:, 0, 0][face] * p[0] + A[:, 0, 1][face] * p[1] + A[:, 0, 2][face] * p[2] + A[:, 0, 3][face]).astype(
            np.float32
        )
        my = (A[:, 1, 0][face] * p[0] + A[:, 1, 1][face] * p[1] + A[:, 1, 2][face] * p[2] + A[:, 1, 3][face]).astype(
            np.float32
        )
        n = [self._normals[:, k][face] for k in range(3)]
        # Level of detail from the texel footprint of one pixel.
        d_len = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
        cos_inc = np.abs(n[0] * d[0] + n[1] * d[1] + n[2] * d[2]) / d_len
        density = cfg.texel_density if self._face_density is None else self._face_density[face]
        footprint = t * density / (cfg.focal * np.maximum(cos_inc, 0.25))
        level = np.clip(np.log2(np.maximum(footprint, 1e-6)), 0, len(LOD_SIGMAS) - 1)
        albedo = np.zeros((cfg.height, cfg.width, 3), np.float32)
        for k, lvl in enumerate(self.atlas.levels):
            w = np.clip(1.0 - np.abs(level - k), 0.0, 1.0)
            if not w.any():
                continue
            sample = cv2.remap(lvl, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            albedo += sample.astype(np.float32) * w[..., None]
        # Lambert shading with a soft distance falloff.
        to_light = [np.float32(light.position[k]) - p[k] for k in range(3)]
        dist = np.maximum(np.sqrt(to_light[0] ** 2 + to_light[1] ** 2 + to_light[2] ** 2), 1e-6)
        lambert = np.maximum((n[0] * to_light[0] + n[1] * to_light[1] + n[2] * to_light[2]) / dist, 0.0)
        falloff = 1.0 / (1.0 + (dist / (0.6 * np.linalg.norm(self.room))) ** 2)
        shade = (light.ambient + light.intensity * lambert * falloff).astype(np.float32)
        rgb = albedo * (shade[..., None] * (np.asarray(light.color, np.float32) * 1.15))
        if cfg.path == "rooftop":
            # The ceiling is sky: a plain gradient with nothing to match, and no depth.
            sky = face == SKY_FACE
            elevation = np.clip(d[2] / d_len, 0.0, 1.0)[sky]
            rgb[sky] = (np.array([205.0, 222.0, 240.0], np.float32) * (1.0 - 0.35 * elevation)[:, None]).astype(
                np.float32
            )
            t = np.where(sky, 0.0, t)
        if noise_seed is not None and cfg.noise_std > 0:
            noise = np.random.default_rng(noise_seed).standard_normal(rgb.shape, dtype=np.float32)
            rgb += noise * np.float32(cfg.noise_std)
        return np.clip(rgb, 0, 255).astype(np.uint8), t.astype(np.float32)

    def _intersect_box(self, bi: int, box: _Box, T_world_cam, o, d, t, face) -> None:
        """Slab test of the rays against one box, updating ``t`` and ``face`` in place."""
        H, W = t.shape
        corners_cam = (box.corners() - T_world_cam[:3, 3]) @ T_world_cam[:3, :3]
        if np.all(corners_cam[:, 2] <= 0):
            return  # entirely behind the camera
        rows, cols = slice(0, H), slice(0, W)
        if np.all(corners_cam[:, 2] > 0.01):  # project the box and test only its bounding rectangle
            cam = self.camera
            u = cam.fx * corners_cam[:, 0] / corners_cam[:, 2] + cam.cx
            v = cam.fy * corners_cam[:, 1] / corners_cam[:, 2] + cam.cy
            x0, x1 = int(np.clip(np.floor(u.min()) - 1, 0, W)), int(np.clip(np.ceil(u.max()) + 2, 0, W))
            y0, y1 = int(np.clip(np.floor(v.min()) - 1, 0, H)), int(np.clip(np.ceil(v.max()) + 2, 0, H))
            if x0 >= x1 or y0 >= y1:
                return
            rows, cols = slice(y0, y1), slice(x0, x1)
        Rb = box.R.astype(np.float32)
        o_l = (o - box.center.astype(np.float32)) @ Rb
        d_sub = [dk[rows, cols] for dk in d]
        t_near = t_far = entry = None
        for k in range(3):
            dl = Rb[0, k] * d_sub[0] + Rb[1, k] * d_sub[1] + Rb[2, k] * d_sub[2]
            with np.errstate(divide="ignore", invalid="ignore"):
                t1 = (-box.half[k] - o_l[k]) / dl
                t2 = (box.half[k] - o_l[k]) / dl
            lo = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
            hi = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
            # The entered face is on the max side when the ray travels towards -axis.
            fk = (6 + 6 * bi + 2 * k + (dl < 0)).astype(np.int32)
            if t_near is None:
                t_near, t_far, entry = lo, hi, fk
            else:
                later = lo > t_near
                t_near = np.where(later, lo, t_near)
                entry = np.where(later, fk, entry)
                t_far = np.minimum(t_far, hi)
        t_sub = t[rows, cols]
        hit = (t_near <= t_far) & (t_near > 1e-4) & (t_near < t_sub)
        if hit.any():
            t_sub[hit] = t_near[hit]
            face[rows, cols][hit] = entry[hit]

    def render_frame(self, index: int, query: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render frame ``index`` of the mapping or query trajectory: rgb, depth, T_world_cam."""
        poses = self.query_poses if query else self.mapping_poses
        T = poses[index]
        light = self.query_light if query else self.mapping_light
        seed = self.config.seed * 1_000_003 + (1_000_000 if query else 0) + index
        rgb, depth = self.render(T, light, noise_seed=seed)
        return rgb, depth, T


def _rounded_rectangle(
    t: float, x0: float, x1: float, y0: float, y1: float, radius: float
) -> tuple[float, float, float]:
    """The point a fraction ``t`` (0..1) along a rectangle with rounded corners, driven
    counter-clockwise from the middle of its bottom edge: (x, y, heading in radians)."""
    r = min(radius, (x1 - x0) / 2, (y1 - y0) / 2)
    w, h = x1 - x0 - 2 * r, y1 - y0 - 2 * r
    # Straight edges and quarter arcs in driving order, each as (length, position and heading at s).
    arc = np.pi * r / 2
    pieces = [
        (w / 2, lambda s: (x0 + r + w / 2 + s, y0, 0.0)),
        (arc, lambda s: (x1 - r + r * np.sin(s / r), y0 + r - r * np.cos(s / r), s / r)),
        (h, lambda s: (x1, y0 + r + s, np.pi / 2)),
        (arc, lambda s: (x1 - r + r * np.cos(s / r), y1 - r + r * np.sin(s / r), np.pi / 2 + s / r)),
        (w, lambda s: (x1 - r - s, y1, np.pi)),
        (arc, lambda s: (x0 + r - r * np.sin(s / r), y1 - r + r * np.cos(s / r), np.pi + s / r)),
        (h, lambda s: (x0, y1 - r - s, 3 * np.pi / 2)),
        (arc, lambda s: (x0 + r - r * np.cos(s / r), y0 + r - r * np.sin(s / r), 3 * np.pi / 2 + s / r)),
        (w / 2, lambda s: (x0 + r + s, y0, 2 * np.pi)),
    ]
    s = t * sum(length for length, _ in pieces)
    for length, at in pieces:
        if s <= length:
            return at(s)
        s -= length
    return pieces[-1][1](pieces[-1][0])
