"""Pair each camera image with the CameraInfo of its own stamp (no rclpy here).

A camera driver publishes an image and its CameraInfo with one stamp, on two topics, so
either may reach the node first. ``CameraInfoPairing`` keeps the last ``cache_size``
CameraInfos by stamp and the images still waiting for theirs (at most ``pending_size``):

- an image whose stamp has a CameraInfo (exactly, or the nearest within ``tolerance_ns``
  for drivers whose two stamps differ) is paired with it;
- an image whose CameraInfo cannot come any more (a CameraInfo newer than the image's
  stamp plus the tolerance has already arrived, or ``pending_size`` newer images are
  waiting) is rejected, reason ``NO_CAMERA_INFO``;
- an image paired with an unusable CameraInfo (K all zero, unknown lens model: stored as
  ``BadCameraInfo``) is rejected, reason ``BAD_CAMERA_INFO``;
- otherwise it waits for its CameraInfo.

CameraInfo is *expected* once any CameraInfo has arrived since the last ``reset`` (the
node resets at activation), or from the start with ``required``. While none is expected
an image passes at once with camera None: the node then uses the scene's intrinsics.

Every call returns the images it settled as ``Paired(item, camera, reason)``: ``reason``
None for an accepted image, else one of the two reasons (``camera`` is then the
BadCameraInfo, or None). Thread-safe.
"""
import collections
import threading
from dataclasses import dataclass

CACHE_SIZE = 32     # CameraInfos kept: one second of a 30 Hz camera
PENDING_SIZE = 8    # images waiting for their CameraInfo
NO_CAMERA_INFO = 'no_camera_info'
BAD_CAMERA_INFO = 'bad_camera_info'


@dataclass(frozen=True)
class BadCameraInfo:
    """A CameraInfo that arrived but cannot be used; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class Paired:
    """One settled image: ``camera`` its CameraInfo's value (None: none expected or found)."""

    item: object
    camera: object
    reason: str | None = None


class CameraInfoPairing:
    """Bounded CameraInfo cache by stamp and the images waiting for theirs."""

    def __init__(self, tolerance_ns=0, required=False, cache_size=CACHE_SIZE,
                 pending_size=PENDING_SIZE):
        """Pair exactly (``tolerance_ns`` 0) or within a tolerance; see the module doc."""
        if cache_size < 1 or pending_size < 1:
            raise ValueError(f'cache_size and pending_size must be at least 1, got '
                             f'{cache_size} and {pending_size}')
        self.tolerance_ns = int(tolerance_ns)
        self.required = bool(required)
        self.cache_size, self.pending_size = int(cache_size), int(pending_size)
        self._lock = threading.Lock()
        self._infos = collections.OrderedDict()     # stamp ns -> camera or BadCameraInfo
        self._pending = collections.deque()         # (stamp ns, item), arrival order
        self._newest = None                         # newest CameraInfo stamp seen

    @property
    def expected(self):
        """Whether images must find their CameraInfo (one arrived, or ``required``)."""
        return self.required or self._newest is not None

    @property
    def pending(self):
        """Number of images waiting for their CameraInfo."""
        with self._lock:
            return len(self._pending)

    def add_info(self, stamp_ns, camera):
        """Keep a CameraInfo's value (or a BadCameraInfo); return the images it settles."""
        with self._lock:
            self._infos.pop(stamp_ns, None)
            self._infos[stamp_ns] = camera
            while len(self._infos) > self.cache_size:
                self._infos.popitem(last=False)
            self._newest = stamp_ns if self._newest is None else max(self._newest, stamp_ns)
            settled, waiting = [], collections.deque()
            for stamp, item in self._pending:
                decision = self._decide(stamp, item)
                if decision is None:
                    waiting.append((stamp, item))
                else:
                    settled.append(decision)
            self._pending = waiting
            return settled

    def add_image(self, stamp_ns, item):
        """Pair an image now, or keep it waiting; return the images settled by its arrival."""
        with self._lock:
            if not self.expected:
                return [Paired(item, None)]
            decision = self._decide(stamp_ns, item)
            if decision is not None:
                return [decision]
            self._pending.append((stamp_ns, item))
            settled = []
            while len(self._pending) > self.pending_size:     # the oldest gives up
                _, oldest = self._pending.popleft()
                settled.append(Paired(oldest, None, NO_CAMERA_INFO))
            return settled

    def reset(self):
        """Forget every CameraInfo and the expectation; return the waiting images' items."""
        with self._lock:
            items = [item for _, item in self._pending]
            self._pending.clear()
            self._infos.clear()
            self._newest = None
            return items

    def _decide(self, stamp_ns, item):
        """Paired for a settled image, None while its CameraInfo may still come."""
        camera = self._infos.get(stamp_ns)
        if camera is None and self.tolerance_ns > 0:
            near = min(self._infos, key=lambda s: abs(s - stamp_ns), default=None)
            if near is not None and abs(near - stamp_ns) <= self.tolerance_ns:
                camera = self._infos[near]
        if isinstance(camera, BadCameraInfo):
            return Paired(item, camera, BAD_CAMERA_INFO)
        if camera is not None:
            return Paired(item, camera)
        if self._newest is not None and self._newest > stamp_ns + self.tolerance_ns:
            return Paired(item, None, NO_CAMERA_INFO)
        return None
