"""Flow control between the subscription callback and the inference worker.

``latest`` keeps one pending frame: a frame that arrives while the worker is busy replaces
the pending one, which counts as dropped, so the worker always takes the newest image (live
cameras). ``all`` keeps every frame in arrival order up to ``maxsize`` pending ones; only a
frame arriving at a full queue is dropped (replaying a bag for evaluation). ``clear``
(the node deactivated) drops the pending frames. Either way ``received == taken + dropped
+ pending`` at every instant until ``close``.
"""
import collections
import threading

QUEUE_MODES = ('latest', 'all')


class FrameQueue:
    """Thread-safe frame buffer with the ``latest`` / ``all`` policies, counting drops."""

    def __init__(self, mode='latest', maxsize=10):
        """Create an empty queue; ``maxsize`` bounds the pending frames in ``all`` mode."""
        if mode not in QUEUE_MODES:
            raise ValueError(f'queue_mode must be one of {QUEUE_MODES}, got {mode!r}')
        if maxsize < 1:
            raise ValueError(f'queue_size must be at least 1, got {maxsize}')
        self.mode = mode
        self.maxsize = 1 if mode == 'latest' else int(maxsize)
        self._items = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.received = 0
        self.dropped = 0
        self.taken = 0

    def put(self, item):
        """Add a frame; return True if it was kept, False if it was dropped on arrival."""
        with self._cond:
            if self._closed:
                return False
            self.received += 1
            if len(self._items) >= self.maxsize:
                self.dropped += 1
                if self.mode == 'all':
                    return False
                self._items.popleft()   # latest: the stale pending frame gives way
            self._items.append(item)
            self._cond.notify()
            return True

    def get(self, timeout=None):
        """Take the oldest pending frame; None after ``timeout`` seconds or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            if self._closed or not self._items:
                return None
            self.taken += 1
            return self._items.popleft()

    def clear(self):
        """Drop every pending frame (counted as dropped); return how many there were."""
        with self._cond:
            n = len(self._items)
            self.dropped += n
            self._items.clear()
            return n

    def close(self):
        """Wake every waiting ``get`` and refuse further frames; pending ones are discarded."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def depth(self):
        """Number of frames waiting for the worker."""
        with self._cond:
            return len(self._items)
