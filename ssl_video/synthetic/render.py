"""Synthetic scenes in memory, deterministic by seed (the public entry point is :mod:`ssl_video.synthetic.generate`).

:func:`render_sequence`: moving textured shapes that occlude each other, with instance masks.
:func:`render_take`: one scene seen by several synchronised cameras, one actor performing one action.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

ACTIONS = ("circle", "sway", "jump", "bob", "zigzag", "spin")  # class k of a take / Kinetics clip = ACTIONS[k]
TEXTURES = ("stripes", "checker", "noise", "rings")
SHAPES = ("circle", "square", "diamond", "ellipse", "triangle")


def child_seed(seed: int, *keys: int) -> int:
    """A seed for item ``keys`` of a data set made with ``seed`` (independent streams, stable across versions)."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------------------------
# Sprites: a textured shape with a per-frame pose; drawn in z-order onto a background.
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Sprite:
    """One object. Pose arrays have one entry per frame; texture lives in the object's own frame (moves with it)."""

    label: int
    shape: str
    texture: str
    radius: float
    colors: np.ndarray  # (2, 3) float in [0, 255]: the texture's two tones
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    scale: np.ndarray
    period: float = 8.0
    tex_angle: float = 0.0
    noise_tile: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))

    def local(self, t: int, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel grid -> object coordinates (unscaled radius units are pixels at scale 1)."""
        dx, dy = (xx - self.x[t]) / self.scale[t], (yy - self.y[t]) / self.scale[t]
        c, s = np.cos(self.angle[t]), np.sin(self.angle[t])
        return c * dx + s * dy, -s * dx + c * dy

    def support(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r = self.radius
        if self.shape == "circle":
            return u * u + v * v < r * r
        if self.shape == "square":
            return (np.abs(u) < 0.85 * r) & (np.abs(v) < 0.85 * r)
        if self.shape == "diamond":
            return np.abs(u) + np.abs(v) < 1.1 * r
        if self.shape == "ellipse":
            return (u / r) ** 2 + (v / (0.6 * r)) ** 2 < 1
        return (v < 0.6 * r) & (v > 1.9 * np.abs(u) - r)  # triangle, apex up

    def shade(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Index 0/1 into ``colors`` for each point (the texture pattern)."""
        p = self.period
        if self.texture == "stripes":
            w = u * np.cos(self.tex_angle) + v * np.sin(self.tex_angle)
            return (np.floor(w / (p / 2)) % 2).astype(np.intp)
        if self.texture == "checker":
            return ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.intp)
        if self.texture == "rings":
            return (np.floor(np.hypot(u, v) / (p / 2)) % 2).astype(np.intp)
        n = self.noise_tile.shape[0]  # noise: a fixed random tile of 4-px cells
        return self.noise_tile[np.floor(v / 4).astype(np.intp) % n, np.floor(u / 4).astype(np.intp) % n]


def draw(background: np.ndarray, sprites: Sequence[Sprite]) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``sprites`` (back to front) over ``background`` (T,H,W,3) float; returns uint8 frames and label masks."""
    frames = background.copy()
    t_len, h, w = background.shape[:3]
    masks = np.zeros((t_len, h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    for t in range(t_len):
        for sp in sprites:
            u, v = sp.local(t, xx, yy)
            inside = sp.support(u, v)
            frames[t][inside] = sp.colors[sp.shade(u[inside], v[inside])]
            masks[t][inside] = sp.label
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8), masks


def _palette(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` saturated colours with well separated hues (each a (2,3) pair: full tone and a darker one)."""
    hues = (rng.uniform() + np.arange(n) / max(n, 1)) % 1.0
    out = []
    for h in rng.permutation(hues):
        rgb = np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.7, 0.95), rng.uniform(0.8, 1.0))) * 255
        out.append(np.stack([rgb, rgb * rng.uniform(0.45, 0.65)]))
    return out


def _sprite(rng: np.random.Generator, label: int, colors: np.ndarray, radius: float, pose: dict) -> Sprite:
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    return Sprite(
        label=label, shape=SHAPES[rng.integers(len(SHAPES))], texture=texture, radius=radius, colors=colors,
        period=float(rng.uniform(6, 12)), tex_angle=float(rng.uniform(0, np.pi)),
        noise_tile=rng.integers(0, 2, (8, 8)), **pose,
    )


def _background(rng: np.random.Generator, t_len: int, h: int, w: int, pan: float) -> np.ndarray:
    """Low-saturation colour field + fine grain, panning slowly (so background is not trivially static)."""
    from skimage.transform import resize

    m = int(np.ceil(pan * t_len)) + 1
    coarse = rng.uniform(-1, 1, (5, 5, 3)) * 25 + rng.uniform(90, 160)
    field_ = resize(coarse, (h + m, w + m, 3), order=3, mode="reflect") + rng.normal(0, 6, (h + m, w + m, 1))
    ang = rng.uniform(0, 2 * np.pi)
    out = np.empty((t_len, h, w, 3))
    for t in range(t_len):
        oy = int(round((m - 1) / 2 * (1 + np.sin(ang) * t / max(t_len - 1, 1))))
        ox = int(round((m - 1) / 2 * (1 + np.cos(ang) * t / max(t_len - 1, 1))))
        out[t] = field_[oy : oy + h, ox : ox + w]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Single-view sequences with instance masks (DAVIS-like).
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SequenceScene:
    """Everything needed to draw a sequence; ``sprites`` are in z-order (back to front), labels 1..K."""

    background: np.ndarray
    sprites: list[Sprite]

    @property
    def z_order(self) -> list[int]:
        """Labels from back to front."""
        return [s.label for s in self.sprites]


def _check_size(size: Sequence[int], num_frames: int) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 16 or num_frames < 1:
        raise ValueError(f"size must be (H, W) with both >= 16 and num_frames >= 1, got size={size}, {num_frames=}")
    return int(size[0]), int(size[1])


def make_sequence_scene(seed: int, num_frames: int = 24, size: tuple[int, int] = (128, 128),
                        num_objects: int = 3) -> SequenceScene:
    """Build (not draw) the scene of :func:`render_sequence`: trajectories are smooth sinusoids that cross often."""
    h, w = _check_size(size, num_frames)
    if not 0 <= num_objects <= 254:
        raise ValueError(f"num_objects must be in 0..254, got {num_objects}")
    rng = np.random.default_rng(seed)
    background = _background(rng, num_frames, h, w, pan=rng.uniform(0.1, 0.4))
    t = np.arange(num_frames) / max(num_frames, 1)
    sprites = []
    for label, colors in zip(range(1, num_objects + 1), _palette(rng, num_objects)):
        pose = {}
        for key, extent in (("x", w), ("y", h)):
            amp, freq, phase = rng.uniform(0.1, 0.3), rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
            centre = rng.uniform(0.2 + amp / 2, 0.8 - amp / 2)
            pose[key] = extent * (centre + amp * np.sin(2 * np.pi * freq * t + phase))
        pose["angle"] = rng.uniform(0, 2 * np.pi) + rng.uniform(-1.5, 1.5) * t
        pose["scale"] = 1 + rng.uniform(-0.2, 0.2) * t
        sprites.append(_sprite(rng, label, colors, rng.uniform(0.1, 0.18) * min(h, w), pose))
    order = rng.permutation(num_objects)
    return SequenceScene(background, [sprites[i] for i in order])


def render_sequence(seed: int, num_frames: int = 24, size: tuple[int, int] = (128, 128), num_objects: int = 3,
                    *, only: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Textured shapes moving and occluding each other on a textured, panning background.

    Returns ``frames`` (T,H,W,3) uint8 and ``masks`` (T,H,W) uint8 (0 background, 1..K objects; a pixel carries the
    label of the object drawn there, so occlusion is respected). ``only``: draw just these labels (same scene
    otherwise) — how tests check masks against the pixels.
    """
    scene = make_sequence_scene(seed, num_frames, size, num_objects)
    sprites = scene.sprites if only is None else [s for s in scene.sprites if s.label in set(only)]
    return draw(scene.background, sprites)


# ----------------------------------------------------------------------------------------------------------------
# Multi-view takes: one world, V cameras (homography + gain/bias + noise), one action of the actor.
# ----------------------------------------------------------------------------------------------------------------
def action_offsets(action: int, progress: np.ndarray, amplitude: float, cycles: int = 2) -> np.ndarray:
    """Actor displacement (dx, dy, dangle, scale factor) for ``progress`` in [0,1] through the segment.

    Every pattern starts and ends at rest (zero displacement), so the motion is continuous at the segment bounds.
    """
    phi = 2 * np.pi * cycles * progress
    zero, one, half = np.zeros_like(phi), np.ones_like(phi), np.abs(np.sin(phi / 2))
    a = amplitude
    patterns = {
        0: (a * (1 - np.cos(phi)), a * np.sin(phi), zero, one),  # circle
        1: (a * np.sin(phi), zero, zero, one),  # sway: left-right
        2: (zero, -a * half, zero, 1 + 0.3 * half),  # jump: up and grow
        3: (zero, a * np.sin(phi), zero, one),  # bob: up-down
        4: (a * np.sin(phi), a * np.sin(2 * phi) / 2, zero, one),  # zigzag: figure of eight
        5: (zero, zero, phi, one),  # spin in place
    }
    return np.stack(patterns[action], axis=-1)


def _camera(rng: np.random.Generator, h: int, w: int, margin: int) -> np.ndarray:
    """A world->view homography: rotation, zoom, shift and mild perspective, whose view stays inside the world."""
    view_corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float)
    for _ in range(1000):
        ang, zoom = rng.uniform(-0.2, 0.2), rng.uniform(1.0, 1.25)
        c, s = np.cos(ang) * zoom, np.sin(ang) * zoom
        persp = np.array([[1, 0, 0], [0, 1, 0], rng.uniform(-6e-4, 6e-4, 3) * [1, 1, 0] + [0, 0, 1]])
        centre_world = np.array([[1, 0, -(w / 2 + margin)], [0, 1, -(h / 2 + margin)], [0, 0, 1]])
        to_view = np.array([[c, -s, w / 2 + rng.uniform(-5, 5)], [s, c, h / 2 + rng.uniform(-5, 5)], [0, 0, 1]])
        world_to_view = to_view @ persp @ centre_world
        back = view_corners @ np.linalg.inv(world_to_view).T
        back = back[:, :2] / back[:, 2:]
        if back.min() >= 0 and (back[:, 0] <= w + 2 * margin - 1).all() and (back[:, 1] <= h + 2 * margin - 1).all():
            return world_to_view / world_to_view[2, 2]
    raise RuntimeError("could not draw a camera inside the world")  # unreachable for margin >= size/8


def warp_view(world: np.ndarray, world_to_view: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Sample world frames (T,Hw,Ww,C) into a view of ``size`` through a homography (bilinear, float)."""
    # hand-written bilinear gather: one vectorised pass over all frames instead of T*C map_coordinates calls
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    pts = np.stack([xx, yy, np.ones_like(xx)], -1) @ np.linalg.inv(world_to_view).T
    wx, wy = pts[..., 0] / pts[..., 2] - 0.5, pts[..., 1] / pts[..., 2] - 0.5
    x0 = np.clip(np.floor(wx).astype(np.intp), 0, world.shape[2] - 2)
    y0 = np.clip(np.floor(wy).astype(np.intp), 0, world.shape[1] - 2)
    fx, fy = (wx - x0)[..., None], (wy - y0)[..., None]
    top = world[:, y0, x0] * (1 - fx) + world[:, y0, x0 + 1] * fx
    bottom = world[:, y0 + 1, x0] * (1 - fx) + world[:, y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _take_sprites(rng: np.random.Generator, num_frames: int, size: tuple[int, int], margin: int,
                  num_distractors: int, action: int, segment: tuple[int, int]) -> list:
    """The actor (first: still outside ``segment``, the class's motion inside it) and the drifting distractors."""
    (h, w), (start, end) = size, segment
    t = np.arange(num_frames, dtype=np.float64)
    colors = _palette(rng, num_distractors + 1)
    sprites = []
    for k in range(num_distractors + 1):
        radius = rng.uniform(0.09, 0.13) * min(h, w)
        side = (0.2, 0.8)[k % 2] if k else 0.5  # distractors left and right of the actor: they overlap it rarely
        x0, y0 = margin + w * (side + rng.uniform(-0.08, 0.08)), margin + h * rng.uniform(0.3, 0.7)
        amp, freq, ph = rng.uniform(0.02, 0.06) * min(h, w), rng.uniform(0.01, 0.03), rng.uniform(0, 2 * np.pi, 2)
        pose = {"x": x0 + amp * np.sin(2 * np.pi * freq * t + ph[0]),
                "y": y0 + amp * np.cos(2 * np.pi * freq * t + ph[1]),
                "angle": np.full(num_frames, rng.uniform(0, 2 * np.pi)), "scale": np.ones(num_frames)}
        if k == 0:
            pose["x"], pose["y"] = np.full(num_frames, margin + w / 2.0), np.full(num_frames, margin + h * 0.55)
            progress = np.clip((t - start) / (end - start), 0, 1)
            d = action_offsets(action, progress, amplitude=0.16 * min(h, w))
            pose["x"], pose["y"] = pose["x"] + d[:, 0], pose["y"] + d[:, 1]
            pose["angle"], pose["scale"] = pose["angle"] + d[:, 2], d[:, 3]
        sprites.append(_sprite(rng, k + 1, colors[k], radius, pose))
    return sprites


def _camera_views(rng: np.random.Generator, world: np.ndarray, world_masks: np.ndarray, num_cameras: int,
                  size: tuple[int, int], margin: int) -> tuple[list, list, list, tuple]:
    """Each camera's view of the world (homography, gain, bias, noise), its nearest-pixel object masks, its
    homography, and the cameras' ``(gain, bias, noise_std)``."""
    (h, w), (num_frames, hw, ww) = size, world_masks.shape
    world_f = world.astype(np.float32)
    views, masks, homs = [], [], []
    gain, bias = rng.uniform(0.75, 1.25, num_cameras), rng.uniform(-20, 20, num_cameras)
    noise = rng.uniform(2, 5, num_cameras)
    for v in range(num_cameras):
        hom = _camera(rng, h, w, margin)
        view = warp_view(world_f, hom, (h, w)) * gain[v] + bias[v] + rng.normal(0, noise[v], (num_frames, h, w, 3))
        views.append(np.clip(np.rint(view), 0, 255).astype(np.uint8))
        pts = np.stack([*np.mgrid[0:h, 0:w][::-1] + 0.5, np.ones((h, w))], -1) @ np.linalg.inv(hom).T
        mx = np.clip((pts[..., 0] / pts[..., 2]).astype(np.intp), 0, ww - 1)
        my = np.clip((pts[..., 1] / pts[..., 2]).astype(np.intp), 0, hw - 1)
        masks.append(world_masks[:, my, mx])
        homs.append(hom)
    return views, masks, homs, (gain, bias, noise)


def render_take(seed: int, num_cameras: int = 3, num_frames: int = 48, size: tuple[int, int] = (128, 128),
                action: int = 0, num_classes: int = 3, segment: tuple[int, int] | None = None,
                num_distractors: int = 2) -> dict:
    """One scene seen by ``num_cameras`` synchronised cameras; the actor (object 0) performs ``action`` in ``segment``.

    Returns a dict:
      ``frames`` (V,T,H,W,3) uint8 — frame i of every view is the same instant;
      ``masks`` (V,T,H,W) uint8 — object index + 1 per view pixel (nearest), 0 background;
      ``object_state`` (T,N,4) float — per object x, y (world pixels), angle, scale; object 0 is the actor;
      ``world_to_view`` (V,3,3) homographies (world pixel coords -> view pixel coords, pixel centres at +0.5);
      ``gain``, ``bias``, ``noise_std`` (V,) — view = gain * world + bias + N(0, noise_std), clipped;
      ``actor_colors`` (2,3) the actor's two tones; ``segment`` (start, end) with end exclusive; ``label`` int;
      ``label_name``; ``world_size`` (Hw, Ww).
    Idle outside the segment: the actor rests, distractors drift slowly the whole time.
    """
    h, w = _check_size(size, num_frames)
    if not 1 <= num_classes <= len(ACTIONS):
        raise ValueError(f"num_classes must be in 1..{len(ACTIONS)}, got {num_classes}")
    if not 0 <= action < num_classes:
        raise ValueError(f"action must be in 0..{num_classes - 1}, got {action}")
    if num_cameras < 1:
        raise ValueError(f"num_cameras must be >= 1, got {num_cameras}")
    rng = np.random.default_rng(seed)
    if segment is None:
        length = int(rng.integers(max(1, round(0.4 * num_frames)), max(2, round(0.7 * num_frames)) + 1))
        length = min(length, num_frames)
        start = int(rng.integers(0, num_frames - length + 1))
        segment = (start, start + length)
    start, end = int(segment[0]), int(segment[1])
    if not 0 <= start < end <= num_frames:
        raise ValueError(f"segment must satisfy 0 <= start < end <= num_frames={num_frames}, got {segment}")

    margin = int(np.ceil(max(h, w) / 8))
    hw, ww = h + 2 * margin, w + 2 * margin
    background = _background(rng, num_frames, hw, ww, pan=0.0)
    sprites = _take_sprites(rng, num_frames, (h, w), margin, num_distractors, action, (start, end))
    world, world_masks = draw(background, sprites[::-1])  # actor drawn last: always visible
    state = np.stack([np.stack([s.x, s.y, s.angle, s.scale], -1) for s in sprites], axis=1)
    views, masks, homs, (gain, bias, noise) = _camera_views(rng, world, world_masks, num_cameras, (h, w), margin)
    return {
        "frames": np.stack(views), "masks": np.stack(masks), "object_state": state, "world_to_view": np.stack(homs),
        "gain": gain, "bias": bias, "noise_std": noise, "actor_colors": sprites[0].colors, "segment": (start, end),
        "label": int(action), "label_name": ACTIONS[action], "world_size": (hw, ww),
    }
