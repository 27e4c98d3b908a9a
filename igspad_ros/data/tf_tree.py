"""A TF tree read from a bag: static and time-varying edges, chained and interpolated.

What tf2 does for a recorded ``/tf`` + ``/tf_static``, without ROS and without a time
limit on the buffer. An edge ``parent -> child`` is the transform that maps child
coordinates to parent coordinates (the child frame's pose in the parent), a 4x4 matrix.
A chain from ``source`` to ``target`` walks the tree in either direction of its edges, so
the result is the target frame's pose in the source frame at any depth.

Static edges (``/tf_static``) are constant; the last one published for a pair wins. A
dynamic edge (``/tf``) is interpolated at the asked stamp between its two nearest samples
(linear translation, slerp rotation, ``cameras.interpolate_rigid``); a stamp outside its
first..last sample has no transform (None), never an extrapolated one. Frame names are
compared without a leading ``/`` (ROS 1 bags write ``/base_link``).
"""
import bisect
from collections import deque

import numpy as np

from igspad_ros.core import cameras


class TfChainError(ValueError):
    """Two frames are not connected by the edges of the tree."""


def frame_name(frame_id):
    """Canonical frame name: without a leading ``/``."""
    return str(frame_id).lstrip('/')


class Trajectory:
    """Timestamped rigid transforms of one moving frame, interpolated between samples."""

    def __init__(self):
        self._samples = {}
        self._stamps = None
        self._transforms = None

    def __len__(self):
        return len(self._samples)

    def add(self, stamp_ns, T):
        """Add the 4x4 transform at ``stamp_ns``; a second one at the same stamp replaces it."""
        self._samples[int(stamp_ns)] = T
        self._stamps = None

    def at(self, stamp_ns):
        """4x4 transform at ``stamp_ns``, or None outside the first..last sample."""
        if self._stamps is None:
            self._stamps = sorted(self._samples)
            self._transforms = [self._samples[s] for s in self._stamps]
        stamp_ns = int(stamp_ns)
        if not self._stamps or not self._stamps[0] <= stamp_ns <= self._stamps[-1]:
            return None
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if self._stamps[i] == stamp_ns:
            return self._transforms[i]
        s0, s1 = self._stamps[i - 1], self._stamps[i]
        return cameras.interpolate_rigid(self._transforms[i - 1], self._transforms[i],
                                         (stamp_ns - s0) / (s1 - s0))


class TfTree:
    """The edges of ``/tf`` and ``/tf_static``; ``lookup`` chains them at a stamp."""

    def __init__(self):
        self._static = {}
        self._dynamic = {}
        self._neighbours = {}
        self._chains = {}

    @property
    def frames(self):
        """Sorted names of every frame that appears in an edge."""
        return sorted(self._neighbours)

    def add(self, parent, child, stamp_ns, T, static):
        """Add one sample of the edge ``parent -> child`` (child's pose in parent)."""
        parent, child = frame_name(parent), frame_name(child)
        if static:
            self._static[(parent, child)] = T
        else:
            self._dynamic.setdefault((parent, child), Trajectory()).add(stamp_ns, T)
        self._neighbours.setdefault(parent, set()).add(child)
        self._neighbours.setdefault(child, set()).add(parent)
        self._chains.clear()

    def chain(self, source, target):
        """Edges from ``source`` to ``target``: [(parent, child, walked parent to child)].

        Raises TfChainError naming both frames when no path joins them.
        """
        source, target = frame_name(source), frame_name(target)
        key = (source, target)
        if key not in self._chains:
            self._chains[key] = self._search(source, target)
        return self._chains[key]

    def lookup(self, source, target, stamp_ns):
        """Pose (4x4) of ``target`` in ``source`` at ``stamp_ns``, or None.

        None when a dynamic edge of the chain has no sample range covering the stamp.
        Raises TfChainError when the frames are not connected.
        """
        T = np.eye(4)
        for parent, child, forward in self.chain(source, target):
            edge = self._static.get((parent, child))
            if edge is None:
                edge = self._dynamic[(parent, child)].at(stamp_ns)
                if edge is None:
                    return None
            step = edge if forward else cameras.rigid_inverse(edge)
            T = T @ step
        return T

    def _search(self, source, target):
        """Breadth-first path of edges from source to target (neighbours in name order)."""
        for frame in (source, target):
            if frame not in self._neighbours:
                raise TfChainError(f'no TF chain from {source!r} to {target!r}: frame '
                                   f'{frame!r} is in neither /tf nor /tf_static')
        previous = {source: None}
        queue = deque([source])
        while queue and target not in previous:
            frame = queue.popleft()
            for other in sorted(self._neighbours[frame]):
                if other not in previous:
                    previous[other] = frame
                    queue.append(other)
        if target not in previous:
            raise TfChainError(f'no TF chain from {source!r} to {target!r}: the two frames '
                               f'are in separate trees of /tf and /tf_static')
        path = []
        frame = target
        while previous[frame] is not None:
            before = previous[frame]
            forward = (before, frame) in self._static or (before, frame) in self._dynamic
            path.append((before, frame, True) if forward else (frame, before, False))
            frame = before
        return path[::-1]
