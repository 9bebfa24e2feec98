"""The phantom's anatomy: a spine segment's geometry in millimetres in its own frame (:func:`local_coordinates`),
its structures as boolean masks (:class:`Anatomy`: vertebral bodies, posterior elements, discs, canal, cord, the
body outline) and the tumor blobs placed in them (:func:`blob`). :mod:`volgan.data.phantom` paints them.
"""

from __future__ import annotations

import math

import numpy as np

from volgan.labels import CORD, CSF, DISC, EXTRAMEDULLARY, INTRAMEDULLARY, TUMOR_LABEL, VERTEBRA

REFERENCE_FOV_MM = 96.0  # field of view at which anatomy has its natural size
# The spine's region: the vertebral body's radii (left-right, anterior-posterior, mm at natural size) and how far
# (mm) the field's centre lies anterior of the canal's axis. Lumbar: a large body, the field centred between canal
# and body (the study's phantoms). Cervical: a small body, the field centred on the canal, as cord MRI is framed.
REGIONS: dict[str, tuple[tuple[float, float], float]] = {"lumbar": ((18.0, 14.0), 10.0), "cervical": ((9.0, 8.0), 0.0)}


def local_coordinates(rng: np.random.Generator, shape, spacing, fov) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Millimetre coordinates of every voxel in the spine's own frame: x left-right, y anterior, z superior.

    The spine is rotated (up to 15° axially, 8° in the other planes) and shifted (up to 8% of the
    field in-plane, 4% along it).

    Parameters
    ----------
    rng : np.random.Generator
        the case's generator (draws the rotation and shift).
    shape
        the grid's shape (X, Y, Z).
    spacing
        its voxel size in mm, (3,).
    fov
        the field the anatomy is drawn for, in mm, (3,).

    Returns
    -------
    tuple[np.ndarray, np.ndarray, np.ndarray]
        x, y and z in mm, float32 arrays of ``shape``.
    """
    axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing, strict=True)]
    ax, ay, az = np.deg2rad(rng.uniform(-8, 8)), np.deg2rad(rng.uniform(-8, 8)), np.deg2rad(rng.uniform(-15, 15))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    rot = (rz @ ry @ rx).T.astype(np.float32)  # world -> local
    shift = (rng.uniform(-1, 1, 3) * fov * np.array([0.08, 0.08, 0.04])).astype(np.float32)
    gx, gy, gz = axes[0][:, None, None] - shift[0], axes[1][None, :, None] - shift[1], axes[2][None, None, :] - shift[2]
    return tuple(rot[r, 0] * gx + rot[r, 1] * gy + rot[r, 2] * gz for r in range(3))


def ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    """Normalised squared radius of an ellipse in the (u, v) plane: < 1 inside.

    Parameters
    ----------
    u, v : np.ndarray
        coordinates in mm, of one shape.
    cu, cv : float
        the centre, mm.
    ru, rv : float
        the radii, mm.

    Returns
    -------
    np.ndarray
        the squared normalised radius, of the coordinates' shape.
    """
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2


class Anatomy:
    """The spine's geometry in mm, drawn once per case for a field of ``fov`` mm; masks are boolean arrays of
    the grid's shape. Tumors are centred within ``visible_z`` mm of the grid's centre along the spine."""

    def __init__(self, rng, fov, spacing, x, y, z, visible_z: float | None = None, region: str = "lumbar"):
        body_radii, canal_offset = REGIONS[region]
        s = min(fov[0], fov[1]) / REFERENCE_FOV_MM * rng.uniform(0.9, 1.1)
        self.scale, self.z = s, z
        length = fov[2]
        self.visible_z = length / 2.0 if visible_z is None else min(visible_z, length / 2.0)
        # Sagittal (lordosis) and coronal (scoliosis) curvature of the centre line.
        phase = rng.uniform(0, 2 * math.pi)
        bend_ap, bend_lr = rng.uniform(0, 6) * s, rng.uniform(0, 3) * s
        wavelength = length * rng.uniform(1.2, 2.5)
        yc = bend_ap * np.sin(2 * math.pi * z / wavelength + phase)
        xc = bend_lr * np.sin(2 * math.pi * z / wavelength + phase * 0.7)
        self.u = (y - yc + (canal_offset - 10.0) * s).astype(np.float32)  # anterior; canal axis at canal_u
        self.v = (x - xc).astype(np.float32)  # left-right offset

        self.canal_r = np.array([9.0, 7.0]) * s * rng.uniform(0.9, 1.1, 2)  # (lr, ap) radii
        self.cord_r = np.array([5.0, 3.8]) * s * rng.uniform(0.9, 1.1, 2)
        self.body_r = np.array(body_radii) * s * rng.uniform(0.9, 1.1, 2)
        # At least this much CSF (mm) between cord and canal wall, so the sampled cord never touches bone.
        self.margin = 1.25 * float(max(spacing))
        self.canal_r = np.maximum(self.canal_r, self.cord_r + self.margin)
        self.canal_u = -10.0 * s
        self.body_u = self.canal_u + self.canal_r[1] + 3.0 * s + self.body_r[1]

        # Vertebral levels along z: n bodies of height fraction `fill` with discs between.
        self.n_vertebrae = int(rng.integers(3, 6))
        self.period = length / (self.n_vertebrae + 0.3)
        self.fill = rng.uniform(0.7, 0.8)
        z0 = -length / 2 + 0.15 * self.period + rng.uniform(-0.05, 0.05) * self.period
        self.z0 = z0
        body_q = ellipse(self.u, self.v, self.body_u, 0.0, self.body_r[1], self.body_r[0])
        t = (z - z0 + 1.2 * s * body_q) / self.period  # concave endplates
        level = np.floor(t)
        frac = t - level
        in_body = body_q < 1.0
        self.body = in_body & (frac < self.fill) & (level >= 0) & (level < self.n_vertebrae)
        self.disc = (body_q < 1.05) & (frac >= self.fill) & (level >= -1) & (level < self.n_vertebrae)
        self.level, self.frac = level, frac
        self.outer = ellipse(self.u, self.v, 2.0 * s, 0.0, 40.0 * s, 46.0 * s)
        # Cord and canal are drawn in place_tumor, where a tumor may widen or push them.

    def canal_and_cord(self, canal_grow=None, cord_shift=(0.0, 0.0), cord_grow=None):
        """Canal and cord masks; ``*_grow`` (arrays over z) widen them, ``cord_shift`` (lr, ap mm, arrays
        over z) displaces the cord."""
        canal_scale = 1.0 if canal_grow is None else 1.0 + canal_grow
        cord_scale = 1.0 if cord_grow is None else 1.0 + cord_grow
        canal = ellipse(self.u, self.v, self.canal_u, 0.0, self.canal_r[1] * canal_scale,
                         self.canal_r[0] * canal_scale) < 1.0
        cord = ellipse(self.u, self.v, self.canal_u + cord_shift[1], cord_shift[0],
                        self.cord_r[1] * cord_scale, self.cord_r[0] * cord_scale) < 1.0
        return canal, cord & canal

    def posterior_elements(self, canal):
        """Pedicles, laminae, transverse and spinous processes at the levels of the bodies."""
        s = self.scale
        at_level = (self.level >= 0) & (self.level < self.n_vertebrae) & (self.frac < self.fill)
        ring = ellipse(self.u, self.v, self.canal_u, 0.0, self.canal_r[1] + 4 * s, self.canal_r[0] + 4 * s) < 1.0
        ring &= ~canal & (self.u < self.body_u)
        back = self.canal_u - self.canal_r[1]
        spinous = (np.abs(self.v) < 2.5 * s) & (self.u < back) & (self.u > back - 18 * s) & (self.frac > 0.1)
        transverse = (np.abs(self.u - self.canal_u) < 2.5 * s) & (np.abs(self.v) > self.canal_r[0]) & (
            np.abs(self.v) < self.canal_r[0] + 16 * s) & (self.frac > 0.15) & (self.frac < self.fill - 0.1)
        return at_level & (ring | spinous | transverse) & ~canal

    def place_tumor(self, rng, tumor_type: int, spacing):
        """Draw canal and cord, deformed by the tumor, and the tumor mask itself (empty for type 0)."""
        s = self.scale
        info: dict = {}
        if tumor_type == 0:
            self.canal, self.cord = self.canal_and_cord()
            self.tumor_host = None
            return np.zeros(self.u.shape, dtype=bool), info
        min_voxel = float(min(spacing))
        diameter = rng.uniform(4.0, 25.0) * s  # longest extent, mm
        z_lo = self.z0 + 0.3 * self.period
        z_hi = self.z0 + (self.n_vertebrae - 0.3) * self.period
        levels = np.arange(self.n_vertebrae)
        if self.visible_z < (z_hi - z_lo) / 2.0:  # a crop of a larger field: keep the tumor inside the grid
            z_lo, z_hi = max(z_lo, -0.6 * self.visible_z), min(z_hi, 0.6 * self.visible_z)
            centres = np.abs(self.z0 + (levels + self.fill / 2.0) * self.period)
            levels = levels[centres <= max(0.7 * self.visible_z, centres.min())]
        for attempt in range(6):
            half = max(diameter / 2.0 * 1.3**attempt, 1.2 * min_voxel)
            if tumor_type == INTRAMEDULLARY:
                zc = rng.uniform(z_lo, z_hi)
                bump = np.exp(-(((self.z - zc) / max(half, 1e-3)) ** 2))
                room = (self.canal_r - self.margin) / self.cord_r - 1.0
                grow = bump * max(0.0, min(half / self.cord_r.min(), float(room.min())))
                self.canal, self.cord = self.canal_and_cord(cord_grow=grow)
                r_in = np.minimum(half, self.cord_r * (1.0 + grow.max()) * 0.8)
                centre = (0.0, self.canal_u, zc)
                radii = (r_in[0], r_in[1], half)
                host = self.cord
            elif tumor_type == EXTRAMEDULLARY:
                zc = rng.uniform(z_lo, z_hi)
                bump = np.exp(-(((self.z - zc) / max(half, 1e-3)) ** 2))
                angle = rng.uniform(0, 2 * math.pi)
                canal_grow = 0.2 * bump
                push = max(0.0, self.canal_r.min() - self.cord_r.max() * 0.85 - self.margin) * bump
                shift = (-math.cos(angle) * push, -math.sin(angle) * push)
                self.canal, self.cord = self.canal_and_cord(canal_grow=canal_grow, cord_shift=shift,
                                                            cord_grow=-0.15 * bump)
                centre = (math.cos(angle) * 0.5 * self.canal_r[0], self.canal_u + math.sin(angle) * 0.5 *
                          self.canal_r[1], zc)
                r_in = np.minimum(half, 0.6 * self.canal_r)
                radii = (r_in[0], r_in[1], half)
                host = self.canal & ~self.cord
            else:
                self.canal, self.cord = self.canal_and_cord()
                level = int(levels[rng.integers(len(levels))])
                zc = self.z0 + (level + self.fill / 2.0) * self.period
                centre = (rng.uniform(-0.3, 0.3) * self.body_r[0],
                          self.body_u + rng.uniform(-0.3, 0.3) * self.body_r[1], zc)
                r_in = np.minimum(half, 0.7 * self.body_r)
                radii = (r_in[0], r_in[1], min(half, 0.45 * self.fill * self.period))
                host = self.body
            tumor = blob(rng, self.v, self.u, self.z, centre, radii) & host
            if tumor.any():
                break
        else:  # pragma: no cover - geometry makes this unreachable at the supported sizes
            raise RuntimeError(f"could not place a type-{tumor_type} tumor")
        self.tumor_host = host
        extent = 2.0 * max(radii)
        info.update(tumor_diameter_mm=round(float(extent), 2), tumor_centre_z_mm=round(float(zc), 2))
        return tumor, info

    def label_map(self, tumor) -> np.ndarray:
        canal = self.canal
        self.posterior = self.posterior_elements(canal)
        label = np.zeros(self.u.shape, dtype=np.uint8)
        label[canal] = CSF
        label[self.cord] = CORD
        label[(self.body & ~canal) | self.posterior] = VERTEBRA
        label[self.disc & ~canal & ~self.body] = DISC
        label[tumor] = TUMOR_LABEL
        return label


def blob(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, z: np.ndarray, centre, radii) -> np.ndarray:
    """An irregular ellipsoid: the normalised radius is compared with a threshold that three random
    plane waves bend by up to ±30%.

    Parameters
    ----------
    rng : np.random.Generator
        the case's generator (draws the waves).
    x, y, z : np.ndarray
        coordinates in mm (:func:`local_coordinates`).
    centre
        the centre in mm, (3,).
    radii
        the radii in mm, (3,).

    Returns
    -------
    np.ndarray
        a boolean mask of the coordinates' shape.
    """
    q = sum(((c - m) / max(r, 1e-3)) ** 2 for c, m, r in zip((x, y, z), centre, radii, strict=True))
    wave = np.zeros_like(q)
    scale = 2 * math.pi / max(2.0 * max(radii), 1e-3)
    for _ in range(3):
        k = rng.normal(size=3)
        k *= scale * rng.uniform(1.0, 2.5) / np.linalg.norm(k)
        wave += np.sin(k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * math.pi)) / 3.0
    return q < (1.0 + 0.3 * wave) ** 2
