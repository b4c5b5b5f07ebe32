"""Unit quaternions (x, y, z, w order, as ROS and TUM write them) and rigid poses, in numpy.

Every function takes arrays of shape (..., 4) or (..., 7) and broadcasts over leading axes.
A pose is x, y, z, qx, qy, qz, qw: the child frame's position and orientation in the parent.
"""
import numpy as np


def multiply(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Hamilton product q1 * q2 (rotate by q2, then by q1)."""
    x1, y1, z1, w1 = np.moveaxis(np.asarray(q1, dtype=np.float64), -1, 0)
    x2, y2, z2, w2 = np.moveaxis(np.asarray(q2, dtype=np.float64), -1, 0)
    return np.stack([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
                     w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2], axis=-1)


def conjugate(q: np.ndarray) -> np.ndarray:
    """The inverse rotation of a unit quaternion."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([-q[..., :3], q[..., 3:]], axis=-1)


def rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectors v (..., 3) rotated by unit quaternions q (..., 4)."""
    q = np.asarray(q, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    u, w = q[..., :3], q[..., 3:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def slerp(q0: np.ndarray, q1: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation from q0 (fraction 0) to q1 (fraction 1), shortest arc."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    f = np.asarray(fraction, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.abs(dot)
    angle = np.arccos(np.clip(dot, -1.0, 1.0))
    sin = np.sin(angle)
    close = sin < 1e-9  # nearly equal rotations: linear blend, renormalized below
    safe = np.where(close, 1.0, sin)
    a = np.where(close, 1.0 - f, np.sin((1.0 - f) * angle) / safe)
    b = np.where(close, f, np.sin(f * angle) / safe)
    out = a * q0 + b * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def rotation_vector(q: np.ndarray) -> np.ndarray:
    """Axis * angle (radians, in [0, pi]) of unit quaternions (..., 4) -> (..., 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = np.where(q[..., 3:] < 0.0, -q, q)
    sin_half = np.linalg.norm(q[..., :3], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., 3:])
    # angle / sin(angle / 2) -> 2 as the angle -> 0
    scale = np.where(sin_half > 1e-12, angle / np.where(sin_half > 1e-12, sin_half, 1.0), 2.0)
    return q[..., :3] * scale


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pose a * b: frame b given in frame a, expressed in a's parent."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    position = a[..., :3] + rotate(a[..., 3:], b[..., :3])
    return np.concatenate([position, multiply(a[..., 3:], b[..., 3:])], axis=-1)


def invert(a: np.ndarray) -> np.ndarray:
    """The inverse pose: the parent in the child's frame."""
    a = np.asarray(a, dtype=np.float64)
    inverse_q = conjugate(a[..., 3:])
    return np.concatenate([-rotate(inverse_q, a[..., :3]), inverse_q], axis=-1)
