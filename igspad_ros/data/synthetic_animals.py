"""Synthetic LEGO-like animals: a second object family, held out from the brick (issue 14).

In the spirit of MAD's LEGO animals, each seed builds one animal from bricks of several
sizes and colours. Two kinds, chosen by the seed:

- a quadruped: a body four studs wide and one or two bricks high on four legs of 1x1 or
  1x2 bricks; at the front a neck and a head with printed eyes (and often two 1x1 ears),
  at the back a flat tail overhanging the body or a raised one as high as the head;
- a bird: a body two studs wide and two bricks high on two 1x1 legs (often standing on
  plate feet), folded or spread 1-stud-wide wings, a head with eyes, a 1x1 beak, an
  overhanging tail and sometimes a crest.

Thin parts (legs, wings, ears, beak, tail: one stud across; plate feet) and near-symmetric
shapes are the point: every animal is mirror-symmetric across its length except one
off-centre part (the quadruped's tail, the bird's beak), and both ends rise to similar
heights, so views from opposite sides look alike, the back-side starts of the paper's
Fig. 8.

An animal is a list of ``synthetic.Brick`` (integer stud cells, brick layers; layer 0 is a
plate, used for feet), the torso brick first, meshed by ``synthetic.object_mesh`` about the
centre of the whole animal's bounding box, so that a removed part moves nothing. Cameras
(radius 3.5 for training, 3.2-3.8 for tests), test poses and defects are ``synthetic.py``'s
(``make_category(..., family='animal')``): Missing removes a part with nothing on top whose
removal leaves the animal in one piece (``removable_parts``), Burrs grow from a
camera-facing part side, Stains are painted over the object.

Seeds. Develop and tune on seeds 0, 1, 2 (bird, quadruped, bird); report on seeds 100,
101, 102 (bird, quadruped, bird), which nothing is tuned on.
"""
import numpy as np

from igspad_ros.data.synthetic import BRICK_H, PALETTE, PITCH, PLATE_H, STUD_H, Brick, object_mesh

KINDS = ('quadruped', 'bird')
DEVELOPMENT_SEEDS = (0, 1, 2)
REPORTING_SEEDS = (100, 101, 102)
_YELLOW, _ORANGE = 2, 4   # PALETTE indices of beaks and bird legs


def build_animal(seed=0):
    """Return the bricks of the seeded animal, torso first; the same seed, the same animal."""
    rng = np.random.default_rng([seed, 3])
    kind = KINDS[rng.integers(len(KINDS))]
    body, accent = (int(i) for i in rng.choice(len(PALETTE), 2, replace=False))
    build = _quadruped if kind == 'quadruped' else _bird
    return build(rng, body, accent)


def animal_kind(seed):
    """Return which of KINDS the animal of ``seed`` is."""
    return KINDS[np.random.default_rng([seed, 3]).integers(len(KINDS))]


def animal_mesh(bricks, centre=None):
    """Mesh of the animal's ``bricks`` moved so that ``centre`` is at the origin.

    ``centre`` None: the centre of the bricks' bounding box, that of the whole animal
    (a defect keeps the whole animal's centre, so that it moves nothing).
    """
    return object_mesh(bricks, centre=bounding_centre(bricks) if centre is None else centre)


def bounding_centre(bricks):
    """Centre (3,) of the bricks' bounding box in world units, studs included."""
    x0, x1 = min(b.x for b in bricks), max(b.x + b.w for b in bricks)
    y0, y1 = min(b.y for b in bricks), max(b.y + b.d for b in bricks)
    z0 = 0.0 if any(b.layer == 0 for b in bricks) else PLATE_H
    z1 = PLATE_H + max(b.layer for b in bricks) * BRICK_H + STUD_H
    return np.array([(x0 + x1) * PITCH / 2, (y0 + y1) * PITCH / 2, (z0 + z1) / 2])


def removable_parts(bricks):
    """Return the indices of the bricks Missing may remove, never the torso (``bricks[0]``).

    A brick is removable when no brick rests on it and the others still form one piece
    (touching faces), so nothing is left floating.
    """
    free = []
    for k in range(1, len(bricks)):
        if any(_rests_on(other, bricks[k]) for other in bricks):
            continue
        if _connected(bricks[:k] + bricks[k + 1:]):
            free.append(k)
    return free


def without_part(bricks, rng):
    """Mesh of the animal with one removable part taken away (the Missing defect)."""
    free = removable_parts(bricks)
    gone = free[rng.integers(len(free))]
    return animal_mesh(bricks[:gone] + bricks[gone + 1:], centre=bounding_centre(bricks))


def _quadruped(rng, body, accent):
    """Body on four legs, neck and head with eyes at the front (+x), a tail at the back.

    ``body`` and ``accent`` are PALETTE indices.
    """
    body, accent = PALETTE[body], PALETTE[accent]
    length = int(rng.integers(4, 6))
    leg_h, body_h = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    neck_h = int(rng.integers(0, 2)) if leg_h + body_h < 4 else 0
    leg_w = int(rng.integers(1, 3))     # 1x1 or 1x2 leg bricks
    legs = body if rng.random() < 0.5 else accent
    head = body if rng.random() < 0.5 else accent
    bricks = []
    base = leg_h + 1
    for layer in range(base, base + body_h):
        cuts = _split(length, rng)
        for y in (0, 2):    # two rows cut alike: mirror-symmetric
            bricks += [Brick(x0, y, x1 - x0, 2, layer, body) for x0, x1 in cuts]
    for layer in range(1, base):
        bricks += [Brick(x, y, leg_w, 1, layer, legs)
                   for x in (0, length - leg_w) for y in (0, 3)]
    top = base + body_h - 1
    bricks += [Brick(length - 2, 1, 2, 2, layer, body)
               for layer in range(top + 1, top + 1 + neck_h)]
    head_layer = top + 1 + neck_h
    snout = int(rng.integers(0, 2))     # the head overhangs the body by 0 or 1 stud
    bricks.append(Brick(length - 2, 1, 2 + snout, 2, head_layer, head, decal=True))
    if head_layer < 5 and rng.random() < 0.7:     # ears, on a head low enough to frame
        bricks += [Brick(length - 2, y, 1, 1, head_layer + 1, accent) for y in (1, 2)]
    tail_y = int(rng.integers(1, 3))    # half a stud off the mirror plane
    if rng.random() < 0.5:
        # at most 7 studs from snout to tail, so the animal stays in the frame
        tail = min(int(rng.integers(2, 4)), 7 - length - snout + 1)
        bricks.append(Brick(1 - tail, tail_y, tail, 1, top + 1, accent))
    else:
        bricks += [Brick(0, tail_y, 1, 1, layer, accent)
                   for layer in range(top + 1, head_layer + 1)]
    return bricks


def _bird(rng, body, accent):
    """Two-brick-high body on two legs, wings, head with eyes and beak at the front (+x).

    ``body`` and ``accent`` are PALETTE indices; beak and legs are yellow or orange, not
    the body's colour.
    """
    length = int(rng.integers(3, 5))
    leg_h = int(rng.integers(1, 3))
    beaks = [i for i in (_YELLOW, _ORANGE) if i != body]
    beak = PALETTE[beaks[rng.integers(len(beaks))]]
    body, accent = PALETTE[body], PALETTE[accent]
    bricks = []
    base = leg_h + 1
    for layer in range(base, base + 2):
        bricks += [Brick(x0, 0, x1 - x0, 2, layer, body) for x0, x1 in _split(length, rng)]
    leg_x = (length - 1) // 2
    bricks += [Brick(leg_x, y, 1, 1, layer, beak) for layer in range(1, base) for y in (0, 1)]
    if rng.random() < 0.6:
        bricks += [Brick(leg_x, y, 2, 1, 0, beak) for y in (0, 1)]   # plate feet
    top = base + 1
    if rng.random() < 0.5:      # folded along the sides, reaching past the back
        wing = int(rng.integers(2, length + 1))
        bricks += [Brick(length - 1 - wing, y, wing, 1, top, accent) for y in (-1, 2)]
    else:                       # spread sideways
        span = int(rng.integers(1, 3))
        bricks += [Brick(leg_x, y, 1, span, top, accent) for y in (-span, 2)]
    bricks.append(Brick(length - 2, 0, 2, 2, top + 1, body if rng.random() < 0.5 else accent,
                        decal=True))
    bricks.append(Brick(length, int(rng.integers(0, 2)), 1, 1, top + 1, beak))
    overhang = int(rng.integers(1, 3))     # the tail rests on the body's last stud
    bricks.append(Brick(-overhang, 0, overhang + 1, 2, top + 1, accent))
    if rng.random() < 0.5:
        bricks.append(Brick(length - 2, 0, 1, 2, top + 2, accent))    # crest
    return bricks


def _split(length, rng):
    """Cut a row of ``length`` (>= 2) studs into bricks 2 to 4 studs long: [(x0, x1)]."""
    cuts, x = [], 0
    while x < length:
        rest = length - x
        sizes = [n for n in (2, 3, 4) if n == rest or rest - n >= 2]
        n = sizes[rng.integers(len(sizes))]
        cuts.append((x, x + n))
        x += n
    return cuts


def _overlap(a0, a1, b0, b1):
    return min(a1, b1) - max(a0, b0)


def _rests_on(upper, lower):
    """Tell whether ``upper`` stands on ``lower``: the next layer, footprints overlapping."""
    return (upper.layer == lower.layer + 1
            and _overlap(upper.x, upper.x + upper.w, lower.x, lower.x + lower.w) > 0
            and _overlap(upper.y, upper.y + upper.d, lower.y, lower.y + lower.d) > 0)


def _touch(a, b):
    """Tell whether bricks ``a`` and ``b`` share part of a face."""
    if _rests_on(a, b) or _rests_on(b, a):
        return True
    ox = _overlap(a.x, a.x + a.w, b.x, b.x + b.w)
    oy = _overlap(a.y, a.y + a.d, b.y, b.y + b.d)
    return a.layer == b.layer and ((ox == 0 and oy > 0) or (oy == 0 and ox > 0))


def _connected(bricks):
    """Tell whether the bricks form one piece through touching faces."""
    reached, todo = {0}, [0]
    while todo:
        k = todo.pop()
        for j, other in enumerate(bricks):
            if j not in reached and _touch(bricks[k], other):
                reached.add(j)
                todo.append(j)
    return len(reached) == len(bricks)
